"""Schemathesis hooks for tests/web/api/test_schema_fuzz.py, loaded by the `st` process it
starts (SCHEMATHESIS_HOOKS names this module; GPUPOOL_FUZZ, JSON it sets, says who the run
is and which names the pool has).

- A node's run reports for its own node: the body's `node` is the node the token belongs
  to, or every report would stop at the node-name check (403) and nothing behind it would
  be tried.
- Names in paths and bodies are the pool's own now and then (a project, a user, a node, a
  flavor the seed made), so the fuzzer gets past "no such project" into the routes' work;
  and for the routes that store things, half the bodies are ones the API takes (ACCEPTED)
  with one hostile value in them, which reach the storing.
- A run never takes its own access away (revoking its own token, deactivating or demoting
  itself, changing its own password): the rest of the run would only see 401s.
- Hostile values where the schema allows anything of a kind: half the bodies get one value
  (at any depth, or the whole body) swapped for what Schemathesis' own generation never
  sends: a lone UTF-16 surrogate (its strings are UTF-8 text), a NUL, integers past 64
  bits or of 400 digits, 1e308, nesting 600 deep, a key that is a surrogate.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import schemathesis
from hypothesis import strategies as st

RUN: dict[str, Any] = json.loads(os.environ.get("GPUPOOL_FUZZ", "{}"))
NODE: str = RUN.get("node", "")  # a node's run: the node its token belongs to
USER: str = RUN.get("user", "")  # a person's run: who it is, and its token's id
OWN_TOKEN_ID: int = RUN.get("token_id", 0)
KNOWN_NAMES: dict[str, list[str]] = RUN.get("names", {})  # path parameter -> names the pool has
KNOWN_FIELDS: dict[str, list[str]] = RUN.get("fields", {})  # body field -> names the pool has


DEEP: Any = "bottom"
for _ in range(600):
    DEEP = [DEEP]
HOSTILE = st.sampled_from(
    [
        "\ud800",
        "a\udfffb",
        "\x00",
        2**70,
        -(2**70),
        10**400,
        2**63,
        2**31,
        1e308,
        -1e308,
        DEEP,
        {"\udc00": "\ud800"},
    ]
)


def _spots(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path to every value in a JSON document, the document's own included."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _spots(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _spots(item, (*path, index))
    return found


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


# Bodies the API takes (for the run's caller, with the seed's names): a hostile value
# swapped into one of these passes every check before it and reaches the storing, where
# the issue's 500s were; Schemathesis' own bodies mostly stop at the first check.
SEQ_NOW, AT_NOW = -1, -1.0  # in a report: the next seq of the run, the time now
ACCEPTED: dict[tuple[str, str], list[Any]] = {
    ("POST", "/api/v1/jobs"): [
        {"project": "p1", "entrypoint": "python train.py", "gpus": 1},
        {
            "project": "p1",
            "entrypoint": "python train.py --epochs 3",
            "gpus": 2,
            "flavor": "A100",
            "time": "1h",
            "name": "train",
            "runtime_env": {"env_vars": {"A": "1"}, "pip": ["numpy"]},
            "count": 2,
        },
    ],
    ("POST", "/api/v1/projects"): [
        {"name": "fz", "title": "A title", "sector": "academia", "justification": "Why."}
    ],
    ("PATCH", "/api/v1/projects/{name}"): [{"title": "A new title"}],
    ("POST", "/api/v1/projects/{name}/members"): [{"user": "dave", "role": "member"}],
    ("POST", "/api/v1/projects/{name}/{action}"): [{"note": "ok"}],
    ("PUT", "/api/v1/projects/{name}/quotas/{flavor}"): [{"guaranteed": 1, "limit": 2}],
    ("POST", "/api/v1/projects/{name}/credits"): [{"amount": 10, "note": "grant"}],
    ("POST", "/api/v1/users"): [
        {"name": "fz-user", "full_name": "F Z", "email": "f@z.example", "role": "researcher"}
    ],
    ("PATCH", "/api/v1/users/{name}"): [{"full_name": "A Name", "email": "a@b.example"}],
    ("POST", "/api/v1/users/{name}/tokens"): [{"label": "fuzz", "expires_in_days": 30}],
    ("POST", "/api/v1/nodes"): [{"name": "fz-node", "flavor": "H100", "gpus": 8, "group": "g"}],
    ("POST", "/api/v1/nodes/{name}/drain"): [{"reason": "maintenance"}],
    ("POST", "/api/v1/nodes/{name}/tokens"): [{"label": "agent"}],
    ("PUT", "/api/v1/sectors/{name}"): [{"weight": 1.5}],
    ("POST", "/api/v1/agents/reports"): [
        {
            "node": "",  # map_body: the run's node
            "reports": [
                {
                    "boot": "0123456789abcdef",
                    "seq": SEQ_NOW,
                    "at": AT_NOW,
                    "driver_version": "550.54",
                    "gpus": [
                        {
                            "index": 0,
                            "uuid": "GPU-0",
                            "name": "H100",
                            "util_gpu_pct": 50.0,
                            "mem_used_bytes": 2**30,
                            "mem_total_bytes": 2**36,
                            "power_w": 300.0,
                            "energy_mj": 10**9,
                            "temp_c": 60.0,
                            "processes": [{"pid": 4242, "used_memory_bytes": 2**30}],
                            "errors": {"ecc_corrected": "not supported"},
                        }
                    ],
                }
            ],
        }
    ],
}
_seq = itertools.count(1)


def _with_hostile_value(body: Any) -> st.SearchStrategy[Any]:
    if not isinstance(body, (dict, list)):
        return st.just(body)
    return st.one_of(st.just(body), _one_hostile_value(body))


@schemathesis.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """The body as generated, or with its names (project, flavor, user...) the pool's own,
    so that it reaches the routes' work (a job is stored only in a project of the
    caller's); then, half the time, one hostile value somewhere in it."""
    known = {}
    if isinstance(body, dict):
        known = {key: KNOWN_FIELDS[key] for key in body if key in KNOWN_FIELDS}
    named = st.just(body)
    if known:
        pool_names = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in known.items()})
        named = st.one_of(named, pool_names.map(lambda names: body | names))
    # Schemathesis applies map_body before this hook: the node's name goes in here too.
    generated = named.map(lambda chosen: _as_run(context, chosen)).flatmap(_with_hostile_value)
    operation = context.operation
    accepted = ACCEPTED.get((operation.method.upper(), operation.path), []) if operation else []
    if not accepted:
        return generated
    # As often as not, an accepted body with one hostile value: deep where the bugs were.
    base = st.sampled_from(accepted).map(lambda chosen: _as_run(context, chosen))
    return st.one_of(generated, base.flatmap(_one_hostile_value))


