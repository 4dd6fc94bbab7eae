"""NvmlReader through the real pynvml against the fake libnvidia-ml.so.1 (tests/agents/
fake_nvml.c), in subprocesses started with LD_LIBRARY_PATH on it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.agents.conftest import REPO, NvmlProbe, agent_env
from tests.agents.fake_nvml import (
    FUNCTION_NOT_FOUND,
    GIB,
    GPU_IS_LOST,
    NOT_SUPPORTED,
    UNKNOWN,
    FakeFailure,
    FakeGpu,
    FakeMigDevice,
    FakeNvmlState,
    FakeProcess,
    FakeXid,
    eight_gpus,
    fake_nvml_env,
    write_state,
)

Probe = Callable[[FakeNvmlState], NvmlProbe]


def test_every_field_is_read_in_its_unit(nvml_probe: Probe) -> None:
    gpu = FakeGpu(
        uuid="GPU-11111111-2222-3333-4444-555555555555",
        name="NVIDIA H100 80GB HBM3",
        util_gpu=87,
        util_mem=41,
        mem_total=80 * GIB,
        mem_used=12 * GIB,
        mem_reserved=GIB // 2,
        power_mw=312_456,
        energy_mj=98_765_432_101,
        temp_c=67,
        ecc_corrected=5,
        ecc_uncorrected=1,
    )
    probe = nvml_probe(FakeNvmlState(gpus=[gpu, FakeGpu(uuid="GPU-b")], driver_version="555.42"))
    assert probe.started == {"driver": "555.42"}
    first, second = probe.poll()
    assert first == {
        "index": 0,
        "uuid": "GPU-11111111-2222-3333-4444-555555555555",
        "name": "NVIDIA H100 80GB HBM3",
        "mig_parent_uuid": None,
        "util_gpu_pct": 87.0,
        "util_mem_pct": 41.0,
        "mem_used_bytes": 12 * GIB,  # nvmlMemory_v2: what the driver reserves is not "used"
        "mem_total_bytes": 80 * GIB,
        "power_w": 312.456,
        "energy_mj": 98_765_432_101,
        "temp_c": 67.0,
        "ecc_corrected": 5,
        "ecc_uncorrected": 1,
        "xids": [],
        "processes": [],
        "errors": {},
    }
    assert (second["index"], second["uuid"]) == (1, "GPU-b")


def test_values_are_read_again_at_each_poll(nvml_probe: Probe, state_path: Path) -> None:
    state = FakeNvmlState(gpus=[FakeGpu(uuid="GPU-a", util_gpu=10, energy_mj=1_000)])
    probe = nvml_probe(state)
    assert probe.poll()[0]["util_gpu_pct"] == 10
    state.gpus[0].util_gpu, state.gpus[0].energy_mj = 95, 2_500
    write_state(state_path, state)
    sample = probe.poll()[0]
    assert (sample["util_gpu_pct"], sample["energy_mj"]) == (95, 2_500)


def test_an_unsupported_field_is_absent_not_zero(nvml_probe: Probe) -> None:
    state = FakeNvmlState(
        gpus=[FakeGpu(uuid="GPU-a", ecc_corrected=3), FakeGpu(uuid="GPU-b", ecc_corrected=3)],
        failures=[
            FakeFailure("nvmlDeviceGetTotalEccErrors", NOT_SUPPORTED, gpu=0),
            FakeFailure("nvmlDeviceGetTotalEnergyConsumption", FUNCTION_NOT_FOUND, gpu=0),
        ],
    )
    unsupported, supported = nvml_probe(state).poll()
    assert unsupported["ecc_corrected"] is None
    assert unsupported["ecc_uncorrected"] is None
    assert unsupported["energy_mj"] is None
    assert unsupported["errors"] == {}  # not supported is not an error
    assert unsupported["power_w"] == 70.0  # the rest is still read
    assert (supported["ecc_corrected"], supported["errors"]) == (3, {})


def test_an_nvml_error_leaves_the_field_absent_and_says_why(nvml_probe: Probe) -> None:
    state = FakeNvmlState(
        gpus=[FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")],
        failures=[
            FakeFailure("nvmlDeviceGetPowerUsage", UNKNOWN, gpu=0),
            FakeFailure("nvmlDeviceGetUtilizationRates", GPU_IS_LOST, gpu=0),
            FakeFailure("nvmlDeviceGetComputeRunningProcesses_v3", UNKNOWN, gpu=0),
        ],
    )
    failing, healthy = nvml_probe(state).poll()
    assert failing["power_w"] is None
    assert failing["util_gpu_pct"] is None and failing["util_mem_pct"] is None
    assert failing["errors"] == {
        "power_w": "Unknown Error",
        "util_gpu_pct": "GPU is lost",
        "util_mem_pct": "GPU is lost",
        "processes": "Unknown Error",
    }
    assert failing["temp_c"] == 35.0
    assert healthy["errors"] == {} and healthy["power_w"] == 70.0


def test_a_driver_without_the_newer_calls_is_read_with_the_older_ones(nvml_probe: Probe) -> None:
    gpu = FakeGpu(uuid="GPU-a", mem_used=4 * GIB, mem_reserved=GIB, temp_c=44)
    state = FakeNvmlState(
        gpus=[gpu],
        failures=[
            FakeFailure("nvmlDeviceGetMemoryInfo_v2", FUNCTION_NOT_FOUND),
            FakeFailure("nvmlDeviceGetTemperatureV", FUNCTION_NOT_FOUND),
        ],
    )
    sample = nvml_probe(state).poll()[0]
    assert sample["mem_used_bytes"] == 5 * GIB  # nvmlMemory_t's used counts the reserved part
    assert sample["temp_c"] == 44.0
    assert sample["errors"] == {}


def test_processes_with_their_memory_and_jobs(
    nvml_probe: Probe, job_processes: Callable[[dict[str, str]], int]
) -> None:
    job = job_processes({"GPUPOOL_JOB_ID": "4711", "GPUPOOL_ATTEMPT": "2"})
    other = job_processes({})
    gpus = [
        FakeGpu(uuid="GPU-a", processes=[FakeProcess(job, 30 * GIB), FakeProcess(other, GIB)]),
        FakeGpu(uuid="GPU-b", processes=[FakeProcess(job, 20 * GIB)]),
        FakeGpu(uuid="GPU-c"),
    ]
    first, second, third = nvml_probe(FakeNvmlState(gpus=gpus)).poll()
    assert first["processes"] == [
        {"pid": job, "used_memory_bytes": 30 * GIB, "job_id": "4711", "attempt": 2, "note": ""},
        {"pid": other, "used_memory_bytes": GIB, "job_id": None, "attempt": None, "note": ""},
    ]
    assert [(p["pid"], p["job_id"]) for p in second["processes"]] == [(job, "4711")]
    assert third["processes"] == []


def test_a_process_that_ended_is_reported_without_a_job(nvml_probe: Probe) -> None:
    gone_pid = int(Path("/proc/sys/kernel/pid_max").read_text())  # pids stay below it
    state = FakeNvmlState(gpus=[FakeGpu(uuid="GPU-a", processes=[FakeProcess(gone_pid)])])
    (sample,) = nvml_probe(state).poll()
    assert sample["processes"][0]["job_id"] is None
    assert "ended" in sample["processes"][0]["note"]


def test_mig_devices_are_listed_under_their_gpu(
    nvml_probe: Probe, job_processes: Callable[[dict[str, str]], int]
) -> None:
    job = job_processes({"GPUPOOL_JOB_ID": "9", "GPUPOOL_ATTEMPT": "1"})
    migs = [
        FakeMigDevice(uuid="MIG-aaaa", mem_total=10 * GIB, mem_used=3 * GIB),
        FakeMigDevice(uuid="MIG-bbbb", processes=[FakeProcess(job, 2 * GIB)]),
    ]
    gpus = [
        FakeGpu(uuid="GPU-plain", mig_mode=False, processes=[FakeProcess(job)]),
        FakeGpu(uuid="GPU-mig", mig_mode=True, mig_devices=migs, power_mw=250_000),
    ]
    plain, parent, mig_a, mig_b = nvml_probe(FakeNvmlState(gpus=gpus)).poll()
    assert (plain["uuid"], plain["mig_parent_uuid"], len(plain["processes"])) == (
        "GPU-plain",
        None,
        1,
    )
    assert parent["uuid"] == "GPU-mig" and parent["mig_parent_uuid"] is None
    assert parent["power_w"] == 250.0
    assert parent["util_gpu_pct"] is None and parent["errors"] == {}  # NVML: not in MIG mode
    assert parent["processes"] == []  # they are listed on the MIG devices, not twice
    for mig in (mig_a, mig_b):
        assert (mig["index"], mig["mig_parent_uuid"]) == (1, "GPU-mig")
        assert mig["power_w"] is None and mig["errors"] == {}
    assert (mig_a["uuid"], mig_a["mem_used_bytes"], mig_a["mem_total_bytes"]) == (
        "MIG-aaaa",
        3 * GIB,
        10 * GIB,
    )
    assert mig_a["processes"] == []
    assert [(p["pid"], p["job_id"], p["used_memory_bytes"]) for p in mig_b["processes"]] == [
        (job, "9", 2 * GIB)
    ]


def test_xid_events_are_delivered_once(nvml_probe: Probe, state_path: Path) -> None:
    state = FakeNvmlState(gpus=[FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")])
    probe = nvml_probe(state)
    assert [s["xids"] for s in probe.poll()] == [[], []]
    state.xids += [FakeXid(gpu=1, xid=79), FakeXid(gpu=1, xid=48), FakeXid(gpu=0, xid=13)]
    write_state(state_path, state)
    first, second = probe.poll()
    assert [x["xid"] for x in first["xids"]] == [13]
    assert [x["xid"] for x in second["xids"]] == [79, 48]
    assert all(x["at"] > 1e9 for x in first["xids"] + second["xids"])
    assert [s["xids"] for s in probe.poll()] == [[], []]  # not again
    state.xids.append(FakeXid(gpu=0, xid=94))
    write_state(state_path, state)
    assert [[x["xid"] for x in s["xids"]] for s in probe.poll()] == [[94], []]


def test_xids_not_watched_are_said_so(nvml_probe: Probe) -> None:
    state = FakeNvmlState(
        gpus=[FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")],
        failures=[FakeFailure("nvmlDeviceRegisterEvents", UNKNOWN, gpu=1)],
    )
    probe = nvml_probe(state)
    for _ in range(2):  # on every poll, not once
        first, second = probe.poll()
        assert first["errors"] == {}
        assert second["errors"] == {"xids": "cannot watch Xid events: Unknown Error"}


def test_no_event_set_means_no_xid_and_says_so(nvml_probe: Probe) -> None:
    state = FakeNvmlState(
        gpus=[FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")],
        failures=[FakeFailure("nvmlEventSetCreate", UNKNOWN)],
    )
    samples = nvml_probe(state).poll()
    assert [s["errors"] for s in samples] == [
        {"xids": "cannot watch Xid events: Unknown Error"}
    ] * 2
    assert samples[0]["power_w"] == 70.0


def test_a_gpu_nvml_cannot_open_is_reported_and_tried_again(
    nvml_probe: Probe, state_path: Path
) -> None:
    state = FakeNvmlState(
        gpus=[FakeGpu(uuid="GPU-a", util_gpu=12)],
        failures=[FakeFailure("nvmlDeviceGetHandleByIndex_v2", GPU_IS_LOST)],
    )
    probe = nvml_probe(state)
    (lost,) = probe.poll()
    assert (lost["uuid"], lost["util_gpu_pct"], lost["errors"]) == (
        "unknown-gpu-0",
        None,
        {"handle": "GPU is lost"},
    )
    state.failures.clear()
    write_state(state_path, state)
    (back,) = probe.poll()
    assert (back["uuid"], back["util_gpu_pct"], back["errors"]) == ("GPU-a", 12.0, {})


def test_a_value_outside_the_schema_is_absent_with_a_reason(nvml_probe: Probe) -> None:
    state = FakeNvmlState(gpus=[FakeGpu(uuid="GPU-a", util_gpu=4_294_967_295)])
    (sample,) = nvml_probe(state).poll()
    assert sample["util_gpu_pct"] is None
    assert sample["errors"] == {"util_gpu_pct": "NVML returned 4294967295, outside 0..100"}


def test_numbers_past_the_schemas_bounds_are_absent_with_a_reason(nvml_probe: Probe) -> None:
    """A GPU (or a driver bug) reporting more than the schema's bounds never makes the poll
    fail: the field is absent and says what NVML returned."""
    big = 2**50
    gpu = FakeGpu(
        uuid="GPU-a",
        mem_total=big,
        mem_used=big,
        power_mw=4_294_967_295,  # 4.3 MW
        energy_mj=-1,  # 2**64 - 1 as NVML's unsigned long long
        ecc_corrected=-1,
        ecc_uncorrected=2**60,
        processes=[FakeProcess(pid=4242, used_memory_bytes=2**62)],
    )
    (sample,) = nvml_probe(FakeNvmlState(gpus=[gpu])).poll()
    fields = ("mem_used_bytes", "mem_total_bytes", "power_w", "energy_mj")
    fields += ("ecc_corrected", "ecc_uncorrected")
    assert [sample[name] for name in fields] == [None] * len(fields)
    assert sample["errors"] == {
        "mem_used_bytes": f"NVML returned {big}, outside 0..{2**44}",
        "mem_total_bytes": f"NVML returned {big}, outside 0..{2**44}",
        "power_w": "NVML returned 4294967.295, outside 0..10000.0",
        "energy_mj": f"NVML returned {2**64 - 1}, outside 0..{2**53 - 1}",
        "ecc_corrected": f"NVML returned {2**64 - 1}, outside 0..{2**53 - 1}",
        "ecc_uncorrected": f"NVML returned {2**60}, outside 0..{2**53 - 1}",
    }
    assert [(p["pid"], p["used_memory_bytes"]) for p in sample["processes"]] == [(4242, None)]


def test_nvml_that_does_not_start_is_a_clear_error(nvml_probe: Probe) -> None:
    state = FakeNvmlState(failures=[FakeFailure("nvmlInitWithFlags", 9)])  # driver not loaded
    message = nvml_probe(state).started["unavailable"]
    assert message.startswith("NVML did not start (Driver Not Loaded): check the NVIDIA driver")
    assert "--simulated-gpus N" in message


def test_the_cli_without_nvml_says_what_to_do(tmp_path: Path) -> None:
    empty = tmp_path / "no-nvml-here"
    empty.mkdir()
    env = agent_env(tmp_path, fake_nvml_env(empty / "libnvidia-ml.so.1", tmp_path / "absent"))
    done = subprocess.run(
        [sys.executable, "-m", "web.cli", "agent", "--once"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: NVML (libnvidia-ml.so.1) was not found: install the NVIDIA")
    assert "--simulated-gpus N" in lines[0]
    assert "Traceback" not in done.stderr


def test_the_cli_prints_one_poll_of_the_fake_gpus(
    fake_nvml: Path,
    state_path: Path,
    tmp_path: Path,
    job_processes: Callable[[dict[str, str]], int],
) -> None:
    job = job_processes({"GPUPOOL_JOB_ID": "77", "GPUPOOL_ATTEMPT": "1"})
    write_state(state_path, eight_gpus([job]))
    done = subprocess.run(
        [sys.executable, "-m", "web.cli", "agent", "--once", "--node", "gpu-07"],
        cwd=REPO,
        env=agent_env(tmp_path, fake_nvml_env(fake_nvml, state_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["seq"], report["reader"], report["driver_version"]) == (1, "nvml", "550.54.15")
    assert len(report["gpus"]) == 8
    assert [(p["pid"], p["job_id"]) for p in report["gpus"][0]["processes"]] == [(job, "77")]
