"""The portal's messages and their catalogs: what the templates and views say (extracted
with Babel, as `pybabel extract` would) against what each language's .po files translate.

    python -m web.portal.catalog missing [--language ko]   # untranslated, as .po entries
    python -m web.portal.catalog check                      # exit 1 on any problem

tests/web/portal/test_catalogs.py fails the build on a message left untranslated.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from web.portal.i18n import DEFAULT_LANGUAGE, LANGUAGES, LOCALE_DIR

PORTAL = Path(__file__).parent
METHODS = [
    ("templates/**.html", "jinja2.ext:babel_extract"),
    ("**.py", "python"),
]
OPTIONS = {
    "templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "false"},
    # N_() marks words said elsewhere (state names, roles) that templates translate.
    "**.py": {},
}
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}


def extracted() -> dict[str, list[str]]:
    """Every message the portal says -> where (file:line)."""
    found: dict[str, list[str]] = {}
    for filename, line, message, _comments, _context in extract_from_dir(
        PORTAL, METHODS, OPTIONS, keywords=KEYWORDS
    ):
        messages = message if isinstance(message, tuple) else (message,)
        for text in messages:
            if text:
                found.setdefault(text, []).append(f"{filename}:{line}")
    return found


def catalogs(language: str) -> Iterator[tuple[Path, Catalog]]:
    for po in sorted((LOCALE_DIR / language / "LC_MESSAGES").glob("*.po")):
        with po.open("rb") as file:
            yield po, read_po(file, locale=language)


def problems(language: str) -> list[str]:
    """Untranslated or fuzzy messages, ones translated twice, placeholders that differ."""
    said = extracted()
    seen: dict[str, Path] = {}
    found: list[str] = []
    for po, catalog in catalogs(language):
        for message in catalog:
            if not message.id:
                continue
            text = message.id if isinstance(message.id, str) else message.id[0]
            if text in seen:
                found.append(f"{po.name}: {text!r} is translated in {seen[text].name} too")
            seen[text] = po
            if message.fuzzy or not message.string:
                found.append(f"{po.name}: {text!r} is fuzzy or empty")
            for error in message.check(catalog):
                found.append(f"{po.name}: {text!r}: {error}")
    for text, where in sorted(said.items()):
        if text not in seen:
            found.append(f"not translated: {text!r} ({', '.join(where[:3])})")
    return found


def missing_entries(language: str) -> str:
    said = extracted()
    known = {m.id if isinstance(m.id, str) else m.id[0] for _, c in catalogs(language) for m in c}
    entries = []
    for text, where in sorted(said.items(), key=lambda item: item[1][0]):
        if text not in known:
            escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            entries.append(f'#: {where[0]}\nmsgid "{escaped}"\nmsgstr ""\n')
    return "\n".join(entries)


def main(argv: list[str]) -> int:
    language = "ko"
    if "--language" in argv:
        language = argv[argv.index("--language") + 1]
    if language == DEFAULT_LANGUAGE or language not in LANGUAGES:
        others = [lang for lang in LANGUAGES if lang != DEFAULT_LANGUAGE]
        print(f"--language: one of {', '.join(others)}")
        return 2
    if argv[:1] == ["missing"]:
        print(missing_entries(language))
        return 0
    if argv[:1] == ["check"]:
        found = problems(language)
        print("\n".join(found) or f"{language}: every message is translated")
        return 1 if found else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
