"""Every form of the portal, found on its pages as a browser finds them, sent with one field
hostile (Hypothesis): bytes that are no UTF-8 (a lone surrogate's encoding among them),
control characters, 200,000-character values, JSON nested thousands deep, huge and special
numbers. The answer is never a 5xx; a refusal stores nothing; and the pages still render
afterwards. Filter forms (GET) are attacked through their query strings the same way."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.web.api.test_hostile_bodies import stored
from tests.web.hostile import SPECIAL_NUMBERS, hostile_text, huge_text
from tests.web.portal.conftest import Portal, PortalClient

FORM = re.compile(r"<form([^>]*)>(.*?)</form>", re.S)
ATTRIBUTE = re.compile(r'(\w[\w-]*)="([^"]*)"')
FIELD = re.compile(
    r"<(input)([^>]*)>()|<(textarea|select)([^>]*)>(.*?)</(?:textarea|select)>", re.S
)
SELECTED = re.compile(r'<option value="([^"]*)"[^>]*selected')

# The pages whose forms are attacked, as whom. Forms that end the client's session
# (/signout) are left out: the rest of the run needs it.
PAGES = [
    ("alice", ["/submit", "/requests/new", "/account", "/jobs", "/statements", "/verify"]),
    (
        "admin",
        [
            "/admin/projects/p1",
            "/admin/users",
            "/admin/users/bob",
            "/admin/sectors",
            "/admin/projects",
            "/admin/changes",
        ],
    ),
    ("ops", ["/ops/nodes/h-0", "/ops/nodes", "/ops/queue", "/ops"]),
]


def forms_on(client: PortalClient, path: str) -> list[tuple[str, str, dict[str, str]]]:
    """(method, action, the fields' values as the page fills them) of each form."""
    found = []
    for attributes, inner in FORM.findall(client.get(path).text):
        attrs = dict(ATTRIBUTE.findall(attributes))
        action = html.unescape(attrs.get("action", path))
        if action in ("/signout", "/language") or "/signout" in action:
            continue
        values: dict[str, str] = {}
        for match in FIELD.findall(inner):
            kind, field_attributes, content = match[:3] if match[0] else match[3:]
            field = dict(ATTRIBUTE.findall(field_attributes))
            name = field.get("name")
            if not name or name == "csrf_token":
                continue
            if kind == "textarea":
                values[name] = html.unescape(content)
            elif kind == "select":
                chosen = SELECTED.findall(content)
                values[name] = html.unescape(chosen[0]) if chosen else ""
            elif field.get("type") not in ("checkbox", "radio", "file", "submit"):
                values[name] = html.unescape(field.get("value", ""))
        if values:
            found.append((attrs.get("method", "get").lower(), action, values))
    return found


hostile_bytes = st.one_of(
    st.binary(max_size=120),
    hostile_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
    huge_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.integers(33, 5_000).map(lambda depth: ("[" * depth + "]" * depth).encode()),
    st.sampled_from(SPECIAL_NUMBERS).map(str.encode),
    st.just(b"\xed\xa0\x80"),  # a lone surrogate, as UTF-8 would write one
)


@pytest.mark.parametrize(("user", "paths"), PAGES, ids=[user for user, _ in PAGES])
def test_any_hostile_field_in_any_form_is_never_a_5xx_and_a_refusal_stores_nothing(
    portal: Portal, user: str, paths: list[str]
) -> None:
    client = portal.as_user(user)
    forms = [form for path in paths for form in forms_on(client, path)]
    assert forms, paths

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(form=st.sampled_from(forms), data=st.data(), value=hostile_bytes)
    def attack(form: tuple[str, str, dict[str, str]], data: Any, value: bytes) -> None:
        method, action, values = form
        field = data.draw(st.sampled_from(sorted(values)))
        sent: dict[str, Any] = values | {field: value}
        before = stored(portal.api)
        if method == "get":  # a URL is cut long before a body (servers answer 414)
            sent[field] = value[:4_000]
            answer = client.client.get(f"{action}?{urlencode(sent)}")
        else:
            if not client.csrf:
                client.get("/")
            body = urlencode({"csrf_token": client.csrf} | sent)
            answer = client.client.post(
                action,
                content=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        assert answer.status_code < 500, (action, field, value[:100], answer.text[:500])
        if 400 <= answer.status_code < 500:
            assert stored(portal.api) == before, (action, field, value[:100])

    attack()
    for path in paths:
        assert client.get(path).status_code == 200, path
