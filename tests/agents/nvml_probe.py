"""The NVML reader in a process of its own, for tests: pynvml only finds the fake NVML when the
process starts with LD_LIBRARY_PATH set (tests/agents/fake_nvml.py).

    python -m tests.agents.nvml_probe

First line out: {"driver": ...} once the reader started, or {"unavailable": message}. Then,
for each "poll" line in, one line out: the attributed samples as a JSON list.
"""

from __future__ import annotations

import json
import sys

from agents.attribution import Attributor
from agents.nvml import NvmlReader
from agents.reader import ReaderUnavailable


def main() -> None:
    try:
        reader = NvmlReader()
    except ReaderUnavailable as problem:
        print(json.dumps({"unavailable": str(problem)}), flush=True)
        return
    attributor = Attributor()
    print(json.dumps({"driver": reader.driver_version()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "poll":
            continue
        samples = attributor.attribute(reader.read())
        print(json.dumps([sample.model_dump(mode="json") for sample in samples]), flush=True)
    reader.close()


if __name__ == "__main__":
    main()
