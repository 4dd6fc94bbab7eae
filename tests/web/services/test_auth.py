"""The cache of callers: what a clear() (a revoke, a role or membership change) guarantees."""

from __future__ import annotations

import pytest

from web.models import Role
from web.services.auth import Principal, PrincipalCache

BOB = Principal("bob", Role.RESEARCHER)
NOW = 1_700_000_000.0


# Each case: what happens between reading the generation (a lookup starts) and put().
GENERATIONS = [
    # id, clears in between, whether the lookup's answer is kept
    ("nothing-changed", 0, True),
    ("revoked-meanwhile", 1, False),
    ("changed-twice-meanwhile", 2, False),
]


@pytest.mark.parametrize(
    ("clears", "kept"), [pytest.param(*case[1:], id=case[0]) for case in GENERATIONS]
)
def test_a_lookup_that_started_before_a_clear_is_not_cached(clears: int, kept: bool) -> None:
    cache = PrincipalCache()
    generation = cache.generation  # the lookup starts
    for _ in range(clears):
        cache.clear()  # a revoke commits, its route clears the cache
    assert cache.put("gpp_token", BOB, NOW, generation) is kept
    assert (cache.get("gpp_token", NOW) is BOB) is kept


def test_a_lookup_that_started_after_the_clear_is_cached() -> None:
    cache = PrincipalCache()
    cache.put("gpp_token", BOB, NOW, cache.generation)
    cache.clear()
    assert cache.get("gpp_token", NOW) is None
    assert cache.put("gpp_token", BOB, NOW, cache.generation)
    assert cache.get("gpp_token", NOW) is BOB


@pytest.mark.parametrize(
    ("expires_at", "until"),
    [(None, NOW + 5), (NOW + 2, NOW + 2), (NOW + 60, NOW + 5)],
    ids=["no-end", "ends-sooner", "ends-later"],
)
def test_an_entry_lasts_its_ttl_and_never_past_its_token(
    expires_at: float | None, until: float
) -> None:
    cache = PrincipalCache(ttl_s=5)
    principal = Principal("bob", Role.RESEARCHER, token_expires_at=expires_at)
    cache.put("gpp_token", principal, NOW, cache.generation)
    assert cache.get("gpp_token", until - 0.001) is principal
    assert cache.get("gpp_token", until) is None


def test_passwords_are_hashed_with_scrypt_at_the_real_cost_and_a_salt_each() -> None:
    from web.services import auth

    assert auth.SCRYPT_N == 2**8  # the tests' cheap cost (tests/conftest.py) ...
    assert auth._DUMMY_HASH.startswith("scrypt$16384$8$1$")  # ... the real one, at import
    first, second = auth.hash_password("the same words"), auth.hash_password("the same words")
    assert first != second  # salted
    assert auth.password_matches(first, "the same words")
    assert not auth.password_matches(first, "other words")
    assert not auth.password_matches(None, "the same words")
    assert not auth.password_matches("md5$abc", "the same words")
