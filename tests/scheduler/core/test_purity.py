"""scheduler/core imports nothing but the standard library and itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[3] / "scheduler" / "core"
SOURCES = sorted(CORE.glob("**/*.py"))


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file."""
    package = ".".join(path.relative_to(CORE.parents[1]).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def allowed(module: str) -> bool:
    top = module.split(".")[0]
    if module == "scheduler.core" or module.startswith("scheduler.core."):
        return True
    return top != "scheduler" and (top in sys.stdlib_module_names or top == "__future__")


def test_there_is_something_to_check():
    assert CORE.is_dir()
    assert {p.name for p in SOURCES} >= {"__init__.py", "cycle.py", "types.py", "placement.py"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_imports_only_the_standard_library_and_itself(path):
    bad = [f"line {line}: {name}" for line, name in imported_modules(path) if not allowed(name)]
    assert not bad, f"{path.name} imports outside the standard library: {bad}"


@pytest.mark.parametrize(
    ("module", "ok"),
    [
        ("heapq", True),
        ("collections.abc", True),
        ("__future__", True),
        ("scheduler.core.types", True),
        ("scheduler.core", True),
        ("scheduler.runtime", False),
        ("scheduler.sim.engine", False),
        ("scheduler", False),
        ("numpy", False),
        ("ray", False),
        ("scheduler_core", False),
    ],
)
def test_the_rule_itself(module, ok):
    assert allowed(module) is ok


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_does_not_import_dynamically(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    calls = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
        )
    ]
    assert not calls, f"{path.name} imports dynamically on lines {calls}"
