"""Schedule builders: (op, ranks, bytes, topology facts) -> Schedule. Pure; no SimPy.

Ranks are GPU ids in the caller's order (node-major for multi-node groups). Byte counts are floats
(a block is S / number of blocks; real libraries pad, which changes nothing measurable).
Group sizes that are not powers of two: recursive doubling and halving-doubling all-reduce fold the
extra ranks in first and out last (MPICH's approach); all-gather by recursive doubling and
reduce-scatter by recursive halving need a power of two and say so.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from simserve.collectives.rings import ring_channels
from simserve.collectives.schedule import (Move, Schedule, SwitchReduce, make_phase, merge_parallel,
                                           transfer)
from simserve.errors import ConfigError

# Tree pipelining: NCCL's Simple protocol moves 512 KiB slices (NCCL_BUFFSIZE 4 MiB / NCCL_STEPS 8).
TREE_CHUNK_BYTES = 512 * 1024
TREE_MAX_CHUNKS = 64          # bounds the phases of a huge message; pipeline fill then costs <~10%

ALGORITHMS = {
    "allreduce": ("ring", "recursive_doubling", "halving_doubling", "tree", "nvls", "one_shot",
                  "two_shot", "hierarchical"),
    "allgather": ("ring", "recursive_doubling", "direct"),
    "reducescatter": ("ring", "halving_doubling", "direct"),
    "alltoall": ("direct", "pairwise"),
    "sendrecv": ("direct",),
}


class TopologyFacts:
    """What schedule builders need to know about where ranks sit (duck-typed by network.Topology)."""

    def __init__(self, node_of: Callable[[int], int] = lambda r: 0,
                 direct: Callable[[int, int], bool] = lambda a, b: False, nvls: bool = False):
        self.node_of, self.direct, self.nvls = node_of, direct, nvls


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _require_pow2(algo: str, op: str, n: int) -> None:
    if not _is_pow2(n):
        raise ConfigError(f"{algo} {op} needs a power-of-two group; got {n} ranks (use ring)")


# ---- building blocks (phases as lists of moves) ------------------------------------------------

def _ring_rs(ring, blocks_by_pos, bb) -> list[list[Move]]:
    """Ring reduce-scatter: after n-1 steps position i holds blocks_by_pos[i] fully reduced."""
    n = len(ring)
    return [[transfer(ring[i], ring[(i + 1) % n], blocks_by_pos[(i - s - 1) % n], bb, reduce=True)
             for i in range(n)] for s in range(n - 1)]


def _ring_ag(ring, blocks_by_pos, bb) -> list[list[Move]]:
    """Ring all-gather: position i starts with blocks_by_pos[i]; after n-1 steps all hold all."""
    n = len(ring)
    return [[transfer(ring[i], ring[(i + 1) % n], blocks_by_pos[(i - s) % n], bb)
             for i in range(n)] for s in range(n - 1)]


def _fold(ranks):
    """MPICH's non-power-of-two fold: pairs (extra, partner) and the power-of-two participants."""
    n = len(ranks)
    p2 = 1 << (n.bit_length() - 1)
    extra = n - p2
    pairs = [(ranks[2 * i], ranks[2 * i + 1]) for i in range(extra)]
    core = [ranks[2 * i + 1] for i in range(extra)] + list(ranks[2 * extra:])
    return pairs, core


def _rd_allreduce(ranks, blocks, bb) -> list[list[Move]]:
    pairs, core = _fold(ranks)
    phases: list[list[Move]] = []
    if pairs:
        phases.append([transfer(a, b, blocks, bb, reduce=True) for a, b in pairs])
    p2 = len(core)
    for k in range(p2.bit_length() - 1):
        phases.append([transfer(core[j], core[j ^ (1 << k)], blocks, bb, reduce=True) for j in range(p2)])
    if pairs:
        phases.append([transfer(b, a, blocks, bb) for a, b in pairs])
    return phases


def _halving_rs(core, blocks, bb):
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


def _doubling_ag(core, blocks, bb, ranges):
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


