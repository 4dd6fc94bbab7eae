"""One scheduling cycle over the in-memory state: the numbered sequence of DESIGN.md.

    0. First    jobs whose reclaimed GPUs are free start; the reserved job keeps its
                reservation (step 5) until it starts
    1. Order    queue heads merged by (in quota first, fair share, priority, age)
    2. Limits   the project's limit and credits
    3. Place    all or nothing, best fit / fewest nodes in one topology group
    4. Reclaim  an in-quota job that does not fit preempts the fewest newest borrowers
    5. Backfill the first blocked job of a flavor reserves its earliest start; later jobs
                may not delay it
    6. Reasons  every job left waiting gets one; a queue with nothing more that could start
                gets one for all its jobs, so a cycle never walks more than it must

A full cycle walks every queue; a quick one (between full cycles) only the queues that
changed and those of flavors where GPUs were freed. The cycle assumes its own decisions
into the state (admissions become running jobs, preempted jobs are marked stopping) and
returns them as a Plan. Deterministic: no clock, no randomness, no iteration over
unordered sets.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from scheduler.core.backfill import Hold, earliest_start
from scheduler.core.placement import FlavorPool, gang_sizes
from scheduler.core.policy import CreditsExhausted, Ordering
from scheduler.core.queues import JobQueue, QueueKey
from scheduler.core.reclaim import BorrowedIndex
from scheduler.core.state import Reclaim, SchedulerState
from scheduler.core.types import (
    ANY_FLAVOR,
    Admission,
    Job,
    Piece,
    Plan,
    Preemption,
    Reason,
    ReasonCode,
    Reservation,
    Running,
    credits_for,
)

CLAIMANT, IN_QUOTA, BORROWING, BORROW_ONLY = -1, 0, 1, 2


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_amount(value: float) -> str:
    """Credits, hours or a rate to one decimal; small ones to two significant digits."""
    if value == 0 or abs(value) >= 0.1:
        return f"{value:.1f}"
    return f"{value:.2g}"


@dataclass(slots=True)
class Verdict:
    """What limits allow for a job: the flavors it may use, and how it would count."""

    flavors: list[str]
    klass: int
    reason: Reason | None = None
    whole_queue: bool = False  # the same reason holds for every job of the queue
    own: Reason | None = None  # the job's own reason, when `reason` is its whole queue's


class Cycle:
    def __init__(self, state: SchedulerState, now: float) -> None:
        self.state = state
        self.policy = state.policy
        self.now = now
        self.plan = Plan(now=now, rejections=state.new_rejections)
        state.new_rejections = {}
        self.recent = {p: state.recent_gpus(p, now) for p in state.projects}
        self.sector_of = {name: p.sector for name, p in state.projects.items()}
        # Sector figures are taken once, at the start of the cycle; project figures move
        # with every admission, so one sector's admissions do not re-rank every queue.
        recent_sector: dict[str, float] = {}
        for name, sector in self.sector_of.items():
            recent_sector[sector] = recent_sector.get(sector, 0.0) + self.recent[name]
        self.sector_load = {
            sector: (recent + state.held_by_sector[sector]) / state.sector_share.get(sector, 1e-9)
            for sector, recent in recent_sector.items()
        }
        self.holds: dict[str, Hold] = {}
        self.may_reclaim: set[QueueKey] = set()
        self.decided: set[str] = set()  # jobs steps 0 and 0b settled outside the walk
        self.never_starts: set[tuple[str, tuple[int, ...]]] = set()  # (flavor, pieces)
        self.reservations_kept = False
        # flavor -> the first in-quota job blocked there, waiting to reserve (step 5)
        self.first_blocked: dict[str, tuple[Job, list[int], int]] = {}
        self.claim_holds: list[tuple[FlavorPool, tuple[Piece, ...]]] = []
        # GPUs that in-quota jobs are reclaiming: they count against the guarantee already.
        self.claimed: dict[tuple[str, str], int] = {}
        for claim in state.reclaims.values():
            key = (claim.project, claim.flavor)
            self.claimed[key] = self.claimed.get(key, 0) + claim.gpus
        self._borrowed_by_flavor: dict[str, BorrowedIndex] = {}

    # -- 1. Order ------------------------------------------------------------------------

    def klass(self, job: Job, flavor: str) -> int:
        if not self.policy.enforce_quotas:
            return IN_QUOTA
        if self.policy.credits_exhausted is CreditsExhausted.BORROW_ONLY and not self.affords(
            job, flavor
        ):
            return BORROW_ONLY
        if job.id in self.state.reclaims:  # its own claim is already counted
            return IN_QUOTA
        return IN_QUOTA if self.within_guarantee(job.project, flavor, job.gpus) else BORROWING

    def within_guarantee(self, project: str, flavor: str, gpus: int, claims: bool = True) -> bool:
        """Would `gpus` more stay within the project's guarantee (counting, with `claims`,
        the GPUs its jobs are reclaiming already)?"""
        held = self.state.held(project, flavor)
        if claims:
            held += self.claimed.get((project, flavor), 0)
        return held + gpus <= self.state.quota(project, flavor).guaranteed

    def head_key(self, job: Job) -> tuple[object, ...]:
        if self.policy.ordering is Ordering.ARRIVAL:
            return (job.submit_time, job.id)
        state = self.state
        if job.id in state.reclaims:
            klass = CLAIMANT  # the GPUs its victims free are for it
        elif job.flavor == ANY_FLAVOR:
            klass = min((self.klass(job, f) for f in state.pools), default=BORROWING)
        else:
            klass = self.klass(job, job.flavor)
        project = job.project
        sector_load = self.sector_load.get(self.sector_of.get(project, ""), 0.0)
        project_load = (self.recent.get(project, 0.0) + state.held_by_project[project]) / (
            state.project_share.get(project, 1e-9)
        )
        return (klass, sector_load, project_load, -job.priority, job.submit_time, job.id)

    def flavors_of_queue(self, key: QueueKey) -> list[str]:
        if key[1] != ANY_FLAVOR:
            return [key[1]] if key[1] in self.state.pools else []
        return sorted(self.state.pools)

    def flavors_of(self, job: Job) -> list[str]:
        return self.flavors_of_queue((job.project, job.flavor))

    def run(self) -> Plan:
        full, freed, changed = self.state.take_changes(self.now)
        self.plan.full = full
        self.may_reclaim = set(self.state.queues) if full else changed
        self.hold_claimed_free()  # first: claimants must not land on others' held GPUs
        self.start_claimants()
        # Reservations come after every in-quota job had its turn: they must not hold back
        # GPUs that a guarantee is owed (steps 0b and 5 wait for that).
        if self.policy.ordering is Ordering.ARRIVAL:
            self.keep_all_reservations()
        queues = {
            key: queue
            for key, queue in self.state.queues.items()
            if full
            or key in changed
            or (
                (key[1] in freed or (key[1] == ANY_FLAVOR and freed))
                and any(self.could_place(queue, f) for f in self.flavors_of_queue(key))
            )
        }
        position = dict.fromkeys(queues, 0)
        heads: list[tuple[tuple[object, ...], QueueKey]] = []
        for key, queue in queues.items():
            job = queue.at(0)
            if job is not None:
                heads.append((self.head_key(job), key))
        heapq.heapify(heads)
        while heads:
            key_seen, qkey = heapq.heappop(heads)
            queue = queues[qkey]
            job = queue.at(position[qkey])
            if job is None:
                continue
            if not (full or qkey in changed) and not any(
                self.could_place(queue, flavor) for flavor in self.flavors_of_queue(qkey)
            ):
                continue  # a quick cycle: nothing new for it, and its reasons stand
            fresh = self.head_key(job)
            if fresh != key_seen:  # usage moved since it was pushed: re-rank
                heapq.heappush(heads, (fresh, qkey))
                continue
            if not self.reservations_kept and fresh[0] >= BORROWING:  # type: ignore[operator]
                self.keep_all_reservations()
            if self.consider(job, queue):
                if job.id not in self.plan.admitted:  # an admitted job left the queue
                    position[qkey] += 1
                nxt = queue.at(position[qkey])
                if nxt is not None:
                    heapq.heappush(heads, (self.head_key(nxt), qkey))
        if not self.reservations_kept:
            self.keep_all_reservations()
        for flavor, hold in self.holds.items():
            hold.release(self.state.pools[flavor])
        for pool, pieces in self.claim_holds:
            pool.give(pieces)
        state = self.state
        state.cycles += 1
        state.reasons.record(self.plan, state.cycles)
        if not full:
            self.plan.earlier = state.reasons
        return self.plan

    def start_claimants(self) -> None:
        """0. Jobs whose preempted borrowers have all stopped take the freed GPUs first.

        They need not be at the head of their queue: the GPUs were reclaimed for them.
        """
        state = self.state
        for job_id in sorted(state.claims_ready):
            claim = state.reclaims[job_id]
            state.drop_reclaim(job_id)
            key = (claim.project, claim.flavor)
            self.claimed[key] -= claim.gpus
            job = state.pending_job(job_id)
            if job is not None:
                self.consider(job, state.queues[state.queue_of[job_id]])
                self.decided.add(job_id)

    def hold_claimed_free(self) -> None:
        """Keep the free GPUs that reclaims still waiting on their victims counted on."""
        state = self.state
        for job_id in sorted(state.claims_holding_free - state.claims_ready):
            claim = state.reclaims[job_id]
            pool = state.pools.get(claim.flavor)
            if pool is None:
                continue
            wanted: dict[str, int] = {}
            for name, n in claim.counted_free:
                if name in pool.index:
                    wanted[name] = wanted.get(name, 0) + n
            pieces = tuple(
                (name, min(n, pool.free[pool.index[name]]))
                for name, n in wanted.items()
                if pool.free[pool.index[name]] > 0
            )
            pool.take(pieces)
            self.claim_holds.append((pool, pieces))

    # -- one job -------------------------------------------------------------------------

    def consider(self, job: Job, queue: JobQueue) -> bool:
        """Decide for one job; False when the rest of its queue need not be looked at."""
        if job.id in self.decided:
            return True
        verdict = self.limits(job)
        if verdict.reason is not None:
            if verdict.own is not None:
                self.plan.job_reasons[job.id] = verdict.own
            return self.wait(job, queue, verdict.reason, verdict.whole_queue)
        if self.place(job, verdict):
            return True
        flavor = verdict.flavors[0]
        pool = self.state.pools[flavor]
        sizes = gang_sizes(job.gpus, job.nodes, pool.max_gpus)
        reason = None
        reclaiming = job.id in self.state.reclaims
        if (
            verdict.klass == IN_QUOTA
            and self.policy.reclaim
            and (reclaiming or queue.key in self.may_reclaim)
        ):
            reason = self.reclaim(job, flavor, sizes)
        if reason is None:
            reason = self.blocked(job, flavor, sizes, verdict.klass)
        self.plan.job_reasons[job.id] = reason
        return not self.queue_is_hopeless(queue, verdict)

    def wait(self, job: Job, queue: JobQueue, reason: Reason, whole_queue: bool) -> bool:
        if whole_queue:
            self.plan.queue_reasons[queue.key] = reason
            return False
        self.plan.job_reasons[job.id] = reason
        return True

    # -- 2. Limits -----------------------------------------------------------------------

    def limits(self, job: Job) -> Verdict:
        state = self.state
        flavors = self.flavors_of(job)
        if not flavors:  # its flavor's nodes have all left the pool since it was queued
            reason = Reason(
                ReasonCode.CAPACITY, f"waiting for {job.flavor} nodes: none in the pool"
            )
            return Verdict([], BORROWING, reason, whole_queue=True)
        if not self.policy.enforce_quotas:
            return Verdict(flavors, IN_QUOTA)
        project = state.projects.get(job.project)
        if project is None:
            reason = Reason(ReasonCode.PROJECT, f"project {job.project} is not active")
            return Verdict([], BORROWING, reason, whole_queue=True)
        borrow_only = False
        if project.credits_left is not None:
            affordable = [f for f in flavors if self.affords(job, f)]
            if affordable:
                flavors = affordable  # an any-flavor job pays the rate where it is placed
            elif self.policy.credits_exhausted is CreditsExhausted.BLOCK:
                return self.short_of_credits(job, flavors)
            else:
                borrow_only = True
        allowed, over = [], []
        for flavor in flavors:
            held = state.held(job.project, flavor)
            ceiling = state.ceiling(job.project, flavor)
            if held + job.gpus <= ceiling:
                allowed.append(flavor)
            else:
                over.append((flavor, held, ceiling))
        if not allowed:
            flavor, held, ceiling = over[0]
            word = "limit" if self.policy.borrowing else "guarantee"
            reason = Reason(
                ReasonCode.OVER_LIMIT,
                f"over limit: project {job.project} holds {held} of its {word} of {ceiling} "
                f"{flavor} GPUs; this job needs {job.gpus}",
            )
            # The whole queue is over the limit when even its smallest job is, everywhere.
            smallest = self.state.queues[(job.project, job.flavor)].smallest()
            whole = all(held + smallest > ceiling for _, held, ceiling in over)
            return Verdict([], BORROWING, reason, whole_queue=whole)
        klasses = {f: self.klass(job, f) for f in allowed}
        allowed.sort(key=lambda f: (klasses[f], f))  # in-quota flavors first
        klass = BORROW_ONLY if borrow_only else klasses[allowed[0]]
        return Verdict(allowed, klass)

    def need(self, job: Job, flavor: str) -> float:
        """Credits the job commits on `flavor`: GPUs x max_runtime x the project's rate."""
        return credits_for(job.gpus, job.max_runtime, self.state.credit_rate(job.project, flavor))

    def affords(self, job: Job, flavor: str) -> bool:
        """Committed at admission, as a card payment is pre-authorised: the project must be
        able to pay the job's whole limit on top of what its running jobs may still use."""
        if self.state.credits_free(job.project) is None:
            return True
        return self.state.affords(job.project, self.need(job, flavor))

    def short_of_credits(self, job: Job, flavors: list[str]) -> Verdict:
        """The reason a job waits whose project cannot pay for it on any of its flavors;
        for its whole queue when not even the queue's cheapest job could be paid for."""
        state, project = self.state, job.project
        rates = {f: state.credit_rate(project, f) for f in flavors}
        cheapest = min(flavors, key=lambda f: (rates[f], f))
        free = state.credits_free(project) or 0.0
        if free >= 0:
            left = f"{format_amount(free)} left"
        elif free < 0:
            left = f"{format_amount(-free)} overdrawn"
        else:  # NaN: a running job's rate or times are not numbers (a bad row)
            left = "an unknown amount left"
        head = (
            f"credits: {left} after "
            f"{format_amount(state.committed_from(project, self.now))} committed to running jobs"
        )
        where = f" on {cheapest}" if job.flavor == ANY_FLAVOR else ""
        own = Reason(
            ReasonCode.CREDITS,
            f"{head}; this job needs up to {format_amount(self.need(job, cheapest))} "
            f"({job.gpus} GPU{'' if job.gpus == 1 else 's'} x "
            f"{format_amount(job.max_runtime / 3600.0)} h x "
            f"{format_amount(rates[cheapest])}{where})",
        )
        least = state.queues[(project, job.flavor)].least_gpu_seconds()
        least_need = credits_for(1, least, rates[cheapest])
        if state.affords(project, least_need):
            return Verdict([], BORROWING, own)
        queue_reason = Reason(
            ReasonCode.CREDITS,
            f"{head}; each job here needs up to {format_amount(least_need)} or more "
            "(GPUs x max_runtime x rate)",
        )
        return Verdict([], BORROWING, queue_reason, whole_queue=True, own=own)

    # -- 3. Place ------------------------------------------------------------------------

    def place(self, job: Job, verdict: Verdict) -> bool:
        for flavor in verdict.flavors:
            pool = self.state.pools[flavor]
            sizes = gang_sizes(job.gpus, job.nodes, pool.max_gpus)
            pieces = pool.place(sizes)
            hold = self.holds.get(flavor)
            # A job that ends before the reservation starts may use its GPUs, and so may an
            # in-quota job when the reservation is a borrower's.
            if (
                pieces is None
                and hold is not None
                and len(sizes) == 1
                and (self.ends_before(job, hold) or (hold.borrower and verdict.klass <= IN_QUOTA))
            ):
                piece = hold.place_short(pool, job.gpus)
                pieces = None if piece is None else (piece,)
            if pieces is not None:
                self.admit(job, flavor, pieces, verdict.klass)
                return True
        return False

    def ends_before(self, job: Job, hold: Hold) -> bool:
        return self.now + job.expected_runtime <= hold.start

    def admit(self, job: Job, flavor: str, pieces: tuple[tuple[str, int], ...], klass: int) -> None:
        over = not self.within_guarantee(job.project, flavor, job.gpus, claims=False)
        borrowed = (self.policy.enforce_quotas and over) or klass == BORROW_ONLY
        claim = self.state.reclaims.get(job.id)
        if claim is not None:
            key = (claim.project, claim.flavor)
            self.claimed[key] -= claim.gpus
        self.state.remove_job(job.id)
        self.state.add_running(
            Running(
                job_id=job.id,
                project=job.project,
                flavor=flavor,
                pieces=pieces,
                start=self.now,
                max_runtime=job.max_runtime,
                priority=job.priority,
                estimate=job.estimate,
            )
        )
        self.plan.admissions.append(Admission(job.id, flavor, pieces, borrowed))
        self.plan.admitted.add(job.id)

    # -- 4. Reclaim ----------------------------------------------------------------------

    def reclaim(self, job: Job, flavor: str, sizes: list[int]) -> Reason | None:
        state = self.state
        claim = state.reclaims.get(job.id)
        victim_ids = sorted(claim.victims) if claim else []
        stopping = [
            state.running[v]
            for v in victim_ids
            if v in state.running and state.running[v].stopping_at is not None
        ]
        if stopping:
            free_at = max(r.expected_end for r in stopping)
            flavor = stopping[0].flavor  # an any-flavor job reclaims one flavor
            return Reason(
                ReasonCode.RECLAIMING,
                f"in quota: waiting for {sum(r.gpus for r in stopping)} {flavor} GPUs that "
                f"borrowers release in {format_duration(free_at - self.now)}",
                est_start=free_at,
            )
        if not state.borrowers_besides(job.project, flavor):
            return None  # nobody to preempt: no need to index anything
        borrowed = self._borrowed(flavor)
        pool = state.pools[flavor]
        if borrowed.gpus_of_others(job.project) + pool.total_free < job.gpus:
            return None
        chosen = borrowed.choose_victims(job.project, sizes)
        if chosen is None:
            return None
        victims, counted_free, nodes = chosen
        pool.take(counted_free)  # nobody else may take them in the meantime
        self.claim_holds.append((pool, counted_free))
        stop_at = self.now + self.policy.grace_period_s
        for victim in victims:
            state.mark_stopping(victim.job_id, stop_at, for_job=job.id)
            self.plan.preemptions.append(
                Preemption(
                    victim.job_id,
                    for_job=job.id,
                    stop_at=stop_at,
                    reason=f"preempted: project {job.project} reclaims its guaranteed "
                    f"{flavor} GPUs for job {job.id}",
                )
            )
        borrowed.remove(victims)
        if claim is None:
            key = (job.project, flavor)
            self.claimed[key] = self.claimed.get(key, 0) + job.gpus
        state.add_reclaim(
            job.id,
            Reclaim(
                job.project,
                flavor,
                job.gpus,
                frozenset(v.job_id for v in victims),
                counted_free,
                nodes,
            ),
        )
        return Reason(
            ReasonCode.RECLAIMING,
            f"in quota: preempting {len(victims)} borrowing job(s) to free {job.gpus} {flavor} "
            f"GPUs; est. start in {format_duration(stop_at - self.now)}",
            est_start=stop_at,
        )

    def _borrowed(self, flavor: str) -> BorrowedIndex:
        index = self._borrowed_by_flavor.get(flavor)
        if index is None:
            index = BorrowedIndex(self.state, self.state.pools[flavor])
            self._borrowed_by_flavor[flavor] = index
        return index

    # -- 5. Backfill ---------------------------------------------------------------------

    def blocked(self, job: Job, flavor: str, sizes: list[int], klass: int) -> Reason:
        state = self.state
        pool = state.pools[flavor]
        hold = self.holds.get(flavor)
        if hold is not None:
            if hold.total and pool.total_free + hold.total >= job.gpus:
                return self.delays_reservation(hold)
        elif self.policy.backfill and flavor not in self.first_blocked:
            if not self.reservations_kept:
                # In-quota jobs are still having their turn: reserve once they all have, so
                # that this reservation holds back nothing that another guarantee is owed.
                self.first_blocked[flavor] = (job, sizes, klass)
                return Reason(ReasonCode.RESERVED, f"next for {job.gpus} {flavor} GPUs")
            reserved = self.reserve(job, flavor, sizes, klass)
            if reserved is not None:
                self.state.reservation_holder[flavor] = job.id
                return reserved
        return self.waiting(job, flavor, klass)

    def waiting(self, job: Job, flavor: str, klass: int) -> Reason:
        quota = "in quota" if klass <= IN_QUOTA else "borrowing"
        if klass == BORROW_ONLY:
            quota = "borrowing last, preemptible: its credits do not cover its max_runtime"
        return Reason(ReasonCode.CAPACITY, f"waiting for {job.gpus} {flavor} GPUs ({quota})")

    def keep_all_reservations(self) -> None:
        """5, deferred: the first in-quota job blocked in each flavor reserves its start,
        then the reservations of earlier cycles are kept (0b)."""
        self.reservations_kept = True
        if not self.policy.backfill:
            self.state.reservation_holder.clear()
            return
        for flavor, (job, sizes, klass) in sorted(self.first_blocked.items()):
            reserved = self.reserve(job, flavor, sizes, klass)
            if reserved is None:
                self.plan.job_reasons[job.id] = self.waiting(job, flavor, klass)
            else:
                self.state.reservation_holder[flavor] = job.id
                self.plan.job_reasons[job.id] = reserved
        self.keep_reservations()

    def reserve(self, job: Job, flavor: str, sizes: list[int], klass: int) -> Reason | None:
        """Reserve the job's earliest start and hold those GPUs back from longer jobs."""
        pool = self.state.pools[flavor]
        if (flavor, tuple(sizes)) in self.never_starts:
            return None
        found = earliest_start(pool, self.state.ends[flavor], self.state.running, sizes, self.now)
        if found is None:
            self.never_starts.add((flavor, tuple(sizes)))  # not even when everything ends
            return None
        start, pieces, free_at_start = found
        hold = Hold(job.id, start, pieces, borrower=klass > IN_QUOTA)
        hold.apply(pool, free_at_start)
        self.holds[flavor] = hold
        self.plan.reservations.append(Reservation(job.id, flavor, start, pieces))
        return Reason(
            ReasonCode.RESERVED,
            f"next for {job.gpus} {flavor} GPUs; est. start in {format_duration(start - self.now)}",
            est_start=start,
        )

    def keep_reservations(self) -> None:
        """0b. A job that holds a reservation keeps it until it starts (EASY's top job).

        Fair-share order moves with every admission; were the reservation handed to
        whichever job is first blocked now, large jobs would wait on it forever.
        """
        state = self.state
        for flavor in sorted(state.reservation_holder):
            if flavor in self.holds:
                continue  # reserved already in this cycle
            job_id = state.reservation_holder[flavor]
            job = state.pending_job(job_id)
            verdict = None if job is None else self.limits(job)
            if (
                job is None
                or verdict is None
                or verdict.reason
                or flavor not in verdict.flavors
                or (
                    verdict.klass == IN_QUOTA
                    and self.policy.reclaim
                    and (job.project, job.flavor) in self.may_reclaim
                )
            ):
                # Gone, blocked by its limits, or in quota now and looked at again by this
                # cycle (it may reclaim instead).
                del state.reservation_holder[flavor]
                continue
            self.decided.add(job_id)
            if self.place(job, verdict):
                continue
            sizes = gang_sizes(job.gpus, job.nodes, state.pools[flavor].max_gpus)
            reason = self.reserve(job, flavor, sizes, verdict.klass)
            if reason is None:
                del state.reservation_holder[flavor]
                self.decided.discard(job_id)
            else:
                self.plan.job_reasons[job_id] = reason

    def delays_reservation(self, hold: Hold) -> Reason:
        return Reason(
            ReasonCode.BACKFILL,
            f"would delay job {hold.job_id}, reserved to start on these GPUs in "
            f"{format_duration(hold.start - self.now)}; a job that ends before then may use them",
        )

    # -- 6. Reasons for whole queues -----------------------------------------------------

    def in_quota(self, queue: JobQueue, flavor: str, gpus: int) -> bool:
        """Would a job of `gpus` in this queue be within its project's guarantee?"""
        if not self.policy.enforce_quotas:
            return True
        return self.within_guarantee(queue.key[0], flavor, gpus)

    def could_reclaim(self, queue: JobQueue, flavor: str, gpus: int) -> bool:
        """Might a job of `gpus` in this queue be in quota and find borrowers to preempt?"""
        if not (self.policy.reclaim and queue.key in self.may_reclaim):
            return False
        project = queue.key[0]
        return self.in_quota(queue, flavor, gpus) and (
            self.state.borrowers_besides(project, flavor) > 0
        )

    def could_place(self, queue: JobQueue, flavor: str) -> bool:
        """Might some job of this queue fit the free GPUs of this flavor now?

        Necessary conditions only, on the queue's smallest job, shortest run and smallest
        per-node piece, so it never rules out a job that could start.
        """
        pool = self.state.pools[flavor]
        hold = self.holds.get(flavor)
        held = 0
        if hold is not None and (
            self.now + queue.shortest_runtime() <= hold.start
            or (hold.borrower and self.in_quota(queue, flavor, queue.smallest()))
        ):
            held = hold.total  # short or in-quota jobs may use GPUs the reservation holds
        return pool.total_free + held >= queue.smallest() and (
            pool.max_free() + held >= min(queue.smallest_piece(), pool.max_gpus)
        )

    def queue_is_hopeless(self, queue: JobQueue, verdict: Verdict) -> bool:
        """True when no later job of this queue can start or reclaim in this cycle."""
        smallest = queue.smallest()
        for flavor in self.flavors_of_queue(queue.key):  # later jobs may fit other flavors
            if self.could_place(queue, flavor) or self.could_reclaim(queue, flavor, smallest):
                return False
        flavor = verdict.flavors[0] if verdict.flavors else queue.key[1]
        hold = self.holds.get(flavor)
        flavor_pool = self.state.pools.get(flavor)
        if (
            hold is not None
            and flavor_pool is not None
            and flavor_pool.total_free + hold.total >= smallest
        ):
            reason = self.delays_reservation(hold)
        else:
            reason = Reason(ReasonCode.CAPACITY, f"waiting for {flavor} GPUs; none free that fit")
        self.plan.queue_reasons[queue.key] = reason
        return True


def run_cycle(state: SchedulerState, now: float) -> Plan:
    return Cycle(state, now).run()
