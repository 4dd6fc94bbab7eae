"""New passwords: too short, too long, repeated, a run, the user's name or a common one are
refused, naming the rule; a password anyone would call strong is not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from web.services import auth
from web.services.errors import Invalid
from web.services.passwords import Weakness, common_passwords, weakness


@pytest.mark.parametrize(
    ("password", "user", "why"),
    [
        ("short", "", Weakness.TOO_SHORT),
        ("x" * 201, "", Weakness.TOO_LONG),
        ("aaaaaaaaaa", "", Weakness.REPEATS),
        ("abcabcabcabc", "", Weakness.REPEATS),
        ("passpasspass", "", Weakness.REPEATS),
        ("qwertyuiop", "", Weakness.RUN),
        ("0987654321", "", Weakness.RUN),
        ("abcdefghijk", "", Weakness.RUN),
        ("acegikmoqs", "", Weakness.RUN),
        ("Jiwoo-portal-2024", "jiwoo", Weakness.HAS_NAME),
        ("password123", "", Weakness.COMMON),
        ("Iloveyou2024!", "", Weakness.COMMON),
        ("1q2w3e4r5t", "", Weakness.COMMON),
        ("football10", "", Weakness.COMMON),
        ("bad\ud800surrogate", "", Weakness.NOT_TEXT),
        ("with\x00nul-inside", "", Weakness.NOT_TEXT),
    ],
)
def test_weak_passwords_are_refused_naming_the_rule(password: str, user: str, why: str) -> None:
    assert weakness(password, user) == why
    with pytest.raises(Invalid) as refused:
        auth.check_password_rules(password, user)
    assert refused.value.field == "password"


@pytest.mark.parametrize(
    "password",
    ["correct horse battery staple", "Tr0ub4dor&3x-7", "ob-la-di ob-la-da", "가나다라마바사아자차"],
)
def test_reasonable_passwords_pass(password: str) -> None:
    assert weakness(password, "alice") is None


def test_a_short_user_name_inside_a_password_is_no_reason_to_refuse_it() -> None:
    assert weakness("bobsleigh on ice", "bo") is None
    assert weakness("bobsleigh on ice", "bob") == Weakness.HAS_NAME


def test_the_common_list_is_shipped_and_large_enough() -> None:
    common = common_passwords()
    assert len(common) > 9000
    assert {"123456", "password", "qwerty", "iloveyou", "#1bitch"} <= common


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=300), st.text(max_size=70))
def test_any_text_is_judged_without_crashing(password: str, user: str) -> None:
    why = weakness(password, user)
    assert why is None or why in Weakness
    if why is None:
        auth.check_password_rules(password, user)
        assert auth.password_matches(auth.hash_password(password), password)