def _tree_levels(n: int, mirrored: bool):
    """(child position, parent position, depth) edges of a binary heap over positions, optionally
    over mirrored positions so that one tree's leaves are the other's inner nodes (NCCL's double
    binary tree idea)."""
    pos = (lambda p: n - 1 - p) if mirrored else (lambda p: p)
    return [(pos(p), pos((p - 1) // 2), int(math.log2(p + 1))) for p in range(1, n)]


# ---- all-reduce ----------------------------------------------------------------------------------

def allreduce(algo: str, ranks: Sequence[int], nbytes: float, topo: TopologyFacts) -> Schedule:
    ranks = tuple(ranks)
    n = len(ranks)
    if n == 1:
        return Schedule("allreduce", algo, ranks, nbytes, (), (float(nbytes),))
    if algo == "hierarchical":
        return _hierarchical_allreduce(ranks, nbytes, topo)
    if algo == "ring":
        rings = ring_channels(ranks, topo.direct)
        nblocks = len(rings) * n
        bb = (nbytes / nblocks,) * nblocks
        rs, ag = [], []
        for c, ring in enumerate(rings):
            by_pos = [(c * n + i,) for i in range(n)]
            rs.append(_ring_rs(ring, by_pos, bb))
            ag.append(_ring_ag(ring, by_pos, bb))
        phases = merge_parallel(rs) + merge_parallel(ag)
        notes = f"{len(rings)} ring channel(s)"
    elif algo == "recursive_doubling":
        bb = (float(nbytes),)
        phases, notes = _rd_allreduce(ranks, (0,), bb), ""
    elif algo == "halving_doubling":
        pairs, core = _fold(ranks)
        bb = (nbytes / len(core),) * len(core)
        everything = tuple(range(len(core)))
        rs, ranges = _halving_rs(core, everything, bb)
        phases = ([[transfer(a, b, everything, bb, reduce=True) for a, b in pairs]] if pairs else [])
        phases += rs + _doubling_ag(core, everything, bb, ranges)
        phases += [[transfer(b, a, everything, bb) for a, b in pairs]] if pairs else []
        notes = f"{len(pairs)} rank(s) folded" if pairs else ""
    elif algo == "tree":
        phases, bb, notes = _double_binary_tree(ranks, nbytes)
    elif algo == "one_shot":
        bb = (float(nbytes),)
        phases = [[transfer(a, b, (0,), bb, reduce=True) for a in ranks for b in ranks if a != b]]
        notes = ""
    elif algo == "two_shot":
        bb = (nbytes / n,) * n
        phases = [[transfer(a, ranks[j], (j,), bb, reduce=True) for a in ranks for j in range(n) if a != ranks[j]],
                  [transfer(ranks[j], b, (j,), bb) for j in range(n) for b in ranks if b != ranks[j]]]
        notes = ""
    elif algo == "nvls":
        if not topo.nvls:
            raise ConfigError("nvls needs an NVSwitch with in-switch reduction (dgx-h100, dgx-h200, dgx-b200)")
        if len({topo.node_of(r) for r in ranks}) > 1:
            raise ConfigError("nvls reduces inside one NVSwitch node; this group spans nodes (use hierarchical)")
        bb = (float(nbytes),)
        phases = [[SwitchReduce(ranks, ranks, float(nbytes), (0,))]]
        notes = ""
    else:
        raise ConfigError(f"unknown all-reduce algorithm {algo!r}; choose one of "
                          f"{', '.join(ALGORITHMS['allreduce'])} or auto")
    return Schedule("allreduce", algo, ranks, float(nbytes), tuple(make_phase(p, bb) for p in phases),
                    tuple(bb), notes=notes)


def _double_binary_tree(ranks, nbytes):
    n = len(ranks)
    chunks = max(1, min(TREE_MAX_CHUNKS, math.ceil(nbytes / 2 / TREE_CHUNK_BYTES)))
    bb = (nbytes / (2 * chunks),) * (2 * chunks)
    trees = [_tree_levels(n, mirrored=False), _tree_levels(n, mirrored=True)]
    depth = max(d for _, _, d in trees[0])
    # stages: reduce from the deepest level up, then broadcast from the root down
    stages = [("reduce", d) for d in range(depth, 0, -1)] + [("bcast", d) for d in range(1, depth + 1)]
    phases: list[list[Move]] = [[] for _ in range(chunks + len(stages) - 1)]
    for t, edges in enumerate(trees):
        for c in range(chunks):
            block = (t * chunks + c,)
            for s, (kind, d) in enumerate(stages):
                for child, parent, level in edges:
                    if level != d:
                        continue
                    if kind == "reduce":
                        phases[c + s].append(transfer(ranks[child], ranks[parent], block, bb, reduce=True))
                    else:
                        phases[c + s].append(transfer(ranks[parent], ranks[child], block, bb))
    return phases, bb, f"2 trees x {chunks} pipelined chunk(s), depth {depth}"


def _by_node(ranks, topo):
    nodes: dict[int, list[int]] = {}
    for r in ranks:
        nodes.setdefault(topo.node_of(r), []).append(r)
    return list(nodes.values())


def _hierarchical_allreduce(ranks, nbytes, topo) -> Schedule:
    """Intra-node ring RS -> inter-node recursive-doubling AR of each 1/G shard over the GPUs that
    hold it (one rail each; NVRAR's structure) -> intra-node ring AG."""
    groups = _by_node(ranks, topo)
    sizes = {len(g) for g in groups}
    if len(sizes) != 1:
        raise ConfigError(f"hierarchical all-reduce needs the same number of GPUs on every node; got "
                          f"{sorted(len(g) for g in groups)}")
    g_size = sizes.pop()
    if len(groups) == 1:                       # one node: the hierarchy collapses to its ring
        sched = allreduce("ring", ranks, nbytes, topo)
        return Schedule("allreduce", "ring", sched.ranks, sched.nbytes, sched.phases, sched.block_bytes,
                        notes="hierarchical on one node is its intra-node ring")
    local_rings = ring_channels(groups[0], topo.direct)
    index_of = {r: i for i, r in enumerate(groups[0])}
    rings_local = [[index_of[r] for r in ring] for ring in local_rings]
    nblocks = len(rings_local) * g_size
    bb = (nbytes / nblocks,) * nblocks
    rs, ag, owned = [], [], {}
    for group in groups:
        rs_g, ag_g = [], []
        for c, ring_local in enumerate(rings_local):
            ring = [group[i] for i in ring_local]
            by_pos = [(c * g_size + i,) for i in range(g_size)]
            rs_g.append(_ring_rs(ring, by_pos, bb))
            ag_g.append(_ring_ag(ring, by_pos, bb))
            for i, r in enumerate(ring):
                owned.setdefault(r, []).append(c * g_size + i)
        rs.append(merge_parallel(rs_g))
        ag.append(merge_parallel(ag_g))
    inter = [_rd_allreduce([group[i] for group in groups], tuple(owned[groups[0][i]]), bb)
             for i in range(g_size)]
    # the block ids a local index owns are the same on every node by construction
    assert all(owned[group[i]] == owned[groups[0][i]] for group in groups for i in range(g_size))
    phases = merge_parallel(rs) + merge_parallel(inter) + merge_parallel(ag)
    return Schedule("allreduce", "hierarchical", tuple(ranks), float(nbytes),
                    tuple(make_phase(p, bb) for p in phases), tuple(bb),
                    notes=f"{len(groups)} nodes x {g_size} GPUs, {len(rings_local)} intra ring(s), RD inter")


# ---- all-gather / reduce-scatter ---------------------------------------------------------------

def allgather(algo: str, ranks: Sequence[int], nbytes: float, topo: TopologyFacts) -> Schedule:
    return _ag_rs("allgather", algo, tuple(ranks), float(nbytes), topo)


def reducescatter(algo: str, ranks: Sequence[int], nbytes: float, topo: TopologyFacts) -> Schedule:
    return _ag_rs("reducescatter", algo, tuple(ranks), float(nbytes), topo)


def _ag_rs(op, algo, ranks, nbytes, topo) -> Schedule:
    n = len(ranks)
    gather = op == "allgather"
    if algo not in ALGORITHMS[op]:
        raise ConfigError(f"unknown {op} algorithm {algo!r}; choose one of {', '.join(ALGORITHMS[op])} or auto")
    if n == 1:
        return Schedule(op, algo, ranks, nbytes, (), (nbytes,), block_owner=ranks)
    if algo == "ring":
        rings = ring_channels(ranks, topo.direct)
        nblocks = len(rings) * n
        bb = (nbytes / nblocks,) * nblocks
        owner = [0] * nblocks
        per_ring = []
        for c, ring in enumerate(rings):
            by_pos = [(c * n + i,) for i in range(n)]
            for i, r in enumerate(ring):
                owner[c * n + i] = r
            per_ring.append((_ring_ag if gather else _ring_rs)(ring, by_pos, bb))
        phases = merge_parallel(per_ring)
    elif algo in ("recursive_doubling", "halving_doubling"):
        _require_pow2(algo, op, n)
        bb = (nbytes / n,) * n
        everything = tuple(range(n))
        rs, ranges = _halving_rs(ranks, everything, bb)
        owner = [0] * n
        for j, (lo, _hi) in ranges.items():
            owner[lo] = ranks[j]
        if gather:
            phases = _doubling_ag(ranks, everything, bb, ranges)
        else:
            phases = rs
    else:   # direct: every rank sends each peer the peer's shard (RS) or its own shard (AG) at once
        bb = (nbytes / n,) * n
        owner = list(ranks)
        if gather:
            phases = [[transfer(ranks[j], b, (j,), bb) for j in range(n) for b in ranks if b != ranks[j]]]
        else:
            phases = [[transfer(a, ranks[j], (j,), bb, reduce=True) for a in ranks for j in range(n)
                       if a != ranks[j]]]
    return Schedule(op, algo, ranks, nbytes, tuple(make_phase(p, bb) for p in phases), tuple(bb),
                    block_owner=tuple(owner))


# ---- all-to-all and send/recv ------------------------------------------------------------------

def alltoall(algo: str, ranks: Sequence[int], nbytes: float | None = None,
             matrix: Sequence[Sequence[float]] | None = None, topo: TopologyFacts | None = None) -> Schedule:
    """matrix[i][j]: bytes position i sends to position j (the diagonal stays local). Without a
    matrix, nbytes is each rank's send buffer split evenly (nccl-tests' alltoall)."""
    ranks = tuple(ranks)
    n = len(ranks)
    if matrix is None:
        if nbytes is None:
            raise ConfigError("alltoall needs nbytes or a per-pair byte matrix")
        matrix = [[nbytes / n] * n for _ in range(n)]
    if len(matrix) != n or any(len(row) != n for row in matrix):
        raise ConfigError(f"alltoall matrix must be {n}x{n} for {n} ranks")
    if any(x < 0 for row in matrix for x in row):
        raise ConfigError("alltoall matrix entries must be >= 0 bytes")
    bb = tuple(float(matrix[i][j]) for i in range(n) for j in range(n))
    owner = tuple(ranks[i] for i in range(n) for _ in range(n))
    dest = tuple(ranks[j] for _ in range(n) for j in range(n))

    def move(i, j):
        return transfer(ranks[i], ranks[j], (i * n + j,), bb)

    if algo == "direct":
        phases = [[move(i, j) for i in range(n) for j in range(n) if i != j and bb[i * n + j] > 0]]
    elif algo == "pairwise":
        phases = [[move(i, (i + k) % n) for i in range(n) if bb[i * n + (i + k) % n] > 0] for k in range(1, n)]
    else:
        raise ConfigError(f"unknown alltoall algorithm {algo!r}; choose one of {', '.join(ALGORITHMS['alltoall'])} or auto")
    phases = [p for p in phases if p]
    total = float(nbytes) if nbytes is not None else sum(bb) / n
    return Schedule("alltoall", algo, ranks, total, tuple(make_phase(p, bb) for p in phases), bb,
                    block_owner=owner, block_dest=dest)


def sendrecv(ranks: Sequence[int], nbytes: float) -> Schedule:
    if len(ranks) != 2:
        raise ConfigError(f"sendrecv takes exactly 2 ranks (src, dst); got {len(ranks)}")
    src, dst = ranks
    bb = (float(nbytes),)
    phases = (make_phase([transfer(src, dst, (0,), bb)], bb),) if src != dst else ()
    return Schedule("sendrecv", "direct", (src, dst), float(nbytes), phases, bb,
                    block_owner=(src,), block_dest=(dst,))


def build(op: str, algo: str, ranks: Sequence[int], nbytes: float, topo: TopologyFacts | None = None,
          matrix=None) -> Schedule:
    """One entry point for every op (algo must be concrete; `select.choose` resolves auto)."""
    topo = topo or TopologyFacts()
    if len(ranks) == 0:
        raise ConfigError("a collective needs at least one rank")
    if len(set(ranks)) != len(ranks):
        raise ConfigError(f"ranks of a collective must be distinct; got {list(ranks)}")
    if nbytes is not None and nbytes < 0:
        raise ConfigError(f"message size must be >= 0 bytes; got {nbytes}")
    if op == "allreduce":
        return allreduce(algo, ranks, nbytes, topo)
    if op in ("allgather", "reducescatter"):
        return _ag_rs(op, algo, tuple(ranks), float(nbytes), topo)
    if op == "alltoall":
        return alltoall(algo, ranks, nbytes, matrix, topo)
    if op == "sendrecv":
        return sendrecv(ranks, nbytes)
    raise ConfigError(f"unknown collective op {op!r}; choose one of {', '.join(ALGORITHMS)}")
