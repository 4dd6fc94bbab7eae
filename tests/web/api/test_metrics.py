"""GET /metrics: dcgm-exporter's GPU metrics from the agents' reports, and the pool's
gpupool_* gauges, in a format Prometheus' own parser reads."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from web.db import write_session
from web.models import Project

from ..conftest import Api
from .test_agents import Agent, gpu, report, running_job


def scrape(api: Api, user: str = "ops") -> dict[str, list[tuple[dict[str, str], float]]]:
    answer = api.client.get("/metrics", headers=api.headers(user))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_gpu_metrics_carry_dcgm_exporters_names_and_labels_and_the_job_on_each(api: Api) -> None:
    job = running_job(api)
    Agent(api, "h-0").ok(
        report(1, api.clock.now(), gpu(0, jobs=[(job, 1)]), gpu(1, temp_c=None, power_w=None))
    )
    metrics = scrape(api)
    busy = {
        "gpu": "0",
        "UUID": "GPU-0000",
        "device": "nvidia0",
        "modelName": "NVIDIA H100 80GB HBM3",
        "Hostname": "h-0",
        "job": str(job),
        "project": "p1",
    }
    idle = busy | {"gpu": "1", "UUID": "GPU-0001", "device": "nvidia1", "job": "", "project": ""}
    assert metrics["DCGM_FI_DEV_GPU_UTIL"] == [(busy, 50.0), (idle, 50.0)]
    assert metrics["DCGM_FI_DEV_FB_USED"][0] == (busy, 10 * 1024.0)
    assert metrics["DCGM_FI_DEV_FB_FREE"][0] == (busy, 70 * 1024.0)
    assert metrics["DCGM_FI_DEV_POWER_USAGE"] == [(busy, 300.0)]  # GPU 1 did not say: absent
    assert metrics["DCGM_FI_DEV_GPU_TEMP"] == [(busy, 60.0)]
    assert metrics["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"][0] == (busy, 1_000_000.0)
    for name in ("DCGM_FI_DEV_MEM_COPY_UTIL", "gpupool_gpu_foreign_processes"):
        assert name in metrics


def test_foreign_processes_and_the_last_xid_are_shown(api: Api) -> None:
    stranger = gpu(0, xids=[{"xid": 13, "at": api.clock.now()}])
    stranger["processes"] = [{"pid": 4242, "used_memory_bytes": 1024}]
    Agent(api, "h-0").ok(report(1, api.clock.now(), stranger))
    metrics = scrape(api)
    [(labels, count)] = metrics["gpupool_gpu_foreign_processes"]
    assert (labels["Hostname"], count) == ("h-0", 1.0)
    assert [value for _, value in metrics["DCGM_FI_DEV_XID_ERRORS"]] == [13.0]


def test_pool_gauges_queue_allocations_quotas_credits_nodes(api: Api) -> None:
    with write_session(api.engine) as s:
        project = s.get(Project, "p1")
        assert project is not None
        project.credits_earned = 25.0  # lending rewards count in what is left
    running_job(api, gpus=2)
    api.submit("alice", gpus=3)
    metrics = scrape(api, "admin")

    def value(name: str, **labels: str) -> float:
        found = [v for have, v in metrics[name] if labels.items() <= have.items()]
        assert len(found) == 1, (name, labels, metrics.get(name))
        return found[0]

    assert value("gpupool_queue_length", project="p1", flavor="*") == 1
    assert value("gpupool_queue_gpus", project="p1", flavor="*") == 3
    assert value("gpupool_allocated_gpus", project="p1", flavor="H100") == 2
    assert value("gpupool_borrowed_gpus", project="p1", flavor="H100") == 0
    assert value("gpupool_guaranteed_gpus", project="p1", flavor="H100") == 8
    assert value("gpupool_limit_gpus", project="p1", flavor="H100") == 16
    assert value("gpupool_credits_left", project="p1") == 1025
    assert value("gpupool_nodes", state="up", flavor="H100") == 2
    assert value("gpupool_nodes", state="down", flavor="H100") == 0
    assert value("gpupool_node_gpus", state="up", flavor="A100") == 8


def test_metrics_are_for_operators_and_admins(api: Api) -> None:
    assert api.client.get("/metrics", headers=api.headers("alice")).status_code == 403
    assert api.client.get("/metrics").status_code == 401
