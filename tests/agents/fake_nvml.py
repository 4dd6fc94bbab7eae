"""A fake NVML for tests and the agent's benchmark: `build_fake_nvml` compiles
tests/agents/fake_nvml.c into a `libnvidia-ml.so.1`; `write_state` writes what it answers.

The real pynvml loads the library by name, so a process only sees the fake when it starts
with LD_LIBRARY_PATH pointing at its directory (setting it from inside a running process
does not work): run the agent in a subprocess with `fake_nvml_env(library, state)`.

    library = build_fake_nvml(tmp_dir)                 # once per session: gcc, ~0.2 s
    state = FakeNvmlState(gpus=[FakeGpu(uuid="GPU-0", util_gpu=40, processes=[...])])
    write_state(tmp_dir / "nvml.state", state)         # again at any time: the next call sees it
    subprocess.run([... "gpupool", "agent", "--once"],
                   env=fake_nvml_env(library, tmp_dir / "nvml.state"))

Failures: `FakeFailure("nvmlDeviceGetPowerUsage", NOT_SUPPORTED, gpu=1)` makes that function
return that NVML error code (on one GPU, or on all with gpu=None); a function name of
pynvml's that the fake does not export raises NVMLError_FunctionNotFound on its own, and
FUNCTION_NOT_FOUND as a code does the same for one that it does. "nvmlInitWithFlags" fails
the start. Xid events: each `FakeXid` in `state.xids` is delivered once, in list order, and
only if written after the agent registered for events (as NVML does): append to the list.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_nvml.c")
LIBRARY_NAME = "libnvidia-ml.so.1"
STATE_ENV = "FAKE_NVML_STATE"
GIB = 1 << 30

# NVML's return codes a test may inject.
NO_PERMISSION = 4
NOT_SUPPORTED = 3
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
UNKNOWN = 999


@dataclass
class FakeProcess:
    pid: int
    used_memory_bytes: int = GIB


@dataclass
class FakeMigDevice:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3 MIG 1g.10gb"
    mem_total: int = 10 * GIB
    mem_used: int = 0
    processes: list[FakeProcess] = field(default_factory=list)


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    util_gpu: int = 0
    util_mem: int = 0
    mem_total: int = 80 * GIB
    mem_used: int = 0
    mem_reserved: int = 0
    power_mw: int = 70_000
    energy_mj: int = 1_000_000
    temp_c: int = 35
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0
    mig_mode: bool | None = None  # None: not MIG capable (NVML: not supported)
    mig_devices: list[FakeMigDevice] = field(default_factory=list)  # when mig_mode is True
    processes: list[FakeProcess] = field(default_factory=list)


@dataclass
class FakeXid:
    gpu: int  # the GPU's index
    xid: int


@dataclass
class FakeFailure:
    function: str  # NVML's C name, e.g. "nvmlDeviceGetPowerUsage"
    code: int  # NVML's return code, e.g. NOT_SUPPORTED
    gpu: int | None = None  # one GPU's index; None: every device (and global functions)


@dataclass
class FakeNvmlState:
    gpus: list[FakeGpu] = field(default_factory=list)
    driver_version: str = "550.54.15"
    xids: list[FakeXid] = field(default_factory=list)
    failures: list[FakeFailure] = field(default_factory=list)


def build_fake_nvml(directory: Path) -> Path:
    """Compile the fake into directory/libnvidia-ml.so.1 and return its path."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("building the fake NVML needs gcc (or cc) on PATH")
    directory.mkdir(parents=True, exist_ok=True)
    library = directory / LIBRARY_NAME
    command = [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror"]
    command += ["-o", str(library), str(SOURCE)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return library


def state_text(state: FakeNvmlState) -> str:
    """The state in the fake's line format (see parse_line in fake_nvml.c)."""
    lines = [f"driver {state.driver_version}"]
    mig_lines: list[str] = []
    next_id = len(state.gpus)  # GPUs first: a GPU's id is its index; MIG devices after
    for index, gpu in enumerate(state.gpus):
        lines.append(f"device {index} -1 {gpu.uuid}")
        lines.append(f"name {index} {gpu.name}")
        values = {
            "util_gpu": gpu.util_gpu,
            "util_mem": gpu.util_mem,
            "mem_total": gpu.mem_total,
            "mem_used": gpu.mem_used,
            "mem_reserved": gpu.mem_reserved,
            "power_mw": gpu.power_mw,
            "energy_mj": gpu.energy_mj,
            "temp_c": gpu.temp_c,
            "ecc_corrected": gpu.ecc_corrected,
            "ecc_uncorrected": gpu.ecc_uncorrected,
            "mig_mode": -1 if gpu.mig_mode is None else int(gpu.mig_mode),
        }
        lines += [f"set {index} {key} {value}" for key, value in values.items()]
        lines += [f"process {index} {p.pid} {p.used_memory_bytes}" for p in gpu.processes]
        for mig in gpu.mig_devices:
            mig_lines.append(f"device {next_id} {index} {mig.uuid}")
            mig_lines.append(f"name {next_id} {mig.name}")
            mig_lines.append(f"set {next_id} mem_total {mig.mem_total}")
            mig_lines.append(f"set {next_id} mem_used {mig.mem_used}")
            mig_lines += [f"process {next_id} {p.pid} {p.used_memory_bytes}" for p in mig.processes]
            next_id += 1
    lines += mig_lines
    lines += [f"xid {x.gpu} {x.xid} {serial}" for serial, x in enumerate(state.xids, start=1)]
    lines += [
        f"fail {f.function} {f.code} {-1 if f.gpu is None else f.gpu}" for f in state.failures
    ]
    return "\n".join(lines) + "\n"


def write_state(path: Path, state: FakeNvmlState) -> None:
    """Replace the state file atomically (a new inode: the fake reads it again)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".nvml-state-")
    with os.fdopen(handle, "w") as file:
        file.write(state_text(state))
    os.replace(temporary, path)


def fake_nvml_env(
    library: Path, state: Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """An environment (base, default os.environ) whose processes load the fake NVML."""
    env = dict(os.environ if base is None else base)
    env["LD_LIBRARY_PATH"] = str(library.parent)
    env[STATE_ENV] = str(state)
    return env


def eight_gpus(pids: list[int] | None = None) -> FakeNvmlState:
    """A busy 8-GPU node; `pids` (if any) spread over the GPUs, one per GPU in turn."""
    gpus = [
        FakeGpu(
            uuid=f"GPU-{index:08x}-0000-4000-8000-{index:012x}",
            util_gpu=50 + index,
            util_mem=20 + index,
            mem_used=(10 + index) * GIB,
            power_mw=300_000 + index * 1_000,
            energy_mj=5_000_000_000 + index,
            temp_c=50 + index,
        )
        for index in range(8)
    ]
    for position, pid in enumerate(pids or []):
        gpus[position % len(gpus)].processes.append(FakeProcess(pid, (position + 1) * GIB))
    return FakeNvmlState(gpus=gpus)
