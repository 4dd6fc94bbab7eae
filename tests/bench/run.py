"""`make bench`: the allocation core's cycle times, submissions and node agents' reports over
HTTP and the portal's pages on 10,000 nodes and 100,000 jobs (SQLite and PostgreSQL), the
agent's own CPU per poll, the ledger, jobs through the whole path on a local Ray (one at a
time and in a burst with a control-plane restart), every workload family at loads 0.7, 0.9
and 1.1 under each policy (one table), and the Philly replay under each policy.

Prints one JSON object per benchmark, then a Markdown table of the replays for the README.
The Philly trace is read from ../shared/traces (never copied into the project); without it
the replays are skipped with a message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from scheduler.sim.benchmarks import family_markdown

REPO = Path(__file__).resolve().parents[2]

PHILLY = REPO.parent / "shared" / "traces" / "philly" / "philly.csv"
COLUMNS = [
    ("mean_wait_s", "mean wait (s)", "{:,.0f}"),
    ("p50_wait_s", "p50 wait (s)", "{:,.0f}"),
    ("p99_wait_s", "p99 wait (s)", "{:,.0f}"),
    ("mean_jct_s", "mean JCT (s)", "{:,.0f}"),
    ("utilization", "utilization", "{:.1%}"),
    ("idle_while_waiting_gpu_h", "idle while waiting (GPU-h)", "{:,.0f}"),
    ("guarantee_violation_s", "guarantee violation (s)", "{:,.0f}"),
    ("guarantee_fragmentation_s", "in-quota wait, fragmentation (s)", "{:,.0f}"),
    ("preemptions", "preemptions", "{:,}"),
    ("lost_gpu_h", "work lost to preemption (GPU-h)", "{:,.0f}"),
    ("jain_fairness", "Jain fairness", "{:.3f}"),
    ("wall_s", "wall (s)", "{:.1f}"),
]


def gpupool(*args: str) -> dict[str, object]:
    command = [sys.executable, "-m", "web.cli", *args, "--json"]
    print("$ gpupool " + " ".join(args) + " --json", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        sys.exit(f"gpupool {' '.join(args)} failed:\n{done.stderr}")
    result: dict[str, object] = json.loads(done.stdout)
    print(json.dumps(result), flush=True)
    return result


HTTP_BENCHES = [
    ("api", "--seconds", "20"),
    ("ingest", "--seconds", "15", "--nodes", "10000", "--clients", "64"),
    ("portal", "--nodes", "10000", "--jobs", "100000", "--requests", "50"),
]


def bench_http() -> None:
    """Submissions, agents' reports and portal pages over HTTP on SQLite, then on PostgreSQL:
    the server in GPUPOOL_BENCH_DATABASE_URL, or a throwaway one started like the tests'
    (tests/pg_server.sh)."""
    for bench in HTTP_BENCHES:
        gpupool("bench", *bench)
    url = os.environ.get("GPUPOOL_BENCH_DATABASE_URL")
    if url:
        for bench in HTTP_BENCHES:
            gpupool("bench", *bench, "--database-url", url)
        return
    script = REPO / "tests" / "pg_server.sh"
    started = subprocess.run([str(script), "start"], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        print(
            f"skipped the HTTP benches on PostgreSQL: no server ({started.stderr.strip()})",
            file=sys.stderr,
        )
        return
    env = dict(
        line.removeprefix("export ").split("=", 1) for line in started.stdout.split() if "=" in line
    )
    try:
        for bench in HTTP_BENCHES:
            url = env["GPUPOOL_TEST_DATABASE_URL"].strip("'\"")
            gpupool("bench", *bench, "--database-url", url)
    finally:
        subprocess.run(
            [str(script), "stop", env.get("GPUPOOL_TEST_PG_DIR", "").strip("'\"")],
            check=False,
            capture_output=True,
        )


def main() -> None:
    gpupool("bench", "cycle", "--nodes", "10000", "--pending", "100000", "--projects", "1000")
    bench_http()
    gpupool("bench", "agent", "--polls", "1000")
    gpupool("bench", "ledger", "--entries", "100000")
    gpupool("bench", "dispatch", "--jobs", "50", "--rate", "0.5", "--compare-ray")
    gpupool("bench", "dispatch", "--jobs", "50", "--restart")
    families = gpupool("bench", "families")
    print(f"\nWorkload families (seed {families['seed']}, calib_s {families['calib_s']}):\n")
    print(family_markdown(families))
    if not PHILLY.exists():
        print(f"skipped the Philly replays: {PHILLY} is not there", file=sys.stderr)
        return
    reports = [
        gpupool(
            "simulate",
            "--trace",
            str(PHILLY),
            "--cluster",
            "configs/philly.toml",
            "--policy",
            policy,
        )
        for policy in ("gpupool", "static", "fifo")
    ]
    print("\n| figure | " + " | ".join(str(r["policy"]) for r in reports) + " |")
    print("|---|" + "---:|" * len(reports))
    for key, title, fmt in COLUMNS:
        print(f"| {title} | " + " | ".join(fmt.format(r[key]) for r in reports) + " |")


if __name__ == "__main__":
    main()
