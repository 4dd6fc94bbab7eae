"""Synthetic pools and workloads, made from a seed: for benchmarks and the demo.

Nothing here reads a trace: the project ships no trace data of its own.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scheduler.core import ANY_FLAVOR, FlavorQuota, Job, Node, Project, Running, Sector, Snapshot
from scheduler.sim.cluster import Cluster
from scheduler.sim.trace import TraceJob

FLAVORS = ("H100-80GB", "A100-40GB")
SECTORS = (Sector("industry", 1.0), Sector("academia", 1.5), Sector("research", 1.5))
JOB_SIZES = (1, 1, 1, 1, 2, 2, 4, 8, 8, 16, 32)


def synthetic_pool(nodes: int, projects: int, seed: int = 1) -> Cluster:
    """`nodes` 8-GPU nodes in two flavors and racks of 32; guarantees sum to capacity."""
    rng = random.Random(seed)
    pool = tuple(
        Node(f"gpu-{i:05d}", FLAVORS[i % 2], 8, f"rack-{i // 64:04d}") for i in range(nodes)
    )
    weights = [rng.uniform(0.2, 1.0) for _ in range(projects)]
    total = sum(weights)
    made = []
    remaining = {f: sum(n.gpus for n in pool if n.flavor == f) for f in FLAVORS}
    for i, w in enumerate(weights):
        quotas = {}
        for flavor in FLAVORS:
            capacity = sum(n.gpus for n in pool if n.flavor == flavor)
            guaranteed = int(capacity * w / total)
            if i == projects - 1:  # the last project takes the rounding rest
                guaranteed = remaining[flavor]
            remaining[flavor] -= guaranteed
            quotas[flavor] = FlavorQuota(guaranteed, max(2 * guaranteed, guaranteed + 32))
        made.append(Project(f"proj-{i:04d}", SECTORS[i % 3].name, quotas))
    return Cluster(nodes=pool, sectors=SECTORS, projects=tuple(made))


def busy_snapshot(nodes: int, pending: int, projects: int, seed: int = 1) -> Snapshot:
    """A pool filled by running jobs (some borrowing), with `pending` jobs waiting."""
    rng = random.Random(seed)
    cluster = synthetic_pool(nodes, projects, seed)
    names = [p.name for p in cluster.projects]
    now = 1_000_000.0
    running: list[Running] = []
    for node in cluster.nodes:
        free = node.gpus - (1 if rng.random() < 0.05 else 0)  # a few single free GPUs
        while free > 0:
            size = min(rng.choice((1, 1, 2, 4, 8)), free)
            free -= size
            running.append(
                Running(
                    job_id=f"r{len(running)}",
                    project=rng.choice(names),
                    flavor=node.flavor,
                    pieces=((node.name, size),),
                    start=now - rng.uniform(0, 86_400),
                    max_runtime=rng.choice((3_600.0, 14_400.0, 86_400.0, 172_800.0)),
                )
            )
    waiting = tuple(
        Job(
            id=f"p{i}",
            project=rng.choice(names),
            gpus=rng.choice(JOB_SIZES),
            flavor=rng.choice(FLAVORS),
            submit_time=now - rng.uniform(0, 86_400),
            max_runtime=rng.choice((600.0, 3_600.0, 14_400.0, 86_400.0)),
            priority=rng.choice((0, 0, 0, 1)),
        )
        for i in range(pending)
    )
    return Snapshot(cluster.nodes, cluster.sectors, cluster.projects, waiting, tuple(running))


def demo_workload(cluster: Cluster, jobs: int, seed: int = 7) -> list[TraceJob]:
    """A day of bursty submissions sized to load the pool to about 80%."""
    rng = random.Random(seed)
    names = [p.name for p in cluster.projects]
    flavors = cluster.flavors
    mean_gpus = sum(JOB_SIZES) / len(JOB_SIZES)
    mean_duration = 3_000.0
    span = jobs * mean_gpus * mean_duration / (0.8 * cluster.gpus)
    workload = []
    for i in range(jobs):
        flavor = rng.choice(flavors)
        largest = max(n.gpus for n in cluster.nodes if n.flavor == flavor)
        gpus = min(rng.choice(JOB_SIZES), largest * 2)
        workload.append(
            TraceJob(
                id=f"d{i}",
                submit_s=round(rng.uniform(0, span), 1),
                project=rng.choice(names),
                gpus=gpus,
                flavor=flavor,
                duration_s=round(rng.expovariate(1 / mean_duration) + 30, 1),
                max_runtime_s=4 * 3600.0,
            )
        )
    workload.sort(key=lambda j: (j.submit_s, j.id))
    return workload


# --- Workload families -------------------------------------------------------------------
# Generators for `gpupool simulate --workload NAME --load L --seed S`. Each draws jobs for any
# pool (its projects, guarantees and flavors) from a seed: the same family, pool, load and
# seed give the same jobs, byte for byte, in any process. The constants describe each
# family's shape; none was fitted to a trace or chosen for the scheduler's sake.
#
# Load: the GPU time the jobs ask for within the submission window (first to last
# submission), over the pool's GPU time in that window, as if each job started when submitted:
#     load = sum(gpus x min(duration_s, window_end - submit_s)) / (pool GPUs x window)
# A generator draws its jobs, then stretches their submission times (first at 0) until this
# holds. Only the part of a job inside the window counts: a four-week job submitted in a
# four-day window offers at most four days, which is all it can hold the pool's GPUs there.

MINUTE, HOUR, DAY = 60.0, 3600.0, 86_400.0
WEEK = 7 * DAY
LOAD_RANGE = (0.05, 3.0)  # what `--load` accepts
SEED_RANGE = (0, 2**32 - 1)  # what `--seed` accepts
BENCH_LOADS = (0.7, 0.9, 1.1)
REFERENCE_LOAD = 0.9  # a family's `jobs` is its job count at this load (scaled with the load)
SMALL_SIZES = (1, 1, 1, 1, 2, 2, 4, 8)  # an ordinary job's GPUs: most ask for one
GANG_SIZES = (16, 24, 32, 48, 64)  # multi-node on 8-GPU nodes
SHORTEST_S, LONGEST_S = 30.0, 28 * DAY
# Time limits people ask for: the first step at or above their run time times a margin.
LIMIT_STEPS = (HOUR, 4 * HOUR, 12 * HOUR, DAY, 2 * DAY, WEEK, 2 * WEEK, 30 * DAY, 90 * DAY)
USERS_PER_PROJECT = 4
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class WorkloadError(ValueError):
    """A workload that cannot be made as asked; its text is meant for the user, as is."""


@dataclass(frozen=True, slots=True)
class _Group:
    """Jobs submitted at one instant (one job, or a sweep: same project, user, size, flavor)."""

    project: str
    user: str
    gpus: int
    flavor: str
    durations: tuple[float, ...]

    @property
    def demand(self) -> float:
        return self.gpus * sum(self.durations)


def _clip(seconds: float) -> float:
    return float(min(LONGEST_S, max(SHORTEST_S, round(seconds))))


class Draw:
    """The random choices every family shares, over one pool and one seed."""

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.rng = rng
        # What each project may count on per flavor: its guarantee. Jobs never ask for more,
        # so `static` (each project confined to its guarantee) can run every job.
        caps: dict[str, dict[str, int]] = {}
        for p in sorted(cluster.projects, key=lambda p: p.name):
            guaranteed = {f: q.guaranteed for f, q in sorted(p.quotas.items()) if q.guaranteed}
            if guaranteed:
                caps[p.name] = guaranteed
        if not caps:
            raise WorkloadError(
                "the pool guarantees no project any GPUs; a workload needs at least one guarantee"
            )
        self.caps = caps
        # Each project's demand: its guarantee times a skew drawn per seed, so that some ask
        # for less than they are guaranteed and others for more (what borrowing is for).
        self.weights = {
            name: sum(c.values()) * rng.lognormvariate(0.0, 0.5) for name, c in caps.items()
        }

    def project(self, among: list[str] | None = None) -> str:
        names = list(self.weights) if among is None else among
        return self.rng.choices(names, [self.weights[n] for n in names])[0]

    def flavor(self, project: str, popularity: dict[str, float] | None = None) -> str:
        caps = self.caps[project]
        names = list(caps)
        return self.rng.choices(names, [caps[f] * (popularity or {}).get(f, 1.0) for f in names])[0]

    def cap(self, project: str, flavor: str) -> int:
        caps = self.caps[project]
        return max(caps.values()) if flavor == ANY_FLAVOR else caps[flavor]

    def user(self, project: str) -> str:
        return f"{project}-u{self.rng.randrange(USERS_PER_PROJECT)}"

    def lognormal(self, median: float, sigma: float) -> float:
        return _clip(median * math.exp(self.rng.gauss(0.0, sigma)))

    def sweep(self, chance: float = 0.15, largest: int = 8) -> int:
        """How many jobs one submission holds: mostly one, sometimes a sweep of 2..largest."""
        return self.rng.randint(2, largest) if self.rng.random() < chance else 1

    def group(
        self,
        project: str,
        durations: list[float],
        flavor: str | None = None,
        sizes: tuple[int, ...] = SMALL_SIZES,
    ) -> _Group:
        flavor = flavor or self.flavor(project)
        gpus = min(self.rng.choice(sizes), self.cap(project, flavor))
        return _Group(project, self.user(project), gpus, flavor, tuple(durations))

    def ordinary(
        self,
        median: float,
        sigma: float,
        among: list[str] | None = None,
        flavor: Callable[[str], str] | None = None,
    ) -> _Group:
        """Ordinary jobs: 1-8 GPUs, lognormal run times, now and then a sweep."""
        project = self.project(among)
        durations = [self.lognormal(median, sigma) for _ in range(self.sweep())]
        return self.group(project, durations, flavor(project) if flavor else None)


def _blend(
    jobs: int, share: float, special: Callable[[], _Group], ordinary: Callable[[], _Group]
) -> list[_Group]:
    """Submissions up to `jobs` jobs, with `special` ones making `share` of the GPU demand:
    the next one is special while the special demand so far is below its share."""
    groups: list[_Group] = []
    special_demand = total = 0.0
    count = 0
    while count < jobs:
        is_special = special_demand < share * total
        group = special() if is_special else ordinary()
        groups.append(group)
        count += len(group.durations)
        total += group.demand
        special_demand += group.demand if is_special else 0.0
    return groups


def _heavy_tail(draw: Draw, cluster: Cluster, jobs: int) -> list[_Group]:
    """Lognormal run times (median 10 minutes, sigma 2.3: one job in 300 runs a week or more,
    one in 2,000 two weeks, none over 28 days), drawn stratified over their quantiles so that
    every seed has its tail."""
    normal = statistics.NormalDist()
    quantiles = [(i + draw.rng.random()) / jobs for i in range(jobs)]
    draw.rng.shuffle(quantiles)
    durations = [_clip(10 * MINUTE * math.exp(2.3 * normal.inv_cdf(q))) for q in quantiles]
    groups = []
    while durations:
        size = draw.sweep()
        groups.append(draw.group(draw.project(), durations[:size]))
        durations = durations[size:]
    return groups


def _flood(draw: Draw, cluster: Cluster, jobs: int) -> list[_Group]:
    """One project (the least guaranteed that can run an 8-GPU job) offers half of all GPU
    demand, in sweeps of 8-32 jobs; the others submit ordinary jobs."""
    eligible = sorted((sum(c.values()), n) for n, c in draw.caps.items() if max(c.values()) >= 8)
    flooder = (eligible or sorted((sum(c.values()), n) for n, c in draw.caps.items()))[0][1]
    others = [n for n in draw.weights if n != flooder] or [flooder]

    def flood() -> _Group:
        durations = [draw.lognormal(20 * MINUTE, 1.5) for _ in range(draw.rng.randint(8, 32))]
        return draw.group(flooder, durations, sizes=(1, 1, 2, 4, 8))

    return _blend(jobs, 0.5, flood, lambda: draw.ordinary(30 * MINUTE, 1.5, others))


def _gangs(draw: Draw, cluster: Cluster, jobs: int) -> list[_Group]:
    """A third of the GPU demand in gangs of 16-64 GPUs (multi-node on 8-GPU nodes, median
    2 hours), from the projects guaranteed that many; the rest ordinary jobs."""
    largest = max(max(c.values()) for c in draw.caps.values())
    sizes = [s for s in GANG_SIZES if s <= largest]
    if not sizes:
        raise WorkloadError(
            f"family 'gangs' needs a project guaranteed at least {GANG_SIZES[0]} GPUs of one "
            f"flavor; this pool's largest guarantee is {largest}"
        )

    def gang() -> _Group:
        gpus = draw.rng.choice(sizes)
        project = draw.project([n for n, c in draw.caps.items() if max(c.values()) >= gpus])
        flavors = [f for f, g in draw.caps[project].items() if g >= gpus]
        flavor = draw.rng.choice(flavors)
        duration = draw.lognormal(2 * HOUR, 1.0)
        return _Group(project, draw.user(project), gpus, flavor, (duration,))

    return _blend(jobs, 1 / 3, gang, lambda: draw.ordinary(30 * MINUTE, 1.5))


def _flavors(draw: Draw, cluster: Cluster, jobs: int) -> list[_Group]:
    """Every flavor, the dearest most in demand (weights 2, 1, 1/2, ... by credit rate), and a
    quarter of the submissions for `*` (any flavor); median run time an hour."""
    ranked = sorted(cluster.flavors, key=lambda f: (-cluster.credit_rates.get(f, 1.0), f))
    popularity = {f: 2.0 ** (1 - i) for i, f in enumerate(ranked)}

    def flavor(project: str) -> str:
        return ANY_FLAVOR if draw.rng.random() < 0.25 else draw.flavor(project, popularity)

    groups: list[_Group] = []
    count = 0
    while count < jobs:
        groups.append(draw.ordinary(HOUR, 1.5, flavor=flavor))
        count += len(groups[-1].durations)
    return groups


def _long_runners(draw: Draw, cluster: Cluster, jobs: int) -> list[_Group]:
    """Half the GPU demand in jobs that hold 1-8 GPUs for 5 to 28 days (log-uniform), next
    to ordinary jobs of a median half hour."""

    def long_runner() -> _Group:
        days = math.exp(draw.rng.uniform(math.log(5), math.log(28)))
        return draw.group(draw.project(), [_clip(days * DAY)], sizes=(1, 2, 4, 8))

    return _blend(jobs, 0.5, long_runner, lambda: draw.ordinary(30 * MINUTE, 1.5))


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    pool: str  # its default pool: a file in configs/
    jobs: int  # jobs at load 0.9; proportionally more or fewer at other loads
    make: Callable[[Draw, Cluster, int], list[_Group]]

    @property
    def pool_path(self) -> Path:
        return CONFIGS / self.pool

    @property
    def summary(self) -> str:
        return (self.make.__doc__ or "").split("\n\n")[0].replace("\n    ", " ").strip()


FAMILIES = {
    f.name: f
    for f in (
        Family("heavy-tail", "families.toml", 2000, _heavy_tail),
        Family("flood", "families.toml", 2000, _flood),
        Family("gangs", "families.toml", 2000, _gangs),
        Family("flavors", "families-flavors.toml", 2000, _flavors),
        Family("long-runners", "families.toml", 2000, _long_runners),
    )
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise WorkloadError(f"unknown workload {name!r}; the workloads are: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def check_load(load: float, name: str = "load") -> None:
    low, high = LOAD_RANGE
    if not (isinstance(load, int | float) and low <= load <= high):  # NaN fails both
        raise WorkloadError(f"{name} must be a number from {low:g} to {high:g}, got {load!r}")


def check_seed(seed: int, name: str = "seed") -> None:
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high:
        shown = repr(seed) if len(repr(seed)) <= 40 else f"a number of {len(str(seed))} digits"
        raise WorkloadError(f"{name} must be a whole number from {low} to {high}, got {shown}")


def time_limit(duration: float, rng: random.Random) -> float:
    """What a user asks for: the first step at or above the run time times 1.1-3."""
    wanted = duration * rng.uniform(1.1, 3.0)
    return next((s for s in LIMIT_STEPS if s >= wanted), math.ceil(wanted / DAY) * DAY)


def generate_workload(
    name: str, cluster: Cluster, load: float, seed: int, jobs: int | None = None
) -> list[TraceJob]:
    """Family `name`'s jobs on `cluster` at `load` (see above), sorted by submission.

    jobs: how many (at least; a sweep is never cut); default the family's count scaled by
    load / 0.9, so that the span stays about the same across loads.
    """
    chosen = family(name)
    check_load(load)
    check_seed(seed)
    count = jobs if jobs is not None else max(1, round(chosen.jobs * load / REFERENCE_LOAD))
    if count < 1:
        raise WorkloadError(f"jobs must be at least 1, got {count}")
    rng = random.Random(f"gpupool workload {name} seed {seed}")  # str seeds: no hash salt
    draw = Draw(cluster, rng)
    groups = chosen.make(draw, cluster, count)
    rng.shuffle(groups)
    if len(groups) < 2:
        raise WorkloadError("a workload needs at least two submissions: ask for more jobs")
    # Submissions at random instants (a Poisson process, given their number), the first at
    # 0 and the last at 1, then stretched to the window that gives the load.
    instants = sorted(rng.random() for _ in groups)
    first, last = instants[0], instants[-1]
    positions = [(t - first) / (last - first) for t in instants]
    span = _window(groups, positions, load * cluster.gpus)
    workload: list[TraceJob] = []
    for group, position in zip(groups, positions, strict=True):
        submit = round(position * span, 1)
        for duration in group.durations:
            workload.append(
                TraceJob(
                    id=f"{name}-{len(workload)}",
                    submit_s=submit,
                    project=group.project,
                    gpus=group.gpus,
                    flavor=group.flavor,
                    duration_s=duration,
                    max_runtime_s=time_limit(duration, rng),
                    user=group.user,
                    line=len(workload) + 2,  # as in the trace file `write_generic` makes
                )
            )
    return workload


def _window(groups: list[_Group], positions: list[float], wanted_gpus: float) -> float:
    """The window (seconds) over which these submissions, at these positions in it (0..1),
    ask for `wanted_gpus` GPUs on average. Bisection: the GPUs asked for fall as the window
    grows (each job's part in it, min(duration, rest of window), grows slower than it)."""

    def asked(window: float) -> float:
        return (
            sum(
                g.gpus * sum(min(d, window * (1.0 - p)) for d in g.durations)
                for g, p in zip(groups, positions, strict=True)
            )
            / window
        )

    low, high = SHORTEST_S / 100, sum(g.demand for g in groups) / wanted_gpus
    if asked(low) < wanted_gpus:
        jobs = sum(len(g.durations) for g in groups)
        raise WorkloadError(
            f"{jobs} jobs cannot offer this load on a pool of this size: ask for more jobs"
        )
    while high - low > 1e-3:
        middle = (low + high) / 2
        low, high = (middle, high) if asked(middle) >= wanted_gpus else (low, middle)
    return low


def offered_load(workload: list[TraceJob], cluster: Cluster) -> float:
    """The families' load: GPU time asked for within the submission window, over the pool's."""
    start = min(j.submit_s for j in workload)
    end = max(j.submit_s for j in workload)
    if end <= start:
        return math.inf
    asked = sum(j.gpus * min(j.duration_s, end - j.submit_s) for j in workload)
    return asked / (cluster.gpus * (end - start))
