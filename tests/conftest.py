from __future__ import annotations

from pathlib import Path

import pytest

SMALL_POOL = """
[simulation]
default_max_runtime_s = 3600

[[flavors]]
name = "H100"

[[node_groups]]
flavor = "H100"
count = 2
gpus = 8
prefix = "h"

[[sectors]]
name = "research"

[[projects]]
name = "a"
sector = "research"
quotas = { H100 = { guaranteed = 8, limit = 16 } }

[[projects]]
name = "b"
sector = "research"
quotas = { H100 = { guaranteed = 8, limit = 16 } }
"""


@pytest.fixture
def small_pool(tmp_path: Path) -> Path:
    path = tmp_path / "pool.toml"
    path.write_text(SMALL_POOL)
    return path


def write_trace(path: Path, rows: list[str]) -> Path:
    path.write_text(
        "submit_s,project,gpus,flavor,duration_s,max_runtime_s,user\n" + "\n".join(rows) + "\n"
    )
    return path
