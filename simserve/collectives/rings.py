"""Ring channels: which rings a group runs at once, and on which links.

One node, switch (NVSwitch, PCIe): one ring already uses every GPU's single port in each
direction, so more rings would only share it (in the fluid model extra channels change nothing):
one channel.
One node, full mesh: each pair of GPUs has its own link. Edge-disjoint directed Hamiltonian cycles
run side by side on links of their own: a TP8 group on an 8-GPU xGMI mesh gets 7 rings (all 7 links
of every GPU), TP2 one ring. The complete directed graph on 4 or 6 vertices has no decomposition
into n-1 Hamiltonian cycles (Tillson 1980), so there every directed Hamiltonian cycle runs, each
with an equal share of the data: every directed link carries (n-2)! of them at a fractional rate,
and each GPU still sends on all n-1 of its member links (TP4: 6 rings, 3 links' worth; RCCL builds
its mesh rings from the same graph search over the xGMI links, ROCm/rccl src/graph/search.cc).
Several nodes: NCCL runs one channel per NIC (rail), each ring entering a node through one NIC
and leaving through the next node's NIC of the same rail, so a node's NICs carry the inter-node
traffic together (NCCL's ring graph search pairs a channel with a NIC, src/graph/search.cc; with
PXN the NIC used is the rail's, docs "NCCL_PXN_DISABLE"). Channel c enters node m at local GPU
(c*step + m) mod g and leaves from the next one, so the next node is entered on the same rail.
"""
from __future__ import annotations

import itertools
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


@lru_cache(maxsize=None)
def mesh_cycles(n: int) -> tuple[tuple[int, ...], ...]:
    """Cycles that load every directed edge of the complete graph on n vertices equally: n-1
    disjoint ones where they exist, else all (n-1)! directed Hamiltonian cycles (n = 4, 6)."""
    cycles = disjoint_hamiltonian_cycles(n)
    if n > 2 and len(cycles) < n - 1:
        return tuple((0,) + rest for rest in itertools.permutations(range(1, n)))
    return cycles


def ring_channels(ranks: Sequence[int], direct: Callable[[int, int], bool],
                  node_of: Callable[[int], int] | None = None, nics_per_node: int = 1) -> tuple[tuple[int, ...], ...]:
    """Rings (orders of ranks) to run concurrently (module doc)."""
    ranks = tuple(ranks)
    n = len(ranks)
    if node_of is not None:
        nodes: dict[int, list[int]] = {}
        for r in ranks:
            nodes.setdefault(node_of(r), []).append(r)
        sizes = {len(m) for m in nodes.values()}
        if len(nodes) > 1 and len(sizes) == 1:
            return _rail_rings(list(nodes.values()), sizes.pop(), max(1, nics_per_node))
    if n > 2 and all(direct(a, b) for a in ranks for b in ranks if a != b):
        return tuple(tuple(ranks[i] for i in cycle) for cycle in mesh_cycles(n))
    return (ranks,)


def _rail_rings(groups, g: int, nics: int) -> tuple[tuple[int, ...], ...]:
    channels = min(g, nics)
    step = g // channels
    rings = []
    for c in range(channels):
        ring: list[int] = []
        for m, members in enumerate(groups):
            entry = (c * step + m) % g
            order = [entry] + [(entry + k) % g for k in range(2, g)] + ([(entry + 1) % g] if g > 1 else [])
            ring += [members[i] for i in order]
        rings.append(tuple(ring))
    return tuple(rings)
