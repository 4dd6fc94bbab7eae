"""The administrators' pages for sectors, users, roles, passwords and tokens; and every
user's own tokens on /account (on SQLite and PostgreSQL)."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from sqlmodel import col, select

from tests.web.portal.conftest import Portal, PortalClient, password_of, text_of
from web.db import read_session
from web.models import ApiToken, Sector, User
from web.portal.i18n import translations
from web.services.changes import history

NEW_TOKEN = re.compile(r'id="new-token"[^>]*value="(gpp_[^"]+)"')


def said(response: httpx.Response) -> str:
    return html.unescape(text_of(response))


def user_row(portal: Portal, name: str) -> User | None:
    with read_session(portal.api.engine) as session:
        row = session.get(User, name)
        return None if row is None else User.model_validate(row.model_dump())


def tokens_of(portal: Portal, user: str) -> list[tuple[int, str, float | None]]:
    with read_session(portal.api.engine) as session:
        rows = session.exec(
            select(ApiToken).where(ApiToken.user == user).order_by(col(ApiToken.id))
        ).all()
        return [(t.id or 0, t.label, t.revoked_at) for t in rows]


def signs_in_with_token(portal: Portal, token: str) -> bool:
    visitor = portal.anonymous()
    visitor.get("/signin")
    answer = visitor.post_form("/signin", {"token": token})
    return answer.status_code == 303


def signs_in(portal: Portal, user: str, password: str) -> bool:
    visitor = portal.anonymous()
    visitor.get("/signin")
    return visitor.post_form("/signin", {"user": user, "password": password}).status_code == 303


def admin_at(portal: Portal, path: str) -> PortalClient:
    admin = portal.as_user("admin")
    assert admin.get(path).status_code == 200
    return admin


# --- sectors -------------------------------------------------------------------------------


def weights(portal: Portal) -> dict[str, float]:
    with read_session(portal.api.engine) as session:
        return {s.name: s.weight for s in session.exec(select(Sector)).all()}


def test_sectors_show_their_share_of_the_weight_and_their_projects(portal: Portal) -> None:
    admin = portal.as_user("admin")
    page = admin.get("/admin/sectors")
    assert page.status_code == 200
    # academia 1.5, industry 1.0: 60 % and 40 %; p1 and p3 are academia's, p2 industry's
    assert re.search(r'id="share-academia">60.0%<', page.text)
    assert re.search(r'id="share-industry">40.0%<', page.text)
    row = said(page).split("academia 60.0%")[1]
    assert row.split()[:2] == ["2", "2"]  # projects, active ones
    done = admin.post_form("/admin/sectors/industry", {"weight": "3.5"})
    assert done.status_code == 303 and done.headers["location"] == "/admin/sectors"
    page = admin.get("/admin/sectors")
    assert "Sector industry weighs 3.50 now." in said(page)
    assert re.search(r'id="share-academia">30.0%<', page.text)
    assert re.search(r'id="share-industry">70.0%<', page.text)
    assert weights(portal)["industry"] == 3.5
    with read_session(portal.api.engine) as session:
        change = history(session, "sector:industry")[0]
        assert (change.actor, change.field, change.old, change.new) == (
            "admin",
            "weight",
            "1.0",
            "3.5",
        )


@pytest.mark.parametrize(
    ("weight", "says"),
    [
        ("0", "Must be more than 0."),
        ("-2", "Must be more than 0."),
        ("heavy", "Must be a number."),
        ("", "Required."),
        ("2000000", "Must be at most 1000000."),
        ("nan", "Must be a finite number."),
    ],
)
def test_a_bad_sector_weight_is_refused_in_place(portal: Portal, weight: str, says: str) -> None:
    admin = admin_at(portal, "/admin/sectors")
    answer = admin.post_form("/admin/sectors/industry", {"weight": weight})
    assert answer.status_code == 400
    assert 'id="e-sector-industry-weight"' in answer.text
    assert says in said(answer)
    assert f'id="f-sector-industry-weight" name="weight" type="text" value="{weight}"' in (
        answer.text
    )
    assert 'id="f-sector-academia-weight" name="weight" type="text" value="1.5"' in answer.text
    assert weights(portal) == {"academia": 1.5, "industry": 1.0}


def test_a_new_sector(portal: Portal) -> None:
    admin = admin_at(portal, "/admin/sectors")
    bad = admin.post_form("/admin/sectors", {"name": "Public Sector", "weight": "1"})
    assert bad.status_code == 400 and 'id="e-sector-new-name"' in bad.text
    assert 'value="Public Sector"' in bad.text
    taken = admin.post_form("/admin/sectors", {"name": "academia", "weight": "9"})
    assert taken.status_code == 400 and "exists already" in said(taken)
    done = admin.post_form("/admin/sectors", {"name": "public", "weight": "0.5"})
    assert done.status_code == 303
    assert weights(portal) == {"academia": 1.5, "industry": 1.0, "public": 0.5}
    assert admin.post_form("/admin/sectors/nowhere", {"weight": "1"}).status_code == 404


# --- users ---------------------------------------------------------------------------------


def test_create_a_user_who_can_then_sign_in(portal: Portal) -> None:
    admin = admin_at(portal, "/admin/users")
    done = admin.post_form(
        "/admin/users",
        {
            "name": "frank",
            "full_name": "Frank Kim",
            "email": "frank@example.org",
            "role": "operator",
            "password": "kim-password-1",
            "password_again": "kim-password-1",
        },
    )
    assert done.status_code == 303 and done.headers["location"] == "/admin/users/frank"
    page = admin.get("/admin/users/frank")
    assert "User frank is created." in said(page)
    row = user_row(portal, "frank")
    assert row is not None
    assert (row.full_name, row.email, row.role, row.active) == (
        "Frank Kim",
        "frank@example.org",
        "operator",
        True,
    )
    assert signs_in(portal, "frank", "kim-password-1")
    assert 'id="user-frank"' in admin.get("/admin/users?q=frank").text


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        ({"name": "Frank Kim"}, "name", "1 to 63 characters"),
        ({"name": ""}, "name", "Required."),
        ({"name": "alice"}, "name", "user 'alice' exists already"),
        ({"name": "frank", "role": "king"}, "role", "Must be one of:"),
        ({"name": "frank", "email": "x" * 201}, "email", "At most 200 characters."),
        (
            {"name": "frank", "password": "short", "password_again": "short"},
            "password",
            "Between 10 and 200 characters.",
        ),
        (
            {"name": "frank", "password": "long-enough-1", "password_again": "long-enough-2"},
            "password_again",
            "The two passwords differ.",
        ),
    ],
)
def test_a_user_refused_keeps_what_was_typed_and_is_not_created(
    portal: Portal, data: dict[str, str], field: str, says: str
) -> None:
    admin = admin_at(portal, "/admin/users")
    form = {"full_name": "Kept Name", "email": "", "role": "researcher"} | data
    answer = admin.post_form("/admin/users", form)
    assert answer.status_code == 400
    assert f'id="e-new-{field}"' in answer.text
    assert says in said(answer)
    assert 'value="Kept Name"' in answer.text
    assert "long-enough" not in answer.text and 'value="short"' not in answer.text
    if data["name"] not in ("", "alice"):
        assert user_row(portal, data["name"]) is None
    alice = user_row(portal, "alice")
    assert alice is not None and alice.role == "researcher"  # the user it clashed with


def test_change_a_role_and_deactivate_a_user(portal: Portal) -> None:
    bob = portal.as_user("bob")
    assert bob.get("/").status_code == 200
    admin = admin_at(portal, "/admin/users/bob")
    promoted = admin.post_form(
        "/admin/users/bob",
        {"full_name": "Bob Lee", "email": "bob@example.org", "role": "operator", "active": "yes"},
    )
    assert promoted.status_code == 303
    row = user_row(portal, "bob")
    assert row is not None and (row.role, row.full_name, row.active) == (
        "operator",
        "Bob Lee",
        True,
    )
    assert bob.get("/ops").status_code == 200  # the new role at once
    page = admin.get("/admin/users/bob")
    assert "User bob is changed." in said(page)
    assert "role researcher operator" in said(page)  # the history

    off = admin.post_form(
        "/admin/users/bob", {"full_name": "Bob Lee", "email": "", "role": "operator"}
    )
    assert off.status_code == 303
    row = user_row(portal, "bob")
    assert row is not None and not row.active and row.email == ""
    assert bob.get("/").status_code == 303  # signed out at once
    assert not signs_in(portal, "bob", password_of("bob"))
    assert "deactivated" in said(admin.get("/admin/users/bob"))
    assert not signs_in_with_token(portal, portal.api.tokens["bob"])


def test_an_administrator_cannot_lock_themselves_out(portal: Portal) -> None:
    admin = admin_at(portal, "/admin/users/admin")
    answer = admin.post_form(
        "/admin/users/admin", {"full_name": "Me", "email": "", "role": "researcher"}
    )
    assert answer.status_code == 400
    assert 'id="e-user-role"' in answer.text and 'id="e-user-active"' in answer.text
    assert 'value="Me"' in answer.text
    row = user_row(portal, "admin")
    assert row is not None and (row.role, row.active, row.full_name) == ("admin", True, "")


def test_a_bad_user_change_is_refused_in_place(portal: Portal) -> None:
    admin = admin_at(portal, "/admin/users/carol")
    answer = admin.post_form(
        "/admin/users/carol",
        {"full_name": "y" * 201, "email": "c@example.org", "role": "researcher", "active": "yes"},
    )
    assert answer.status_code == 400 and 'id="e-user-full_name"' in answer.text
    assert 'value="c@example.org"' in answer.text
    row = user_row(portal, "carol")
    assert row is not None and row.email == ""


def test_an_administrator_sets_a_password(portal: Portal) -> None:
    admin = admin_at(portal, "/admin/users/carol")
    short = admin.post_form(
        "/admin/users/carol/password", {"password": "short", "password_again": "short"}
    )
    assert short.status_code == 400 and 'id="e-password-password"' in short.text
    assert 'value="short"' not in short.text
    assert signs_in(portal, "carol", password_of("carol"))
    done = admin.post_form(
        "/admin/users/carol/password",
        {"password": "a-new-password-c", "password_again": "a-new-password-c"},
    )
    assert done.status_code == 303
    assert "The password of carol is set; their sessions are signed out." in said(
        admin.get("/admin/users/carol")
    )
    assert signs_in(portal, "carol", "a-new-password-c")
    assert not signs_in(portal, "carol", password_of("carol"))


def test_the_user_list_filters_and_pages(portal: Portal) -> None:
    for i in range(55):
        portal.api.add_user(f"user{i:02d}")
    admin = admin_at(portal, "/admin/users")
    page = admin.get("/admin/users")
    assert "Users found: 62" in said(page)
    assert len(re.findall(r'<tr id="user-', page.text)) == 50
    rest = admin.get("/admin/users?offset=50")
    assert len(re.findall(r'<tr id="user-', rest.text)) == 12
    operators = admin.get("/admin/users?role=operator")
    assert re.findall(r'<tr id="user-([^"]+)"', operators.text) == ["ops"]
    bad = admin.get("/admin/users?role=king")
    assert bad.status_code == 400 and 'id="e-role"' in bad.text
    assert admin.get("/admin/users/nobody").status_code == 404


def test_the_user_page_shows_projects_and_tokens(portal: Portal) -> None:
    admin = admin_at(portal, "/admin/users/alice")
    page = admin.get("/admin/users/alice")
    text = said(page)
    assert "p1 (pi)" in text
    prefix = tokens_of(portal, "alice")[0]
    assert f'id="token-{prefix[0]}"' in page.text


# --- tokens --------------------------------------------------------------------------------


def test_a_token_is_shown_once_signs_in_and_is_revoked(portal: Portal) -> None:
    admin = admin_at(portal, "/admin/users/carol")
    before = tokens_of(portal, "carol")
    issued = admin.post_form(
        "/admin/users/carol/tokens", {"label": "laptop", "expires_in_days": "30"}
    )
    assert issued.status_code == 200
    found = NEW_TOKEN.search(issued.text)
    assert found, issued.text
    secret = found.group(1)
    assert "shown this once and never again" in said(issued)
    assert issued.headers["cache-control"] == "no-store"
    after = tokens_of(portal, "carol")
    assert len(after) == len(before) + 1
    token_id, label, revoked = after[-1]
    assert (label, revoked) == ("laptop", None)
    with read_session(portal.api.engine) as session:
        row = session.get(ApiToken, token_id)
        assert row is not None and secret not in (row.digest, row.prefix)
        assert row.expires_at == portal.api.clock.now() + 30 * 86400

    again = admin.get("/admin/users/carol")
    assert secret not in again.text  # never shown again
    assert f'id="token-{token_id}"' in again.text and secret[:12] in again.text
    assert signs_in_with_token(portal, secret)

    revoked_answer = admin.post_form(f"/admin/users/carol/tokens/{token_id}/revoke")
    assert revoked_answer.status_code == 303
    assert tokens_of(portal, "carol")[-1][2] is not None
    assert f"Token {secret[:12]}… is revoked." in said(admin.get("/admin/users/carol"))
    assert not signs_in_with_token(portal, secret)
    # The API refuses it at once too (the principal cache was cleared).
    assert (
        portal.api.client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {secret}"}
        ).status_code
        == 401
    )


def test_a_token_of_another_user_is_not_revoked_under_this_users_address(
    portal: Portal,
) -> None:
    admin = admin_at(portal, "/admin/users/carol")
    alices = tokens_of(portal, "alice")[0][0]
    answer = admin.post_form(f"/admin/users/carol/tokens/{alices}/revoke")
    assert answer.status_code == 404
    assert tokens_of(portal, "alice")[0][2] is None
    assert admin.post_form("/admin/users/carol/tokens/99999/revoke").status_code == 404


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        ({"label": "x", "expires_in_days": "0"}, "expires_in_days", "Must be at least 1."),
        ({"label": "x", "expires_in_days": "soon"}, "expires_in_days", "Must be a whole number."),
        ({"label": "x", "expires_in_days": "4000"}, "expires_in_days", "Must be at most 3650."),
        ({"label": "l" * 101}, "label", "At most 100 characters."),
    ],
)
def test_a_bad_token_request_is_refused_in_place(
    portal: Portal, data: dict[str, str], field: str, says: str
) -> None:
    admin = admin_at(portal, "/admin/users/carol")
    before = tokens_of(portal, "carol")
    answer = admin.post_form("/admin/users/carol/tokens", data)
    assert answer.status_code == 400
    assert f'id="e-token-{field}"' in answer.text and says in said(answer)
    for value in data.values():
        assert f'value="{value}"' in answer.text
    assert not NEW_TOKEN.search(answer.text)
    assert tokens_of(portal, "carol") == before


def test_everyone_manages_their_own_tokens_on_their_account(portal: Portal) -> None:
    bob = portal.as_user("bob")
    page = bob.get("/account")
    assert 'action="/account/tokens"' in page.text
    issued = bob.post_form("/account/tokens", {"label": "notebook", "expires_in_days": ""})
    assert issued.status_code == 200
    found = NEW_TOKEN.search(issued.text)
    assert found
    secret = found.group(1)
    token_id, label, _revoked = tokens_of(portal, "bob")[-1]
    assert label == "notebook"
    with read_session(portal.api.engine) as session:
        row = session.get(ApiToken, token_id)
        assert row is not None and row.expires_at is None
    assert secret not in bob.get("/account").text
    assert signs_in_with_token(portal, secret)

    bad = bob.post_form("/account/tokens", {"label": "x", "expires_in_days": "-5"})
    assert bad.status_code == 400 and 'id="e-token-expires_in_days"' in bad.text

    # Another user's token is not found from my account, an administrator's included.
    alices = tokens_of(portal, "alice")[0][0]
    assert bob.post_form(f"/account/tokens/{alices}/revoke").status_code == 404
    admin = portal.as_user("admin")
    admin.get("/account")
    assert admin.post_form(f"/account/tokens/{alices}/revoke").status_code == 404
    assert tokens_of(portal, "alice")[0][2] is None

    done = bob.post_form(f"/account/tokens/{token_id}/revoke")
    assert done.status_code == 303 and done.headers["location"] == "/account"
    assert f"Token {secret[:12]}… is revoked." in said(bob.get("/account"))
    assert tokens_of(portal, "bob")[-1][2] is not None
    assert not signs_in_with_token(portal, secret)
    forged = bob.post_form(f"/account/tokens/{tokens_of(portal, 'bob')[0][0]}/revoke", csrf="x")
    assert forged.status_code == 400
    assert tokens_of(portal, "bob")[0][2] is None


def test_user_pages_in_korean(portal: Portal) -> None:
    ko = translations("ko").gettext
    admin = portal.as_user("admin", **{"Accept-Language": "ko"})
    admin.get("/admin/users/carol")
    answer = admin.post_form("/admin/users/carol/tokens", {"expires_in_days": "soon"})
    assert answer.status_code == 400
    assert ko("Must be a whole number.") in said(answer)
    assert ko("Issue a token") in said(answer) and ko("Issue a token") != "Issue a token"
    weight = admin.post_form("/admin/sectors/industry", {"weight": "0"})
    assert ko("Must be more than %(gt)s.") % {"gt": 0} in said(weight)
