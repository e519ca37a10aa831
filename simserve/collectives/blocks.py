"""Building blocks of schedules (phases as lists of moves), shared by the algorithm builders. Pure."""
from __future__ import annotations

import math
from typing import Callable

from simserve.collectives.schedule import Move, transfer
from simserve.errors import ConfigError


class TopologyFacts:
    """What schedule builders need to know about where ranks sit (duck-typed by network.Topology)."""

    def __init__(self, node_of: Callable[[int], int] = lambda r: 0,
                 direct: Callable[[int, int], bool] = lambda a, b: False, nvls: bool = False,
                 nics_per_node: int = 1, wire_ratio: float = 1.0):
        self.node_of, self.direct, self.nvls, self.nics_per_node = node_of, direct, nvls, nics_per_node
        self.wire_ratio = wire_ratio          # bytes on the wire per data byte (QuickReduce's codec)


def is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def require_pow2(algo: str, op: str, n: int) -> None:
    if not is_pow2(n):
        raise ConfigError(f"{algo} {op} needs a power-of-two group; got {n} ranks (use ring)")


def ring_rs(ring, blocks_by_pos, bb) -> list[list[Move]]:
    """Ring reduce-scatter: after n-1 steps position i holds blocks_by_pos[i] fully reduced."""
    n = len(ring)
    return [[transfer(ring[i], ring[(i + 1) % n], blocks_by_pos[(i - s - 1) % n], bb, reduce=True)
             for i in range(n)] for s in range(n - 1)]


def ring_ag(ring, blocks_by_pos, bb) -> list[list[Move]]:
    """Ring all-gather: position i starts with blocks_by_pos[i]; after n-1 steps all hold all."""
    n = len(ring)
    return [[transfer(ring[i], ring[(i + 1) % n], blocks_by_pos[(i - s) % n], bb)
             for i in range(n)] for s in range(n - 1)]


def fold(ranks):
    """MPICH's non-power-of-two fold: pairs (extra, partner) and the power-of-two participants."""
    n = len(ranks)
    p2 = 1 << (n.bit_length() - 1)
    extra = n - p2
    pairs = [(ranks[2 * i], ranks[2 * i + 1]) for i in range(extra)]
    core = [ranks[2 * i + 1] for i in range(extra)] + list(ranks[2 * extra:])
    return pairs, core


def rd_allreduce(ranks, blocks, bb) -> list[list[Move]]:
    pairs, core = fold(ranks)
    phases: list[list[Move]] = []
    if pairs:
        phases.append([transfer(a, b, blocks, bb, reduce=True) for a, b in pairs])
    p2 = len(core)
    for k in range(p2.bit_length() - 1):
        phases.append([transfer(core[j], core[j ^ (1 << k)], blocks, bb, reduce=True) for j in range(p2)])
    if pairs:
        phases.append([transfer(b, a, blocks, bb) for a, b in pairs])
    return phases


def halving_rs(core, blocks, bb):
    """Recursive halving over a power-of-two group; returns phases and each member's block range."""
    p2 = len(core)
    ranges = {j: (0, p2) for j in range(p2)}
    phases = []
    d = p2 // 2
    while d >= 1:
        moves = []
        for j in range(p2):
            lo, hi = ranges[j]
            mid = (lo + hi) // 2
            keep, send = ((mid, hi), (lo, mid)) if j & d else ((lo, mid), (mid, hi))
            moves.append(transfer(core[j], core[j ^ d], blocks[send[0]:send[1]], bb, reduce=True))
            ranges[j] = keep
        phases.append(moves)
        d //= 2
    return phases, ranges


def doubling_ag(core, blocks, bb, ranges):
    p2 = len(core)
    ranges = dict(ranges)
    phases = []
    d = 1
    while d < p2:
        moves = [transfer(core[j], core[j ^ d], blocks[ranges[j][0]:ranges[j][1]], bb) for j in range(p2)]
        ranges = {j: (min(ranges[j][0], ranges[j ^ d][0]), max(ranges[j][1], ranges[j ^ d][1]))
                  for j in range(p2)}
        phases.append(moves)
        d *= 2
    return phases


def tree_levels(n: int, mirrored: bool):
    """(child position, parent position, depth) edges of a binary heap over positions, optionally
    over mirrored positions so that one tree's leaves are the other's inner nodes (NCCL's double
    binary tree idea)."""
    pos = (lambda p: n - 1 - p) if mirrored else (lambda p: p)
    return [(pos(p), pos((p - 1) // 2), int(math.log2(p + 1))) for p in range(1, n)]



def by_node(ranks, topo):
    nodes: dict[int, list[int]] = {}
    for r in ranks:
        nodes.setdefault(topo.node_of(r), []).append(r)
    return list(nodes.values())
