"""The portal's Jinja environments: templates compiled once per process, and compiled anew
when their source changes."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader

from web.portal.rendering import CompiledTemplates, make_environments, query


def test_every_app_of_a_process_renders_from_the_same_compiled_templates() -> None:
    first, second = make_environments(), make_environments()
    assert first["en"] is not second["en"]  # each app its own environments ...
    first["en"].get_template("base.html")
    compiled = first["en"].bytecode_cache
    assert isinstance(compiled, CompiledTemplates) and compiled.code
    assert second["ko"].bytecode_cache is compiled  # ... and one store of compiled code


def test_a_changed_template_is_compiled_anew(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    compiled = CompiledTemplates()

    def render() -> str:
        env = Environment(loader=FileSystemLoader(tmp_path), bytecode_cache=compiled)
        return env.get_template("page.html").render(name="jiwoo")

    page.write_text("hello {{ name }}")
    assert render() == "hello jiwoo"
    assert len(compiled.code) == 1
    assert render() == "hello jiwoo"  # from the stored code
    page.write_text("goodbye {{ name }}")
    assert render() == "goodbye jiwoo"


def test_query_leaves_out_empty_parameters() -> None:
    assert query("/jobs", state="queued", project="", flavor=None) == "/jobs?state=queued"
    assert query("/jobs") == "/jobs"
    assert query("/ops/nodes", state=["down", "draining"]) == (
        "/ops/nodes?state=down&state=draining"
    )
