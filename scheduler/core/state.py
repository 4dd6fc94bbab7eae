"""The scheduler's in-memory view of the pool, kept up to date between cycles.

A `SchedulerState` is built once from a `Snapshot` and then told what happens (a job
arrives, finishes, is cancelled; a node changes state), so a cycle only looks at what
matters now instead of rebuilding indices from scratch. `cycle.run_cycle` reads it and
assumes its own admissions and preemptions into it, as Kueue's cache does.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from fractions import Fraction

from scheduler.core.fairshare import LN2, DecayedUsage, normalized_shares
from scheduler.core.placement import FlavorPool, gang_sizes
from scheduler.core.policy import Policy
from scheduler.core.queues import JobQueue, QueueKey
from scheduler.core.types import (
    ANY_FLAVOR,
    FlavorQuota,
    Job,
    Node,
    NodeState,
    Piece,
    Project,
    Reason,
    ReasonBook,
    ReasonCode,
    Running,
    Sector,
    Snapshot,
    credits_for,
)

NO_QUOTA = FlavorQuota(guaranteed=0, limit=0)


@dataclass(slots=True)
class Holding:
    """GPUs one project holds of one flavor, in admission order (oldest first)."""

    gpus: int = 0
    allocations: list[tuple[float, str]] | None = None  # (start, job id), sorted

    def add(self, start: float, job_id: str, gpus: int) -> None:
        if self.allocations is None:
            self.allocations = []
        insort(self.allocations, (start, job_id))
        self.gpus += gpus

    def remove(self, start: float, job_id: str, gpus: int) -> None:
        assert self.allocations is not None
        i = bisect_left(self.allocations, (start, job_id))
        del self.allocations[i]
        self.gpus -= gpus


@dataclass(frozen=True, slots=True)
class FlavorShape:
    largest: int  # GPUs of the largest node
    total: int
    nodes: int


@dataclass(frozen=True, slots=True)
class Reclaim:
    """An in-quota job waiting for the borrowers it preempted to stop."""

    project: str
    flavor: str
    gpus: int
    victims: frozenset[str]
    # GPUs free on the chosen nodes that the job counts on: free there already, or freed by
    # a victim that stopped before the others. Held for the job until it starts.
    counted_free: tuple[Piece, ...] = ()
    nodes: frozenset[str] = frozenset()  # the nodes the reclaim chose


class SchedulerState:
    def __init__(self, snapshot: Snapshot, policy: Policy) -> None:
        self.policy = policy
        self.nodes: dict[str, Node] = {}
        self.pools: dict[str, FlavorPool] = {}
        self.flavor_shape: dict[str, FlavorShape] = {}
        self.sectors: dict[str, Sector] = {s.name: s for s in snapshot.sectors}
        self.projects: dict[str, Project] = {}
        self.usage: dict[str, DecayedUsage] = {}
        self.queues: dict[QueueKey, JobQueue] = {}
        self.queue_of: dict[str, QueueKey] = {}
        self.running: dict[str, Running] = {}
        self.holdings: dict[QueueKey, Holding] = defaultdict(Holding)
        self.held_by_project: dict[str, int] = defaultdict(int)
        self.held_by_sector: dict[str, int] = defaultdict(int)
        # flavor -> project -> GPUs held above its guarantee (only projects above it)
        self.excess: dict[str, dict[str, int]] = defaultdict(dict)
        self.excess_total: dict[str, int] = defaultdict(int)
        # (expected end, job id) of running jobs per flavor, for backfill estimates.
        self.ends: dict[str, list[tuple[float, str]]] = defaultdict(list)
        # in-quota job -> the borrowers stopping so it can start
        self.reclaims: dict[str, Reclaim] = {}
        self.new_rejections: dict[str, Reason] = {}
        self.victim_of: dict[str, str] = {}  # stopping borrower -> the job it makes room for
        self.claims_ready: set[str] = set()  # reclaims whose victims have all stopped
        self.claims_holding_free: set[str] = set()  # reclaims with free GPUs to hold
        self.reservation_holder: dict[str, str] = {}  # flavor -> job with the reservation
        self.sector_share: dict[str, float] = {}
        self.project_share: dict[str, float] = {}
        # Credits committed to running jobs, per project with a budget: each job's GPUs x
        # its flavor's rate x its whole limit (start to latest_end). Its use so far is not
        # charged yet (the ledger charges an attempt when it ends), so what it may still
        # use and what it has used are committed alike. Exact fractions: any order of
        # admissions and ends gives the same sum, so this state and a rebuild agree.
        self.committed: dict[str, Fraction] = {}
        # Running jobs whose commitment is unknowable (a rate or time that is no finite
        # number, from a bad row): their projects may start nothing more on credit.
        self.unpriced: dict[str, int] = defaultdict(int)
        self._credits_free: dict[str, float] = {}  # cache of credits_free, per project
        self._fit_cache: dict[tuple[str, str, int, int | None], Reason | None] = {}
        self.reasons = ReasonBook()
        self.cycles = 0
        # What changed since the last cycle (see take_changes).
        self.full_cycle_due = True
        self.last_full_cycle: float | None = None
        self.freed_flavors: set[str] = set()
        self.changed_queues: set[QueueKey] = set()

        self.set_nodes(snapshot.nodes)
        self.set_projects(snapshot.projects)
        self.add_runnings(snapshot.running)
        self.add_jobs(snapshot.pending)
        self._restore_reclaims(snapshot.running)
        for flavor, job_id in snapshot.reserved:
            if job_id in self.queue_of:
                self.reservation_holder[flavor] = job_id

    def _restore_reclaims(self, running: Iterable[Running]) -> None:
        """Jobs already stopping for a waiting job (a snapshot taken mid-reclaim)."""
        victims: dict[str, list[Running]] = defaultdict(list)
        for run in running:
            if run.stopping_at is not None and run.preempted_for is not None:
                victims[run.preempted_for].append(run)
        for job_id, runs in sorted(victims.items()):
            job = self.pending_job(job_id)
            pool = self.pools.get(runs[0].flavor)
            if job is None or pool is None:
                continue
            # The GPUs already free beside the victims were counted on too: hold them again.
            piece = max(gang_sizes(job.gpus, job.nodes, pool.max_gpus))
            nodes = sorted({name for r in runs for name, _ in r.pieces if name in pool.index})
            counted = tuple(
                (name, min(pool.free[pool.index[name]], piece))
                for name in nodes
                if pool.free[pool.index[name]] > 0
            )
            victim_ids = frozenset(r.job_id for r in runs)
            self.add_reclaim(
                job_id,
                Reclaim(job.project, pool.flavor, job.gpus, victim_ids, counted, frozenset(nodes)),
            )

    # -- what changed ----------------------------------------------------------------------

    def take_changes(self, now: float) -> tuple[bool, set[str], set[QueueKey]]:
        """(full cycle?, flavors that gained free GPUs, queues that changed), then forget them.

        A full cycle is due at the start, after nodes or projects changed, and once every
        policy.full_cycle_interval_s; in between, a cycle looks only at what changed.
        """
        interval = self.policy.full_cycle_interval_s
        full = (
            self.full_cycle_due
            or self.last_full_cycle is None
            or now - self.last_full_cycle >= interval
        )
        if full:
            self.last_full_cycle = now
        changes = (full, self.freed_flavors, self.changed_queues)
        self.full_cycle_due = False
        self.freed_flavors, self.changed_queues = set(), set()
        return changes

    # -- the pool --------------------------------------------------------------------------

    def set_nodes(self, nodes: Iterable[Node]) -> None:
        """Replace the node list (rare: a node joins, leaves or changes state)."""
        self.nodes = {n.name: n for n in nodes}
        self.full_cycle_due = True
        self._fit_cache.clear()
        by_flavor: dict[str, list[Node]] = defaultdict(list)
        for node in self.nodes.values():
            by_flavor[node.flavor].append(node)
        self.pools = {
            flavor: FlavorPool(flavor, [n for n in members if n.state is NodeState.UP])
            for flavor, members in sorted(by_flavor.items())
        }
        # Over all nodes, whatever their state: what could ever be placed.
        self.flavor_shape = {
            flavor: FlavorShape(
                largest=max(n.gpus for n in members),
                total=sum(n.gpus for n in members),
                nodes=len(members),
            )
            for flavor, members in by_flavor.items()
        }
        for run in self.running.values():
            self._pool_take(run)

    def set_node_state(self, name: str, state: NodeState) -> None:
        node = self.nodes[name]
        self.set_nodes(
            [*(n for n in self.nodes.values() if n.name != name), replace(node, state=state)]
        )

    def _pool_take(self, run: Running) -> None:
        pool = self.pools.get(run.flavor)
        if pool is not None:
            pool.take((name, n) for name, n in run.pieces if name in pool.index)

    # -- projects and usage ----------------------------------------------------------------

    def set_projects(self, projects: Iterable[Project]) -> None:
        """Add or update projects (quotas, credits, shares, usage)."""
        updated: set[str] = set()
        for project in projects:
            updated.add(project.name)
            before = self.projects.get(project.name)
            if before is not None and before.sector != project.sector:
                held = self.held_by_project[project.name]  # its GPUs move with it
                self.held_by_sector[before.sector] -= held
                self.held_by_sector[project.sector] += held
            self.projects[project.name] = project
            self.sectors.setdefault(project.sector, Sector(project.sector))
            self.usage[project.name] = DecayedUsage(
                self.policy.half_life_s, project.usage_gpu_s, project.usage_at
            )
        for owner, flavor in list(self.holdings):
            self._update_excess(owner, flavor)
        self._recommit(sorted(updated))
        self.full_cycle_due = True
        self._fit_cache.clear()
        self.sector_share, self.project_share = normalized_shares(
            self.sectors.values(), self.projects.values()
        )

    # -- credits -----------------------------------------------------------------------------

    def _recommit(self, names: list[str]) -> None:
        """Recount the commitments of these projects (their budget or rates changed)."""
        for name in names:
            self._credits_free.pop(name, None)
            self.unpriced.pop(name, None)
            if self.projects[name].credits_left is None:
                self.committed.pop(name, None)
            else:
                self.committed[name] = Fraction(0)
        recount = {name for name in names if name in self.committed}
        if recount:
            for run in self.running.values():
                if run.project in recount:
                    self._commit(run, +1)

    def _commitment(self, run: Running) -> Fraction | None:
        """GPUs x rate x (latest end - start), exactly; None when that is no number."""
        rate, start, end = self.credit_rate(run.project, run.flavor), run.start, run.latest_end
        if not (math.isfinite(rate) and math.isfinite(start) and math.isfinite(end)):
            return None
        span = max(Fraction(end) - Fraction(start), Fraction(0))
        return run.gpus * Fraction(max(rate, 0.0)) * span / 3600

    def _commit(self, run: Running, sign: int) -> None:
        """Add (+1) or release (-1) a running job's commitment."""
        project = run.project
        if project not in self.committed:
            return  # no budget
        commitment = self._commitment(run)
        if commitment is None:
            self.unpriced[project] += sign
        else:
            self.committed[project] += sign * commitment
        self._credits_free.pop(project, None)
        self._credits_moved(project)

    def _credits_moved(self, project: str) -> None:
        # Any queue of the project may now start, or not, where it could not before.
        self.changed_queues.update(key for key in self.queues if key[0] == project)

    def credit_rate(self, project: str, flavor: str) -> float:
        return self.quota(project, flavor).credit_rate

    def credits_free(self, project: str) -> float | None:
        """Credits the project may still commit: what it has left less what its running
        jobs are committed to; None when it has no budget."""
        free = self._credits_free.get(project)
        if free is None:
            known = self.projects.get(project)
            if known is None or known.credits_left is None:
                return None
            left = known.credits_left
            if self.unpriced.get(project):
                free = math.nan
            elif math.isfinite(left):
                free = float(Fraction(left) - self.committed.get(project, Fraction(0)))
            else:  # an infinite budget stays one; NaN blocks every job (never <= NaN)
                free = left
            self._credits_free[project] = free
        return free

    def affords(self, project: str, need: float) -> bool:
        """May the project commit `need` more credits? (True without a budget.)"""
        free = self.credits_free(project)
        if free is None:
            return True
        # Rounding of the binary fractions must not refuse a job that exactly fits.
        return need <= free + 1e-9 * max(1.0, abs(free))

    def committed_from(self, project: str, now: float) -> float:
        """Credits the project's running jobs may still use from `now` to their ends."""
        parts = []
        for (owner, flavor), holding in sorted(self.holdings.items()):
            if owner != project or not holding.allocations:
                continue
            rate = self.credit_rate(project, flavor)
            for _, job_id in holding.allocations:
                run = self.running[job_id]
                remaining = max(run.latest_end - max(now, run.start), 0.0)
                parts.append(credits_for(run.gpus, remaining, max(rate, 0.0)))
        return math.fsum(part for part in parts if math.isfinite(part))

    def charge(self, project: str, credits: float) -> None:
        """Take credits a project used from what it has left (the simulator's ledger; the
        service's snapshot reads the ledger's balance instead)."""
        known = self.projects.get(project)
        if known is None or known.credits_left is None or not credits:
            return
        self.projects[project] = replace(known, credits_left=known.credits_left - credits)
        self._credits_free.pop(project, None)
        self._credits_moved(project)

    def record_usage(self, project: str, gpu_seconds: float, at: float) -> None:
        usage = self.usage.get(project)
        if usage is not None:
            usage.add(gpu_seconds, at)

    def recent_gpus(self, project: str, now: float) -> float:
        """Decayed past usage as an average GPU count."""
        usage = self.usage.get(project)
        if usage is None:
            return 0.0
        return usage.value(now) * LN2 / max(self.policy.half_life_s, 1.0)

    def quota(self, project: str, flavor: str) -> FlavorQuota:
        p = self.projects.get(project)
        return NO_QUOTA if p is None else p.quotas.get(flavor, NO_QUOTA)

    def ceiling(self, project: str, flavor: str) -> int:
        """The most GPUs of `flavor` the project may hold under this policy."""
        quota = self.quota(project, flavor)
        return quota.limit if self.policy.borrowing else quota.guaranteed

    # -- pending jobs ----------------------------------------------------------------------

    def add_job(self, job: Job) -> Reason | None:
        """Queue a job, or reject it (returned, and reported by the next plan)."""
        reason = self.never_fits(job)
        if reason is not None:
            self.new_rejections[job.id] = reason
            return reason
        if job.id in self.queue_of:
            raise ValueError(f"job {job.id} is already queued")
        key = (job.project, job.flavor)
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = JobQueue(key, self.policy.ordering)
        queue.add(job)
        self.queue_of[job.id] = key
        self.changed_queues.add(key)
        return None

    def add_jobs(self, jobs: Iterable[Job]) -> None:
        """Queue many jobs at once (sorting each queue once)."""
        grouped: dict[QueueKey, list[Job]] = defaultdict(list)
        fits, queue_of = self._fit_cache, self.queue_of
        for job in jobs:
            fit_key = (job.project, job.flavor, job.gpus, job.nodes)
            reason = fits[fit_key] if fit_key in fits else self.never_fits(job)
            if reason is not None:
                self.new_rejections[job.id] = reason
                continue
            if job.id in queue_of:
                raise ValueError(f"job {job.id} is already queued")
            key = fit_key[:2]
            grouped[key].append(job)
            queue_of[job.id] = key
        for key, members in grouped.items():
            queue = self.queues.get(key)
            if queue is None:
                queue = self.queues[key] = JobQueue(key, self.policy.ordering)
            queue.extend(members)
            self.changed_queues.add(key)

    def remove_job(self, job_id: str) -> Job | None:
        """Take a pending job out of its queue (cancelled or admitted)."""
        key = self.queue_of.pop(job_id, None)
        if key is None:
            return None
        self.drop_reclaim(job_id)
        self.reasons.forget(job_id)
        for flavor in [f for f, holder in self.reservation_holder.items() if holder == job_id]:
            del self.reservation_holder[flavor]
        queue = self.queues[key]
        job = queue.remove(job_id)
        if not len(queue):
            del self.queues[key]
            self.reasons.forget_queue(key)
        return job

    def never_fits(self, job: Job) -> Reason | None:
        """Why this job can never be placed in this pool, or None."""
        key = (job.project, job.flavor, job.gpus, job.nodes)
        if key not in self._fit_cache:
            self._fit_cache[key] = self._never_fits(job)
        return self._fit_cache[key]

    def _never_fits(self, job: Job) -> Reason | None:

        def reject(message: str, field: str = "gpus") -> Reason:
            return Reason(ReasonCode.NEVER_FITS, f"rejected: {message}", field=field)

        if job.gpus <= 0:
            return reject(f"gpus must be at least 1, got {job.gpus}")
        if job.nodes is not None and (job.nodes <= 0 or job.gpus % job.nodes):
            return reject(f"{job.gpus} GPUs do not split evenly over {job.nodes} nodes", "nodes")
        flavors = sorted(self.flavor_shape) if job.flavor == ANY_FLAVOR else [job.flavor]
        if job.flavor != ANY_FLAVOR and job.flavor not in self.flavor_shape:
            known = ", ".join(sorted(self.flavor_shape)) or "none"
            return reject(f"unknown flavor {job.flavor!r}; the pool has: {known}", "flavor")
        problems = []
        for flavor in flavors:
            shape = self.flavor_shape[flavor]
            sizes = gang_sizes(job.gpus, job.nodes, shape.largest)
            if job.gpus > shape.total or max(sizes) > shape.largest or len(sizes) > shape.nodes:
                problems.append(
                    f"{job.gpus} GPUs{self._spread(job)} do not fit the pool's {shape.nodes} "
                    f"{flavor} nodes ({shape.total} GPUs, at most {shape.largest} a node)"
                )
            elif (
                self.policy.enforce_quotas
                and job.project in self.projects  # an unknown project waits to be approved
                and job.gpus > self.ceiling(job.project, flavor)
            ):
                problems.append(
                    f"{job.gpus} GPUs exceed project {job.project}'s "
                    f"{'limit' if self.policy.borrowing else 'guarantee'} of "
                    f"{self.ceiling(job.project, flavor)} {flavor}"
                )
            else:
                return None
        return reject("; ".join(problems) or "the pool has no GPUs")

    @staticmethod
    def _spread(job: Job) -> str:
        return f" over {job.nodes} nodes" if job.nodes else ""

    def pending_job(self, job_id: str) -> Job | None:
        key = self.queue_of.get(job_id)
        return None if key is None else self.queues[key].get(job_id)

    def pending_count(self) -> int:
        return len(self.queue_of)

    # -- running jobs ----------------------------------------------------------------------

    def add_running(self, run: Running) -> None:
        if run.job_id in self.running:
            raise ValueError(f"job {run.job_id} is already running")
        self.running[run.job_id] = run
        self._pool_take(run)
        gpus = run.gpus
        self.holdings[(run.project, run.flavor)].add(run.start, run.job_id, gpus)
        self.held_by_project[run.project] += gpus
        self.held_by_sector[self.sector_of(run.project)] += gpus
        self._update_excess(run.project, run.flavor)
        insort(self.ends[run.flavor], (run.expected_end, run.job_id))
        self._commit(run, +1)

    def add_runnings(self, runs: Iterable[Running]) -> None:
        """add_running for many jobs, sorting the indices once."""
        runs = list(runs)
        for run in runs:
            if run.job_id in self.running:
                raise ValueError(f"job {run.job_id} is already running")
            self.running[run.job_id] = run
            self._pool_take(run)
            holding = self.holdings[(run.project, run.flavor)]
            if holding.allocations is None:
                holding.allocations = []
            holding.allocations.append((run.start, run.job_id))
            holding.gpus += run.gpus
            self.held_by_project[run.project] += run.gpus
            self.held_by_sector[self.sector_of(run.project)] += run.gpus
            self.ends[run.flavor].append((run.expected_end, run.job_id))
            self._commit(run, +1)
        for (project, flavor), holding in self.holdings.items():
            if holding.allocations:
                holding.allocations.sort()
            self._update_excess(project, flavor)
        for ends in self.ends.values():
            ends.sort()

    def sector_of(self, project: str) -> str:
        known = self.projects.get(project)
        return known.sector if known is not None else ""

    def finish(self, job_id: str) -> Running | None:
        """A running job ended (any outcome): its GPUs are free."""
        run = self.running.pop(job_id, None)
        if run is None:
            return None
        pool = self.pools.get(run.flavor)
        if pool is not None:
            pool.give(run.pieces)
        gpus = run.gpus
        self.holdings[(run.project, run.flavor)].remove(run.start, run.job_id, gpus)
        self.held_by_project[run.project] -= gpus
        self.held_by_sector[self.sector_of(run.project)] -= gpus
        self._update_excess(run.project, run.flavor)
        ends = self.ends[run.flavor]
        del ends[bisect_left(ends, (run.expected_end, run.job_id))]
        self._commit(run, -1)  # released; the ledger charges what it used
        # Freed GPUs, and more headroom under the project's guarantee and limit.
        self.freed_flavors.add(run.flavor)
        self.changed_queues.update(((run.project, run.flavor), (run.project, ANY_FLAVOR)))
        claimant = self.victim_of.pop(job_id, None)
        if claimant is not None and claimant in self.reclaims:
            # What a victim frees is its claimant's, even when it ends before the others.
            claim = self.reclaims[claimant]
            room = claim.gpus - sum(n for _, n in claim.counted_free)
            freed = []
            for name, n in run.pieces:
                if name in claim.nodes and room > 0:
                    freed.append((name, min(n, room)))
                    room -= min(n, room)
            claim = replace(
                claim,
                victims=claim.victims - {job_id},
                counted_free=claim.counted_free + tuple(freed),
            )
            self.reclaims[claimant] = claim
            if claim.counted_free:
                self.claims_holding_free.add(claimant)
            if not claim.victims:
                self.claims_ready.add(claimant)
            self.changed_queues.add(self.queue_of[claimant])
        return run

    def mark_stopping(self, job_id: str, stop_at: float, for_job: str | None = None) -> None:
        run = self.running[job_id]
        ends = self.ends[run.flavor]
        del ends[bisect_left(ends, (run.expected_end, run.job_id))]
        self._commit(run, -1)
        run = replace(run, stopping_at=stop_at, preempted_for=for_job)
        self.running[job_id] = run
        insort(ends, (run.expected_end, run.job_id))
        self._commit(run, +1)  # committed only up to its stop now

    def add_reclaim(self, job_id: str, claim: Reclaim) -> None:
        self.reclaims[job_id] = claim
        for victim in claim.victims:
            self.victim_of[victim] = job_id
        if claim.counted_free:
            self.claims_holding_free.add(job_id)
        if not claim.victims:
            self.claims_ready.add(job_id)

    def drop_reclaim(self, job_id: str) -> None:
        self.claims_ready.discard(job_id)
        self.claims_holding_free.discard(job_id)
        claim = self.reclaims.pop(job_id, None)
        if claim is not None:
            for victim in claim.victims:
                self.victim_of.pop(victim, None)

    def held(self, project: str, flavor: str) -> int:
        holding = self.holdings.get((project, flavor))
        return 0 if holding is None else holding.gpus

    def _update_excess(self, project: str, flavor: str) -> None:
        over = max(0, self.held(project, flavor) - self.quota(project, flavor).guaranteed)
        before = self.excess[flavor].pop(project, 0)
        if over:
            self.excess[flavor][project] = over
        self.excess_total[flavor] += over - before

    def over_guarantee(self, flavor: str) -> dict[str, int]:
        """Projects holding more of `flavor` than their guarantee, and by how much."""
        return self.excess.get(flavor, {})

    def borrowers_besides(self, project: str, flavor: str) -> int:
        """GPUs of `flavor` other projects hold above their guarantees."""
        over = self.excess.get(flavor)
        return 0 if not over else self.excess_total[flavor] - over.get(project, 0)

    def allocations(self, project: str, flavor: str) -> list[Running]:
        """The project's running jobs of this flavor, newest first."""
        holding = self.holdings.get((project, flavor))
        if holding is None or not holding.allocations:
            return []
        return [self.running[job_id] for _, job_id in reversed(holding.allocations)]
