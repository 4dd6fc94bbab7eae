"""Simulated GPUs, for a demo on a machine without any: `gpupool agent --simulated-gpus N`.

Clearly labelled: reports say reader "simulated" and driver "simulated", every GPU is named
"Simulated GPU" and its uuid starts with "SIM-" (stable per node name and index, so a
restarted agent reports the same GPUs).

The values are made up but move plausibly: utilization drifts towards ~85% on a GPU some
job's process uses and towards idle otherwise; power follows utilization (60 to 700 W), the
energy counter grows with the power over the time between reads, temperature follows too;
no ECC error, no Xid.

Processes are real: /proc is scanned for processes with GPUPOOL_JOB_ID in their environment,
each shown on the GPUs its CUDA_VISIBLE_DEVICES names (indices; what the local dispatcher
sets), with a made-up amount of memory. So jobs that `gpupool up` runs on this machine show
up on the simulated GPUs, attributed like on a real node. Each process's environment is read
once (kept per pid and start time).
"""

from __future__ import annotations

import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agents.attribution import JOB_ID_VARIABLE, start_time
from agents.reader import ReaderKind
from agents.schema import GpuProcess, GpuSample

GIB = 1 << 30
TOTAL_MEMORY = 80 * GIB
IDLE_W, PEAK_W = 60.0, 700.0
BUSY_UTIL, IDLE_UTIL = 85.0, 1.0
CUDA_DEVICES_VARIABLE = b"CUDA_VISIBLE_DEVICES="
UUID_NAMESPACE = uuid.UUID("5b0f7a52-6f1e-4c55-9a43-7f3b2f6c1d00")


@dataclass
class SimulatedGpu:
    uuid: str
    util: float
    energy_mj: float
    temp_c: float


class SimulatedReader:
    kind: ReaderKind = "simulated"

    def __init__(
        self,
        gpus: int,
        node: str = "",
        *,
        clock: Callable[[], float] = time.time,
        proc: Path | None = Path("/proc"),
        seed: int | None = None,
    ) -> None:
        """`gpus` simulated GPUs of the node `node` (default: this host's name); processes
        found under `proc` (None: no processes)."""
        node = node or socket.gethostname()
        self._clock = clock
        self._proc = proc
        self._random = random.Random(seed)
        self._gpus = [
            SimulatedGpu(
                uuid=f"SIM-{uuid.uuid5(UUID_NAMESPACE, f'{node}/{index}')}",
                util=IDLE_UTIL,
                energy_mj=float(self._random.randrange(10**9, 10**10)),
                temp_c=32.0,
            )
            for index in range(gpus)
        ]
        self._last = clock()
        # (pid, start time) -> the GPU indices it uses (empty: not a job's process)
        self._scanned: dict[tuple[int, int], tuple[int, ...]] = {}

    def driver_version(self) -> str:
        return "simulated"

    def close(self) -> None:
        self._scanned.clear()

    def read(self) -> list[GpuSample]:
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        on_gpu = self._job_processes()
        samples = []
        for index, gpu in enumerate(self._gpus):
            pids = on_gpu.get(index, [])
            target = BUSY_UTIL if pids else IDLE_UTIL
            step = self._random.uniform(-8.0, 8.0) if pids else self._random.uniform(-1.0, 1.0)
            gpu.util = min(100.0, max(0.0, gpu.util + (target - gpu.util) * 0.5 + step))
            power_w = IDLE_W + (PEAK_W - IDLE_W) * gpu.util / 100.0
            gpu.energy_mj += power_w * elapsed * 1000.0
            gpu.temp_c += (30.0 + gpu.util * 0.45 - gpu.temp_c) * 0.3
            processes = [GpuProcess(pid=pid, used_memory_bytes=memory_of(pid)) for pid in pids]
            used = sum(memory_of(pid) for pid in pids) + (GIB // 2 if pids else 0)
            samples.append(
                GpuSample(
                    index=index,
                    uuid=gpu.uuid,
                    name="Simulated GPU",
                    util_gpu_pct=round(gpu.util, 1),
                    util_mem_pct=round(gpu.util * 0.4, 1),
                    mem_used_bytes=min(used, TOTAL_MEMORY),
                    mem_total_bytes=TOTAL_MEMORY,
                    power_w=round(power_w, 1),
                    energy_mj=int(gpu.energy_mj),
                    temp_c=round(gpu.temp_c, 1),
                    ecc_corrected=0,
                    ecc_uncorrected=0,
                    processes=processes,
                )
            )
        return samples

    def _job_processes(self) -> dict[int, list[int]]:
        """GPU index -> pids of job processes whose CUDA_VISIBLE_DEVICES names it."""
        found: dict[int, list[int]] = {}
        if self._proc is None:
            return found
        seen: dict[tuple[int, int], tuple[int, ...]] = {}
        for entry in self._proc.iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                key = (pid, start_time(self._proc, pid))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            devices = self._scanned.get(key)
            if devices is None:
                try:
                    devices = job_devices((entry / "environ").read_bytes(), len(self._gpus))
                except OSError:
                    devices = ()  # gone, or not ours to read: not shown (NVML would show it)
            seen[key] = devices
            for index in devices:
                found.setdefault(index, []).append(pid)
        self._scanned = seen
        return found


def job_devices(environ: bytes, gpus: int) -> tuple[int, ...]:
    """The GPU indices a job's process uses; () if it is not a job's process."""
    visible: bytes | None = None
    is_job = False
    for entry in environ.split(b"\0"):
        if entry.startswith(JOB_ID_VARIABLE):
            is_job = True
        elif entry.startswith(CUDA_DEVICES_VARIABLE):
            visible = entry[len(CUDA_DEVICES_VARIABLE) :]
    if not is_job or not visible:
        return ()
    indices = {int(part) for part in visible.split(b",") if part.strip().isdigit()}
    return tuple(sorted(i for i in indices if i < gpus))


def memory_of(pid: int) -> int:
    """A made-up, steady amount of GPU memory for a process: 2 to 17 GiB."""
    return (2 + pid % 16) * GIB
