"""Ring channels: how many rings a group can run at once on disjoint links, as RCCL does on a mesh.

On a switch (NVSwitch, PCIe, the scale-out network) one ring already uses every GPU's single port in
each direction, so more rings would only share it: one channel. On a full mesh each pair of GPUs
has its own link, so edge-disjoint directed Hamiltonian cycles of the group run side by side, each
on links of its own: a TP8 group on an 8-GPU xGMI mesh gets 7 rings (all 7 links of every GPU), a
TP2 group one ring over its single link pair, a TP4 group 2 rings (the complete directed graph on 4
or 6 vertices has no decomposition into n-1 Hamiltonian cycles: Tillson 1980).
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Callable, Sequence

_SEARCH_BUDGET = 200_000     # DFS expansions per target before trying one ring fewer


@lru_cache(maxsize=None)
def disjoint_hamiltonian_cycles(n: int) -> tuple[tuple[int, ...], ...]:
    """The most edge-disjoint directed Hamiltonian cycles on n vertices we find (n - 1 at best)."""
    if n <= 1:
        return ((0,),) if n == 1 else ()
    if n == 2:
        return ((0, 1),)
    for target in range(n - 1, 0, -1):
        found = _search(n, target)
        if found:
            return found
    return (tuple(range(n)),)


def _search(n: int, target: int):
    rng = random.Random(n * 1000 + target)     # deterministic
    budget = [_SEARCH_BUDGET]
    used: set[tuple[int, int]] = set()
    cycles: list[tuple[int, ...]] = []

    def extend(path: list[int], visited: set[int]) -> bool:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        if len(path) == n:
            edge = (path[-1], 0)
            if edge in used:
                return False
            cycle_edges = list(zip(path, path[1:])) + [edge]
            used.update(cycle_edges)
            cycles.append(tuple(path))
            if len(cycles) == target or extend([0], {0}):
                return True
            cycles.pop()
            used.difference_update(cycle_edges)
            return False
        candidates = [v for v in range(n) if v not in visited and (path[-1], v) not in used]
        rng.shuffle(candidates)
        for v in candidates:
            path.append(v)
            visited.add(v)
            if extend(path, visited):
                return True
            path.pop()
            visited.discard(v)
        return False

    return tuple(cycles) if extend([0], {0}) else None


def ring_channels(ranks: Sequence[int], direct: Callable[[int, int], bool]) -> tuple[tuple[int, ...], ...]:
    """Rings (orders of ranks) to run concurrently: disjoint cycles if every pair has a direct
    link, else one ring in the given order."""
    ranks = tuple(ranks)
    n = len(ranks)
    if n > 2 and all(direct(a, b) for a in ranks for b in ranks if a != b):
        return tuple(tuple(ranks[i] for i in cycle) for cycle in disjoint_hamiltonian_cycles(n))
    return (ranks,)
