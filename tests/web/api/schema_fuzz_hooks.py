"""Schemathesis hooks for tests/web/api/test_schema_fuzz.py, loaded by the `st` process it
starts (SCHEMATHESIS_HOOKS names this module; GPUPOOL_FUZZ, JSON it sets, says who the run
is and which names the pool has).

- A node's run reports for its own node: the body's `node` is the node the token belongs
  to, or every report would stop at the node-name check (403) and nothing behind it would
  be tried.
- Names in paths are the pool's own now and then (a project, a user, a node, a flavor
  the seed made), so the fuzzer gets past "no such project" into the routes' work.
- A run never takes its own access away (revoking its own token, deactivating or demoting
  itself, changing its own password): the rest of the run would only see 401s.
- Hostile values where the schema allows anything of a kind: half the bodies get one value
  (at any depth, or the whole body) swapped for what Schemathesis' own generation never
  sends: a lone UTF-16 surrogate (its strings are UTF-8 text), a NUL, integers past 64
  bits or of 400 digits, 1e308, nesting 600 deep, a key that is a surrogate.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

RUN: dict[str, Any] = json.loads(os.environ.get("GPUPOOL_FUZZ", "{}"))
NODE: str = RUN.get("node", "")  # a node's run: the node its token belongs to
USER: str = RUN.get("user", "")  # a person's run: who it is, and its token's id
OWN_TOKEN_ID: int = RUN.get("token_id", 0)
KNOWN_NAMES: dict[str, list[str]] = RUN.get("names", {})  # path parameter -> names the pool has


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


@schemathesis.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    if not isinstance(body, (dict, list)):
        return st.just(body)
    swap = st.tuples(st.sampled_from(_spots(body)), HOSTILE)
    return st.one_of(st.just(body), swap.map(lambda spot: _replaced(body, *spot)))


@schemathesis.hook
def map_body(context: schemathesis.HookContext, body: Any) -> Any:
    operation = context.operation
    reports = operation is not None and operation.path.endswith("/agents/reports")
    if NODE and reports and isinstance(body, dict) and isinstance(body.get("node"), str):
        body["node"] = NODE
    return body


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
