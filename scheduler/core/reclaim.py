"""Reclaim: free guaranteed GPUs for an in-quota job by preempting borrowers.

Candidates are the jobs of *other* projects that hold more of the flavor than their
guarantee, for as long as they do: a project is preempted down to its guarantee, never
further (its last victim may straddle it, as in Kueue), whichever of its jobs makes room
where room is needed. On a node the newest candidates go first. The fewest preemptions
win:

- one preemption: nodes are bucketed by `free + the newest candidate's GPUs there`; in the
  lowest bucket that fits (freeing the least beyond what is missing), the newest of the
  first few candidates found goes (it loses the least work);
- otherwise: nodes where free plus all their candidates' GPUs could fit the job are tried,
  tightest first, and the cheapest of the first few (fewest preemptions, then fewest GPUs)
  is taken. A gang takes wholly free nodes first, then the cheapest to clear.
"""

from __future__ import annotations

from collections import defaultdict

from scheduler.core.placement import FlavorPool
from scheduler.core.state import SchedulerState
from scheduler.core.types import Piece, Running

ONE_VICTIM_CHOICES = 4  # nodes compared when one preemption suffices
SEVERAL_VICTIM_CHOICES = 4  # nodes compared when it takes several
Victim = tuple[float, str, int, str, int]  # (start, job id, GPUs here, project, job's GPUs)
Option = tuple[int, int, int, list[str]]  # (preemptions, GPUs preempted, node, job ids)


