"""The simulated reader: labelled as such, plausible, and showing real jobs' processes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agents.attribution import Attributor
from agents.simulated import SimulatedReader, job_devices
from tests.agents.test_attribution import fake_process


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_simulated_gpus_are_labelled_and_stable(tmp_path: Path) -> None:
    reader = SimulatedReader(3, "demo-node", proc=None, seed=1)
    samples = reader.read()
    assert reader.kind == "simulated" and reader.driver_version() == "simulated"
    assert [s.index for s in samples] == [0, 1, 2]
    assert {s.name for s in samples} == {"Simulated GPU"}
    assert all(s.uuid.startswith("SIM-") for s in samples)
    assert len({s.uuid for s in samples}) == 3
    again = SimulatedReader(3, "demo-node", proc=None, seed=2).read()
    assert [s.uuid for s in again] == [s.uuid for s in samples]  # the same GPUs after a restart
    other_node = SimulatedReader(1, "another", proc=None).read()
    assert other_node[0].uuid != samples[0].uuid


def test_energy_grows_with_power_over_time() -> None:
    clock = Clock()
    reader = SimulatedReader(1, "n", proc=None, clock=clock, seed=3)
    before = reader.read()[0]
    clock.now += 10.0
    after = reader.read()[0]
    assert before.energy_mj is not None and after.energy_mj is not None
    assert after.power_w is not None
    grown = after.energy_mj - before.energy_mj
    assert abs(grown - after.power_w * 10.0 * 1000.0) <= 0.01 * grown + 1_000  # rounding
    clock.now += 0.0
    assert reader.read()[0].energy_mj == after.energy_mj  # no time, no energy


def test_jobs_processes_show_on_their_gpus(tmp_path: Path) -> None:
    job_env = b"GPUPOOL_JOB_ID=12\0GPUPOOL_ATTEMPT=1\0CUDA_VISIBLE_DEVICES=1,3\0"
    fake_process(tmp_path, 100, started=5, environ=job_env)
    fake_process(tmp_path, 101, started=5, environ=b"CUDA_VISIBLE_DEVICES=0\0")  # no job
    fake_process(tmp_path, 102, started=5, environ=b"GPUPOOL_JOB_ID=13\0")  # no GPUs
    (tmp_path / "self").mkdir()
    clock = Clock()
    reader = SimulatedReader(4, "n", proc=tmp_path, clock=clock, seed=4)
    samples = Attributor(tmp_path).attribute(reader.read())
    assert [[p.pid for p in s.processes] for s in samples] == [[], [100], [], [100]]
    shown = samples[1].processes[0]
    assert (shown.job_id, shown.attempt) == ("12", 1)
    assert shown.used_memory_bytes is not None and shown.used_memory_bytes > 0
    for _ in range(20):  # the busy GPUs get busy, the idle ones stay idle
        clock.now += 5
        samples = reader.read()
    busy, idle = samples[1], samples[0]
    assert busy.util_gpu_pct is not None and idle.util_gpu_pct is not None
    assert busy.util_gpu_pct > 50 > idle.util_gpu_pct
    assert busy.mem_used_bytes is not None and busy.mem_used_bytes > 0
    assert idle.mem_used_bytes == 0


def test_real_job_processes_are_found_in_proc(
    job_processes: Callable[[dict[str, str]], int],
) -> None:
    job = job_processes(
        {"GPUPOOL_JOB_ID": "66", "GPUPOOL_ATTEMPT": "2", "CUDA_VISIBLE_DEVICES": "2"}
    )
    samples = Attributor().attribute(SimulatedReader(3, "n").read())
    mine = [(s.index, p.job_id) for s in samples for p in s.processes if p.pid == job]
    assert mine == [(2, "66")]


def test_visible_devices_are_read_as_indices_within_the_node() -> None:
    assert job_devices(b"GPUPOOL_JOB_ID=1\0CUDA_VISIBLE_DEVICES=0,2,9\0", 4) == (0, 2)
    assert job_devices(b"GPUPOOL_JOB_ID=1\0CUDA_VISIBLE_DEVICES=\0", 4) == ()
    assert job_devices(b"GPUPOOL_JOB_ID=1\0CUDA_VISIBLE_DEVICES=GPU-abc\0", 4) == ()
    assert job_devices(b"CUDA_VISIBLE_DEVICES=1\0", 4) == ()
