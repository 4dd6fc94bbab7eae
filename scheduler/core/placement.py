"""Where a job's GPUs go: an index of free GPUs per node for one flavor.

A job that fits one node goes to the best-fit node (least free GPUs that still fit), which
keeps whole nodes free for large jobs. A larger job (or one that asks for a node count) is a
gang of per-node pieces placed all-or-nothing on the fewest nodes, preferring one topology
group. Ties go to the node that sorts first by name, so placement is deterministic.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from scheduler.core.types import Node, Piece


def gang_sizes(gpus: int, nodes: int | None, node_gpus: int) -> list[int]:
    """Per-node piece sizes for a job on nodes of `node_gpus` GPUs."""
    if nodes:
        return [gpus // nodes] * nodes
    if gpus <= node_gpus or node_gpus <= 0:  # no node can take it: one piece, never placed
        return [gpus]
    whole, rest = divmod(gpus, node_gpus)
    return [node_gpus] * whole + ([rest] if rest else [])


class FlavorPool:
    """Free GPUs of the schedulable (`up`) nodes of one flavor, indexed for best fit.

    `bucket[k]` is a heap of node indices whose free count is k (lazily cleaned: an entry is
    live only while the node still has k free), so best fit is a scan over at most
    `max_gpus` buckets and O(log n) per update.
    """

    def __init__(self, flavor: str, nodes: Sequence[Node]) -> None:
        self.flavor = flavor
        ordered = sorted(nodes, key=lambda n: n.name)
        self.names = [n.name for n in ordered]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.capacity = [n.gpus for n in ordered]
        self.group = [n.group for n in ordered]
        self.free = list(self.capacity)
        self.max_gpus = max(self.capacity, default=0)
        self.total_capacity = sum(self.capacity)
        self.total_free = self.total_capacity
        self._live = [0] * (self.max_gpus + 1)
        self._bucket: list[list[int]] = [[] for _ in range(self.max_gpus + 1)]
        for i, cap in enumerate(self.capacity):
            self._live[cap] += 1
            self._bucket[cap].append(i)
        for heap in self._bucket:
            heapq.heapify(heap)
        self._groups: dict[str, list[int]] = {}
        for i, g in enumerate(self.group):
            self._groups.setdefault(g, []).append(i)

    # -- updates ---------------------------------------------------------------------------

    def _set_free(self, i: int, value: int) -> None:
        old = self.free[i]
        if value == old:
            return
        if value < 0 or value > self.capacity[i]:
            raise ValueError(f"node {self.names[i]}: free GPUs would be {value}")
        self.free[i] = value
        self.total_free += value - old
        self._live[old] -= 1
        self._live[value] += 1
        if value:
            heap = self._bucket[value]
            heapq.heappush(heap, i)
            if len(heap) > 4 * self._live[value] + 64:
                self._bucket[value] = [j for j in set(heap) if self.free[j] == value]
                heapq.heapify(self._bucket[value])

    def take(self, pieces: Iterable[Piece]) -> None:
        for name, n in pieces:
            i = self.index[name]
            self._set_free(i, self.free[i] - n)

    def give(self, pieces: Iterable[Piece]) -> None:
        for name, n in pieces:
            i = self.index.get(name)
            if i is not None:  # a node that left the pool frees nothing here
                self._set_free(i, self.free[i] + n)

    # -- queries ---------------------------------------------------------------------------

    def _top(self, k: int) -> int | None:
        """The lowest-index node with exactly k free GPUs, if any."""
        if not self._live[k]:
            return None
        heap, free = self._bucket[k], self.free
        while free[heap[0]] != k:
            heapq.heappop(heap)
        return heap[0]

    def max_free(self) -> int:
        for k in range(self.max_gpus, 0, -1):
            if self._live[k]:
                return k
        return 0

    def nodes_with_at_least(self, k: int) -> int:
        return sum(self._live[max(k, 1) :])

    def nodes_free_at_least(self, k: int) -> list[int]:
        """Every node with at least k free GPUs, in index order."""
        found = {
            i
            for free in range(max(k, 1), self.max_gpus + 1)
            if self._live[free]
            for i in self._bucket[free]
            if self.free[i] == free
        }
        return sorted(found)

    def best_fit(self, gpus: int) -> int | None:
        for k in range(gpus, self.max_gpus + 1):
            i = self._top(k)
            if i is not None:
                return i
        return None

    def could_fit(self, sizes: Sequence[int]) -> bool:
        """A cheap necessary condition for place(sizes)."""
        if sum(sizes) > self.total_free:
            return False
        if len(sizes) == 1:
            return self.nodes_with_at_least(sizes[0]) > 0
        return self.nodes_with_at_least(min(sizes)) >= len(sizes) and (
            self.nodes_with_at_least(max(sizes)) >= sizes.count(max(sizes))
        )

    def place(self, sizes: Sequence[int]) -> tuple[Piece, ...] | None:
        """Choose nodes for every piece, or None (all or nothing). Does not take them."""
        if not self.could_fit(sizes):
            return None
        if len(sizes) == 1:
            i = self.best_fit(sizes[0])
            return None if i is None else ((self.names[i], sizes[0]),)
        return self._place_gang(sizes)

    def _place_gang(self, sizes: Sequence[int]) -> tuple[Piece, ...] | None:
        best: tuple[int, list[int]] | None = None
        for members in self._groups.values():
            chosen = self._assign(sizes, members)
            if chosen is not None:
                spare = sum(self.free[i] for i in members)
                if best is None or spare < best[0]:
                    best = (spare, chosen)
        if best is None:  # no single group can hold it: span groups
            everything = list(range(len(self.names)))
            chosen = self._assign(sizes, everything)
            if chosen is None:
                return None
            best = (0, chosen)
        order = sorted(sizes, reverse=True)
        return tuple((self.names[i], n) for i, n in zip(best[1], order, strict=True))

    def _assign(self, sizes: Sequence[int], members: Sequence[int]) -> list[int] | None:
        """Largest piece first, each to the best-fitting unused node among `members`."""
        candidates = sorted((self.free[i], i) for i in members if self.free[i] > 0)
        used: set[int] = set()
        chosen: list[int] = []
        for size in sorted(sizes, reverse=True):
            pick = next(
                (i for free, i in candidates if free >= size and i not in used),
                None,
            )
            if pick is None:
                return None
            used.add(pick)
            chosen.append(pick)
        return chosen
