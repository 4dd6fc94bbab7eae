"""Every message the portal says is translated into Korean, once, with the same
placeholders; the catalogs load."""

from __future__ import annotations

from web.portal import catalog
from web.portal.i18n import negotiate, translations


def test_every_message_is_translated_into_korean() -> None:
    assert catalog.problems("ko") == []


def test_the_extraction_finds_the_templates_and_the_views() -> None:
    found = catalog.extracted()
    assert any(where.startswith("templates/") for places in found.values() for where in places)
    assert any(where.startswith("views/") for places in found.values() for where in places)


def test_korean_catalog_translates_and_english_is_the_source() -> None:
    assert translations("ko").gettext("Sign in") == "로그인"
    assert translations("en").gettext("Sign in") == "Sign in"


def test_accept_language_is_negotiated_by_quality() -> None:
    assert negotiate("ko-KR,ko;q=0.9,en-US;q=0.8") == "ko"
    assert negotiate("fr-FR,en;q=0.5,ko;q=0.6") == "ko"
    assert negotiate("fr, de") == "en"
    assert negotiate("") == "en"
    assert negotiate("ko;q=0") == "en"
    assert negotiate("ko;q=bad,en") == "en"