def _one_hostile_value(body: Any) -> st.SearchStrategy[Any]:
    swap = st.tuples(st.sampled_from(_spots(body)), HOSTILE)
    return swap.map(lambda spot: _replaced(body, *spot))


@schemathesis.hook
def map_body(context: schemathesis.HookContext, body: Any) -> Any:
    return _as_run(context, body)


def _as_run(context: schemathesis.HookContext, body: Any) -> Any:
    """A node's report names the run's node, and its placeholders are filled in."""
    operation = context.operation
    reports = operation is not None and operation.path.endswith("/agents/reports")
    if NODE and reports and isinstance(body, dict) and isinstance(body.get("node"), str):
        body = body | {"node": NODE}  # copies: ACCEPTED's bodies stay as they are
        if isinstance(body.get("reports"), list):
            body["reports"] = [_stamped(report) for report in body["reports"]]
    return body


def _stamped(report: Any) -> Any:
    if not isinstance(report, dict):
        return report
    report = dict(report)
    if report.get("seq") == SEQ_NOW:
        report["seq"] = next(_seq)
    if report.get("at") == AT_NOW:
        report["at"] = time.time()
    return report


@schemathesis.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """Each name in the path: as generated, or (as often) one the pool has."""
    if not isinstance(path_parameters, dict):  # an operation without any
        return st.just(path_parameters)
    choices: list[st.SearchStrategy[dict[str, Any]]] = [st.just(path_parameters)]
    known = {key: KNOWN_NAMES[key] for key in path_parameters if key in KNOWN_NAMES}
    if known:
        choices.append(
            st.fixed_dictionaries(
                {key: st.sampled_from(names) for key, names in known.items()}
            ).map(lambda names: path_parameters | names)
        )
    return st.one_of(choices)


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    path, method = case.operation.path, case.operation.method.upper()
    params = case.path_parameters or {}
    if method == "DELETE" and path.endswith("/tokens/{token_id}"):
        return str(params.get("token_id")) != str(OWN_TOKEN_ID)  # some phases send text
    if USER and params.get("name") == USER:
        if method == "PUT" and path.endswith("/password"):
            return False
        if method == "PATCH" and path.endswith("/users/{name}"):
            body = case.body if isinstance(case.body, dict) else {}
            return "active" not in body and "role" not in body
    return True
