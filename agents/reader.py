"""What the agent reads GPUs through: a `GpuReader` (NVML on a GPU node, agents/nvml.py; the
simulated one for demos, agents/simulated.py). A reader returns one `GpuSample` per GPU (and
per MIG device) with the processes NVML sees on it; who owns each process (the job) is filled
in afterwards by agents/attribution.py, the same way for every reader.
"""

from __future__ import annotations

from typing import Literal, Protocol

from agents.schema import GpuSample

ReaderKind = Literal["nvml", "simulated"]


class ReaderUnavailable(Exception):
    """The GPUs cannot be read at all (no NVML library, no driver): the agent cannot start.
    The message says what to do about it."""


class GpuReader(Protocol):
    # What reads the GPUs, as NodeReport.reader says ("nvml" or "simulated").
    kind: ReaderKind

    def read(self) -> list[GpuSample]:
        """Every GPU (and MIG device) now, processes without their jobs."""
        ...

    def driver_version(self) -> str: ...

    def close(self) -> None: ...
