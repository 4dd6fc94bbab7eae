"""Pages from Jinja2 templates: one environment per language (each with its catalog
installed, so rendering needs no per-request state in the environment), autoescaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from web.portal.i18n import LANGUAGES, translations

TEMPLATES = Path(__file__).parent / "templates"


def make_environments() -> dict[str, Environment]:
    environments = {}
    for language in LANGUAGES:
        env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(["html", "svg"]),
            undefined=StrictUndefined,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
        env.globals["query"] = query
        environments[language] = env
    return environments


def query(base: str, **params: Any) -> str:
    """`base` with the given query parameters (those that are None or "" left out)."""
    kept = {k: v for k, v in params.items() if v is not None and v != ""}
    return f"{base}?{urlencode(kept, doseq=True)}" if kept else base
