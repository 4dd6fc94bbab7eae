"""`gpupool bench ledger`: the ledger's three costs on a scratch SQLite database.

- append_per_s: N charge entries (one job attempt each, as metering writes them at an
  attempt's end) appended through ledger.append in batches of APPEND_BATCH, one
  transaction each (the head row locked, the project's totals moved), as the scheduling
  loop appends the attempts that ended in one cycle;
- verify_entries_per_s: check_chain over all N entries, read back in id order beforehand
  (read_entries_per_s: that reading, ledger.stream);
- statement_s: a signed statement of the one project (N jobs) for the month they fell in,
  built and rendered as its signed JSON.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from web.db import make_engine, migrate, read_session, write_session
from web.models import Project, Role, Sector, User
from web.services import ledger, signing, statements
from web.services.auth import Principal
from web.settings import Settings

APPEND_BATCH = 200
START = 1_790_000_000.0  # 2026-09-21 UTC; every job ends in 2026-09 or 2026-10
PROJECT = "bench"
PERIOD = "2026"


def bench_ledger(entries: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gpupool-bench-ledger-") as scratch:
        settings = Settings(data_dir=Path(scratch))
        engine = make_engine(settings)
        try:
            migrate(engine)
            with write_session(engine) as session:
                session.add(Sector(name="research"))
                session.add(User(name="pi", role="researcher"))
                session.flush()
                session.add(Project(name=PROJECT, title="Bench", sector="research", pi="pi"))

            started = time.perf_counter()
            for first in range(0, entries, APPEND_BATCH):
                batch = [
                    _charge(job) for job in range(first + 1, min(entries, first + APPEND_BATCH) + 1)
                ]
                with write_session(engine) as session:
                    ledger.append(session, batch)
            append_s = time.perf_counter() - started

            started = time.perf_counter()
            with read_session(engine) as session:
                chain = list(ledger.stream(session))
            read_s = time.perf_counter() - started
            started = time.perf_counter()
            problem = ledger.check_chain(chain)
            verify_s = time.perf_counter() - started
            del chain
            if problem is not None:
                raise RuntimeError(f"the bench's own ledger does not verify: {problem}")

            key = signing.pool_key(settings.statement_key_path)
            admin = Principal("bench", Role.ADMIN)
            started = time.perf_counter()
            with read_session(engine) as session:
                statement = statements.build_statement(
                    session, admin, PROJECT, PERIOD, key, time.time()
                )
                body = statement.json
            statement_s = time.perf_counter() - started
        finally:
            engine.dispose()
    return {
        "entries": entries,
        "append_batch": APPEND_BATCH,
        "append_per_s": round(entries / append_s),
        "verify_entries_per_s": round(entries / verify_s),
        "read_entries_per_s": round(entries / read_s),
        "statement_jobs": statement.content["totals"]["jobs"],
        "statement_bytes": len(body),
        "statement_s": round(statement_s, 3),
    }


def _charge(job: int) -> dict[str, Any]:
    gpus = 1 + job % 8
    seconds = 600.0 + (job * 37) % 7200
    gpu_s = gpus * seconds
    at = START + job * 2.5
    return {
        "at": at,
        "kind": "charge",
        "project": PROJECT,
        "amount": -gpu_s / 3600.0 * 2.0,
        "period": time.strftime("%Y-%m", time.gmtime(at)),
        "job_id": job,
        "attempt": 1,
        "user": f"user{job % 17}",
        "flavor": "H100" if job % 3 else "A100",
        "gpu_s": gpu_s,
        "borrowed": job % 5 == 0,
        "energy_j": gpu_s * 350.0,
        "util_gpu_s": gpu_s,
        "busy_gpu_s": gpu_s * ((job * 13) % 100) / 100.0,
        "idle_gpu_s": gpu_s * 0.1 if job % 7 == 0 else 0.0,
        "outcome": "succeeded",
        "actor": "scheduler",
    }
