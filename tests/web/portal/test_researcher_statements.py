"""Statements in the portal (SQLite and PostgreSQL): choosing a project and a period (a bad
one refused on the form, in the page's language), downloading the signed statement as
HTML, CSV or JSON, and verifying one by upload or paste, signed in or not, with every
problem of a tampered one named."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest

from tests.web.portal.conftest import Portal, PortalClient, text_of
from web.db import write_session
from web.services import ledger, signing
from web.services.slots import Slots
from web.services.statements import MAX_DEPTH, to_json

MARCH = datetime(2026, 3, 10, tzinfo=UTC).timestamp()


@pytest.fixture
def charged(portal: Portal) -> Portal:
    """p1 in March 2026: a grant of 500 and a charge of 4 credits (2 H100 GPU-hours)."""
    with write_session(portal.api.engine) as session:
        ledger.append(
            session,
            [
                {"at": MARCH - 86400, "kind": "grant", "project": "p1", "amount": 500.0,
                 "actor": "admin"},
                {"at": MARCH, "kind": "charge", "project": "p1", "amount": -4.0,
                 "period": "2026-03", "job_id": 1, "attempt": 1, "user": "alice",
                 "flavor": "H100", "gpu_s": 7200.0, "energy_j": 7200.0 * 300,
                 "util_gpu_s": 7200.0, "busy_gpu_s": 3600.0, "idle_gpu_s": 0.0,
                 "outcome": "succeeded", "actor": "scheduler"},
            ],
        )  # fmt: skip
    return portal


def download(client: PortalClient, fmt: str, period: str = "2026-03") -> Any:
    answer = client.get(f"/projects/p1/statements/{period}.{fmt}")
    assert answer.status_code == 200, answer.text
    return answer


@pytest.mark.parametrize(
    ("fmt", "media_type", "says"),
    [
        ("json", "application/json", '"kind":"gpupool usage statement"'),
        ("csv", "text/csv; charset=utf-8", "gpu_hours"),
        ("html", "text/html; charset=utf-8", "<html"),
    ],
)
def test_a_statement_downloads_in_each_format(
    charged: Portal, fmt: str, media_type: str, says: str
) -> None:
    answer = download(charged.as_user("alice"), fmt)
    assert answer.headers["content-type"] == media_type
    assert (
        answer.headers["content-disposition"]
        == f'attachment; filename="statement-p1-2026-03.{fmt}"'
    )
    assert says in answer.text
    key_id = signing.key_id(
        signing.pool_key(charged.api.pool.settings.statement_key_path).public_key()
    )
    assert key_id in answer.text  # every form carries the signature's key


def test_the_downloaded_json_is_the_apis_statement(charged: Portal) -> None:
    portal_json = download(charged.as_user("alice"), "json").json()
    api_json = charged.api.get("alice", "/projects/p1/statements/2026-03").json()
    for figures in (portal_json, api_json):
        figures.pop("made_at"), figures.pop("signature")
    assert portal_json == api_json
    assert portal_json["credits"]["used"] == 4.0
    assert portal_json["totals"]["gpu_hours"] == 2.0


@pytest.mark.parametrize(
    ("query", "location"),
    [
        ("project=p1&period=2026-03&format=json", "/projects/p1/statements/2026-03.json"),
        ("project=p1&period=2026-Q1&format=csv", "/projects/p1/statements/2026-Q1.csv"),
        ("project=p1&period=+2026+&format=html", "/projects/p1/statements/2026.html"),
    ],
)
def test_the_statements_form_sends_on_to_the_download(
    portal: Portal, query: str, location: str
) -> None:
    answer = portal.as_user("alice").get(f"/statements?{query}")
    assert answer.status_code == 303
    assert answer.headers["location"] == location


def test_the_statements_page_offers_my_projects_and_this_month(portal: Portal) -> None:
    page = portal.as_user("alice").get("/statements")
    assert '<option value="p1"' in page.text and 'value="p2"' not in page.text
    assert 'value="2023-11"' in page.text  # the test clock's month


BAD_CHOICES = [
    # (query, field, English, Korean)
    (
        "project=p1&period=2026-13&format=json",
        "period",
        "Not accepted: '2026-13' is not a period",
        "받아들일 수 없습니다: '2026-13' is not a period",
    ),
    (
        "project=p1&period=March&format=json",
        "period",
        "Not accepted: 'March' is not a period",
        "받아들일 수 없습니다: 'March'",
    ),
    ("project=p1&period=&format=json", "period", "Required.", "필수 항목입니다."),
    (
        "project=p2&period=2026-03&format=json",
        "project",
        "No such project of yours.",
        "그런 프로젝트가 없거나 내 프로젝트가 아닙니다.",
    ),
    (
        "project=p1&period=2026-03&format=pdf",
        "format",
        "Must be one of: html, csv, json.",
        "html, csv, json",
    ),
]


@pytest.mark.parametrize(("query", "field", "english", "korean"), BAD_CHOICES)
def test_a_bad_choice_is_an_error_on_its_field_in_the_pages_language(
    portal: Portal, query: str, field: str, english: str, korean: str
) -> None:
    for language, says in (("en", english), ("ko", korean)):
        page = portal.as_user("alice", **{"Accept-Language": language}).get(f"/statements?{query}")
        assert page.status_code == 400
        assert page.headers["content-type"].startswith("text/html")
        error = page.text.split(f'id="e-{field}" class="error">')[1].split("</small>")[0]
        assert says in error.replace("&#39;", "'"), (language, error)
    period = dict(p.split("=") for p in query.split("&"))["period"]
    assert f'name="period" type="text" value="{period}"' in page.text  # kept as typed


@pytest.mark.parametrize(
    "path",
    [
        "/projects/p2/statements/2026-03.json",  # not alice's
        "/projects/nope/statements/2026-03.csv",
        "/projects/p1/statements/2026-03.pdf",
    ],
)
def test_a_statement_not_mine_or_not_a_format_is_not_found(portal: Portal, path: str) -> None:
    answer = portal.as_user("alice").get(path)
    assert answer.status_code == 404
    assert "Not found" in text_of(answer)


def test_a_bad_period_in_the_download_path_is_a_page_not_json(portal: Portal) -> None:
    answer = portal.as_user("alice").get("/projects/p1/statements/2026-13.json")
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")
    assert "is not a period" in text_of(answer)


@pytest.mark.parametrize(
    "period", ["2026-03\n", "\uff12\uff10\uff12\uff16-03", "\u0662\u0660\u0662\u0666"]
)
def test_a_period_with_a_newline_or_non_ascii_digits_is_refused(
    portal: Portal, period: str
) -> None:
    alice = portal.as_user("alice")
    answer = alice.get(f"/projects/p1/statements/{quote(period, safe='')}.json")
    assert answer.status_code == 400, answer.text  # was a 500, or a download
    assert answer.headers["content-type"].startswith("text/html")
    assert "is not a period" in text_of(answer) and "ASCII digits" in text_of(answer)
    if not period.endswith("\n"):  # the form takes what is typed without its ends
        page = alice.get("/statements", params={"project": "p1", "period": period})
        assert page.status_code == 400
        error = page.text.split('id="e-period" class="error">')[1].split("</small>")[0]
        assert "is not a period" in error


# --- verifying -----------------------------------------------------------------------------


def verify_file(client: PortalClient, content: bytes, name: str = "statement.json") -> Any:
    client.get("/verify")
    return client.client.post(
        "/verify",
        data={"csrf_token": client.csrf},
        files={"statement_file": (name, content, "application/json")},
    )


@pytest.mark.parametrize("who", ["anyone", "alice"])
def test_a_downloaded_statement_verifies_valid(charged: Portal, who: str) -> None:
    statement = download(charged.as_user("alice"), "json").content
    client = charged.anonymous() if who == "anyone" else charged.as_user("alice")
    answer = verify_file(client, statement)
    assert answer.status_code == 200, text_of(answer)
    text = text_of(answer)
    assert "Valid" in text and "Not valid" not in text
    assert "The statement of p1 for 2026-03 is signed by this pool" in text


def test_a_verification_past_the_servers_count_is_a_503_page_to_retry(portal: Portal) -> None:
    portal.api.pool.verifications = Slots(1, wait_s=0.05, what="statement verifications")
    client = portal.anonymous()
    with portal.api.pool.verifications.held():
        busy = verify_file(client, b"{}")
    assert busy.status_code == 503, text_of(busy)
    assert busy.headers["Retry-After"] == "1"
    assert "Not available now" in text_of(busy)
    assert verify_file(client, b"{}").status_code == 200


def test_a_pasted_statement_verifies_in_korean(charged: Portal) -> None:
    statement = download(charged.as_user("alice"), "json").text
    client = charged.anonymous(**{"Accept-Language": "ko"})
    client.get("/verify")
    answer = client.post_form("/verify", {"statement_text": statement})
    assert answer.status_code == 200
    assert "유효함" in text_of(answer)


def tampered(statement: dict[str, Any], how: str) -> dict[str, Any]:
    changed: dict[str, Any] = json.loads(json.dumps(statement))
    if how == "a figure":
        changed["credits"]["used"] = 1.0
    elif how == "an entry":
        row = changed["entries"]["rows"][1]
        row[changed["entries"]["fields"].index("amount")] = -0.5
    elif how == "the signature":
        changed["signature"] = "A" * len(changed["signature"])
    return changed


@pytest.mark.parametrize(
    ("how", "named"),
    [("a figure", "credits.used"), ("an entry", "hash"), ("the signature", "signature")],
)
def test_a_tampered_statement_shows_its_problems(charged: Portal, how: str, named: str) -> None:
    statement = download(charged.as_user("alice"), "json").json()
    answer = verify_file(charged.anonymous(), to_json(tampered(statement, how)))  # canonical
    assert answer.status_code == 200
    text = text_of(answer)
    assert "Not valid" in text
    problems = answer.text.split('<ul id="verify-problems">')[1].split("</ul>")[0]
    assert problems.count("<li>") >= 1
    assert named in problems, problems


BAD_UPLOADS = [
    # (file content, pasted text, field, English, Korean)
    (b"", "", "statement_file", "Choose a statement file, or paste one below.", "명세서 파일을"),
    (b"{not json", "", "statement_file", "Not valid JSON: Expecting property name", "올바른"),
    (b"\xff\xfe", "", "statement_file", "Not text in UTF-8", "UTF-8 텍스트가 아닙니다."),
    (None, '{"kind": ', "statement_text", "Not valid JSON: Expecting value", "올바른 JSON"),
]


@pytest.mark.parametrize(("content", "pasted", "field", "english", "korean"), BAD_UPLOADS)
def test_a_bad_upload_is_a_field_error(
    portal: Portal, content: bytes | None, pasted: str, field: str, english: str, korean: str
) -> None:
    for language, says in (("en", english), ("ko", korean)):
        client = portal.anonymous(**{"Accept-Language": language})
        client.get("/verify")
        files = {} if content is None else {"statement_file": ("s.json", content, "text/plain")}
        if content == b"":  # no file chosen: browsers send an empty part without a name
            files = {"statement_file": ("", b"", "application/octet-stream")}
        answer = client.client.post(
            "/verify", data={"csrf_token": client.csrf, "statement_text": pasted}, files=files
        )
        assert answer.status_code == 400, answer.text
        error = answer.text.split(f'id="e-{field}" class="error">')[1].split("</small>")[0]
        assert says in error, (language, error)
        if pasted:
            assert pasted.replace('"', "&#34;") in answer.text  # kept as pasted


def test_an_empty_file_is_named(portal: Portal) -> None:
    answer = verify_file(portal.anonymous(), b"", name="empty.json")
    assert answer.status_code == 400
    assert "The file is empty." in text_of(answer)


def test_a_statement_over_the_limit_is_refused_before_it_is_read(portal: Portal) -> None:
    limit = portal.api.pool.settings.max_statement_bytes
    assert limit > portal.api.pool.settings.max_request_bytes  # /verify takes what the API does
    client = portal.anonymous()
    client.get("/verify")
    answer = client.client.post(
        "/verify",
        data={"csrf_token": client.csrf},
        files={"statement_file": ("big.json", b"x", "application/json")},
        headers={"Content-Length": str(limit + 1)},
    )
    assert answer.status_code == 413


def _with(document: bytes, old: bytes, new: bytes) -> bytes:
    assert old in document
    return document.replace(old, new, 1)


FORGED = [
    # (how the downloaded statement is changed, the rule the page names)
    ("a forged credits first", lambda s: b'{"credits":{"granted":999999.0},' + s[1:],
     "duplicate key &#39;credits&#39; at $"),
    ("pretty-printed",
     lambda s: json.dumps(json.loads(s), indent=2, sort_keys=True).encode(),
     "not in canonical form: whitespace"),
    ("a byte order mark", lambda s: b"\xef\xbb\xbf" + s, "byte order mark"),
    ("a trailing newline", lambda s: s + b"\n", "trailing data after the statement"),
    ("NaN", lambda s: _with(s, b'"version":1', b'"version":NaN'), "NaN is not a JSON number"),
    ("400 digits", lambda s: _with(s, b'"version":1', b'"version":' + b"9" * 400),
     "number out of range"),
    ("1e400", lambda s: _with(s, b'"version":1', b'"version":1e400'), "number out of range"),
    ("a lone surrogate", lambda s: _with(s, b'"kind":"g', b'"kind":"\\ud800g'),
     "lone surrogate"),
    ("nested 1,200 deep", lambda s: _with(s, b'"version":1', b'"version":' + b"[" * 1200
                                          + b"]" * 1200), f"nested deeper than {MAX_DEPTH}"),
    ("nested 100,000 deep, unclosed", lambda s: b'{"a":' * 100_000,
     f"nested deeper than {MAX_DEPTH}"),
    ("a list", lambda s: b"[" + s + b"]", "a JSON object is expected"),
]  # fmt: skip


@pytest.mark.parametrize(("how", "forge", "named"), FORGED, ids=[h for h, _, _ in FORGED])
def test_a_forged_or_hostile_statement_is_a_page_naming_the_rule(
    charged: Portal, how: str, forge: Any, named: str
) -> None:
    statement = download(charged.as_user("alice"), "json").content
    answer = verify_file(charged.anonymous(), forge(statement))
    assert answer.status_code == 200, text_of(answer)
    assert "Not valid" in text_of(answer)
    problems = answer.text.split('<ul id="verify-problems">')[1].split("</ul>")[0]
    assert named in problems, problems


def test_a_pasted_statement_with_a_forged_key_is_not_valid(charged: Portal) -> None:
    statement = download(charged.as_user("alice"), "json").text
    client = charged.anonymous()
    client.get("/verify")
    answer = client.post_form("/verify", {"statement_text": '{"project":"p2",' + statement[1:]})
    assert answer.status_code == 200
    assert "Not valid" in text_of(answer) and "duplicate key" in answer.text
