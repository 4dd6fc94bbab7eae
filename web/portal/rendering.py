"""Pages from Jinja2 templates: one environment per language (each with its catalog
installed, so rendering needs no per-request state in the environment), autoescaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import (
    BytecodeCache,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    select_autoescape,
)
from jinja2.bccache import Bucket

from web.portal.i18n import LANGUAGES, translations

TEMPLATES = Path(__file__).parent / "templates"


class CompiledTemplates(BytecodeCache):
    """Compiled templates kept in memory for the process, by name and source checksum (Jinja
    checks it), so every app of a process compiles each template once: compiling is most of
    a page's first rendering, and the tests make an app per test."""

    def __init__(self) -> None:
        self.code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        if bucket.key in self.code:
            bucket.bytecode_from_string(self.code[bucket.key])

    def dump_bytecode(self, bucket: Bucket) -> None:
        self.code[bucket.key] = bucket.bytecode_to_string()


COMPILED = CompiledTemplates()


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
            bytecode_cache=COMPILED,
        )
        env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
        env.globals["query"] = query
        environments[language] = env
    return environments


def query(base: str, **params: Any) -> str:
    """`base` with the given query parameters (those that are None or "" left out)."""
    kept = {k: v for k, v in params.items() if v is not None and v != ""}
    return f"{base}?{urlencode(kept, doseq=True)}" if kept else base