class BorrowedIndex:
    """One flavor's reclaim candidates that are not stopping yet, built once a cycle.

    Within a cycle candidates only leave and free GPUs only shrink, so every node's reach
    only falls: a node found in too high a bucket is moved down when it is looked at.
    """

    def __init__(self, state: SchedulerState, pool: FlavorPool) -> None:
        self.pool = pool
        self.runs: dict[str, Running] = {}
        # GPUs each project holds above its guarantee, less what is stopping already.
        self.budget: dict[str, int] = {}
        self.gpus_by_project: dict[str, int] = defaultdict(int)  # candidates' GPUs
        self.total = 0
        self.on_node: dict[int, list[Victim]] = defaultdict(list)  # newest first
        self.nodes_of: dict[str, set[int]] = defaultdict(set)
        self.runs_of: dict[str, set[str]] = defaultdict(set)
        for owner, excess in sorted(state.over_guarantee(pool.flavor).items()):
            runs = state.allocations(owner, pool.flavor)
            budget = excess - sum(r.gpus for r in runs if r.stopping_at is not None)
            if budget <= 0:
                continue
            self.budget[owner] = budget
            for run in runs:
                if run.stopping_at is None:
                    self.runs[run.job_id] = run
                    self.runs_of[owner].add(run.job_id)
                    self.gpus_by_project[owner] += run.gpus
                    self.total += run.gpus
                    for name, n in run.pieces:
                        i = pool.index.get(name)
                        if i is not None:
                            self.on_node[i].append((run.start, run.job_id, n, owner, run.gpus))
                            self.nodes_of[owner].add(i)
        top = pool.max_gpus
        self.by_reach: list[dict[int, None]] = [{} for _ in range(top + 1)]
        # Nodes by free GPUs plus all their candidates' GPUs (what clearing them could give).
        self.by_room: list[dict[int, None]] = [{} for _ in range(top + 1)]
        self.bucket_of: dict[int, tuple[int, int]] = {}  # node -> (reach, room)
        for i in sorted(self.on_node):
            self.on_node[i].sort(reverse=True)
            self._file(i)
        # project -> piece sizes (largest first) of requests that found no victims this cycle
        self.failed: dict[str, list[tuple[int, ...]]] = defaultdict(list)

    def _file(self, i: int) -> None:
        """(Re)place node i in the reach and room buckets, or drop it if it has nothing."""
        old = self.bucket_of.pop(i, None)
        if old is not None:
            del self.by_reach[old[0]][i]
            del self.by_room[old[1]][i]
        victims = self.on_node.get(i)
        if not victims:
            self.on_node.pop(i, None)
            return
        reach = self._reach(i)
        room = min(self.pool.free[i] + sum(v[2] for v in victims), self.pool.max_gpus)
        self.by_reach[reach][i] = None
        self.by_room[room][i] = None
        self.bucket_of[i] = (reach, room)

    def _reach(self, i: int) -> int:
        """Free GPUs on node i once its newest candidate left."""
        victims = self.on_node.get(i)
        newest = victims[0][2] if victims else 0
        return min(self.pool.free[i] + newest, self.pool.max_gpus)

    def gpus_of_others(self, project: str) -> int:
        return self.total - self.gpus_by_project.get(project, 0)

    def remove(self, victims: list[Running]) -> None:
        """Victims chosen: they and, once a project is back at its guarantee, all of its
        jobs stop being candidates."""
        gone = {v.job_id for v in victims}
        touched: set[int] = set()
        for v in victims:
            del self.runs[v.job_id]
            self.runs_of[v.project].discard(v.job_id)
            self.budget[v.project] -= v.gpus
            self.gpus_by_project[v.project] -= v.gpus
            self.total -= v.gpus
            for name, _ in v.pieces:
                i = self.pool.index.get(name)
                if i is not None:
                    touched.add(i)
        for owner in sorted({v.project for v in victims}):
            if self.budget[owner] <= 0:
                for run_id in self.runs_of.pop(owner, set()) - gone:
                    del self.runs[run_id]
                    gone.add(run_id)
                self.total -= self.gpus_by_project.pop(owner, 0)
                touched |= self.nodes_of.pop(owner, set())
        for i in sorted(touched):
            if i in self.on_node:
                self.on_node[i] = [x for x in self.on_node[i] if x[1] not in gone]
                self._file(i)

    def choose_victims(
        self, project: str, sizes: list[int]
    ) -> tuple[list[Running], tuple[Piece, ...], frozenset[str]] | None:
        """The fewest others' borrowed jobs whose release lets pieces of `sizes` fit.

        Returns them with the GPUs already free on the chosen nodes that the job counts
        on too (the cycle holds those for it until the victims have stopped), and those
        nodes.
        """
        request = tuple(sorted(sizes, reverse=True))
        piece = request[0]
        failed = self.failed[project]
        if any(_no_smaller(request, earlier) for earlier in failed):
            return None  # a request no larger already found nothing this cycle
        if len(request) == 1:
            one = self._one_node(project, piece)
            found = None if one is None else [(one, piece)]
        else:
            found = self._gang(project, sizes)
        if not found or not any(option[3] for option, _ in found):
            failed.append(request)
            return None
        ids: list[str] = []
        counted: list[Piece] = []
        for (_, _, i, victims), size in found:
            ids.extend(j for j in victims if j not in ids)
            already_free = min(self.pool.free[i], size)
            if already_free:
                counted.append((self.pool.names[i], already_free))
        nodes = frozenset(self.pool.names[option[2]] for option, _ in found)
        return [self.runs[j] for j in ids], tuple(counted), nodes

    def _clear(
        self, i: int, size: int, project: str, spent_before: dict[str, int] | None = None
    ) -> Option | None:
        """What it takes to get `size` GPUs free on node i, preempting newest first.

        `spent_before`: what a gang's other pieces already take from each project's budget.
        """
        missing = size - self.pool.free[i]
        if missing <= 0:
            return (0, 0, i, [])
        chosen: list[str] = []
        freed = preempted = 0
        spent: dict[str, int] = dict(spent_before) if spent_before else {}
        budget = self.budget
        for _, job_id, n, owner, gpus in self.on_node.get(i, ()):
            if owner == project or budget[owner] - spent.get(owner, 0) <= 0:
                continue
            spent[owner] = spent.get(owner, 0) + gpus
            chosen.append(job_id)
            freed += n
            preempted += gpus
            if freed >= missing:
                return (len(chosen), preempted, i, chosen)
        return None

    def _one_node(self, project: str, size: int) -> Option | None:
        for reach in range(size, len(self.by_reach)):
            bucket = self.by_reach[reach]
            stale = []
            found: list[tuple[float, int, Option]] = []
            for i in bucket:
                actual = self._reach(i)
                if actual != reach:  # GPUs were admitted there since: file it anew
                    stale.append(i)
                    if actual < size:
                        continue
                option = self._clear(i, size, project)
                if option is not None and option[0] == 1:
                    victim = self.runs[option[3][0]]
                    # The newest victim loses the least work; look at a few, not all.
                    found.append((-victim.start, option[1], option))
                    if len(found) >= ONE_VICTIM_CHOICES:
                        break
            for i in stale:
                self._file(i)
            if found:
                return min(found, key=lambda f: (f[0], f[1], f[2][2]))[2]
        # No single preemption does it: the cheapest of the first nodes that several can clear.
        return self._cheapest(project, size, set(), {}, with_free=False)

    def _cheapest(
        self, project: str, size: int, used: set[int], spent: dict[str, int], with_free: bool
    ) -> Option | None:
        """The cheapest of up to SEVERAL_VICTIM_CHOICES nodes, tightest room first."""
        options: list[Option] = []
        if with_free:  # nodes that need no preemption at all come first
            for i in self.pool.nodes_free_at_least(size):
                if i not in used:
                    return (0, 0, i, [])
        for room in range(size, len(self.by_room)):
            for i in self.by_room[room]:
                if i in used:
                    continue
                option = self._clear(i, size, project, spent)
                if option is not None and option[0] > 0:
                    options.append(option)
                    if len(options) >= SEVERAL_VICTIM_CHOICES:
                        return min(options)
        return min(options, default=None)

    def _gang(self, project: str, sizes: list[int]) -> list[tuple[Option, int]] | None:
        """For each piece, largest first, the cheapest node not used yet."""
        used: set[int] = set()
        spent: dict[str, int] = {}  # budgets are per project, across all the pieces
        taken: set[str] = set()
        chosen: list[tuple[Option, int]] = []
        for size in sorted(sizes, reverse=True):
            best = self._cheapest(project, size, used, spent, with_free=True)
            if best is None:
                return None
            used.add(best[2])
            for job_id in best[3]:
                if job_id not in taken:  # a gang victim may stand on several chosen nodes
                    taken.add(job_id)
                    victim = self.runs[job_id]
                    spent[victim.project] = spent.get(victim.project, 0) + victim.gpus
            chosen.append((best, size))
        return chosen


def _no_smaller(request: tuple[int, ...], earlier: tuple[int, ...]) -> bool:
    """Does `request` need at least what `earlier` needed, piece by piece (largest first)?"""
    return len(request) >= len(earlier) and all(
        mine >= theirs for mine, theirs in zip(request, earlier, strict=False)
    )
