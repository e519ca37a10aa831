"""Schedule builders: (op, ranks, bytes, topology facts) -> Schedule. Pure; no SimPy.

Ranks are GPU ids in the caller's order (node-major for multi-node groups). Byte counts are floats
(a block is S / number of blocks; real libraries pad, which changes nothing measurable).
Group sizes that are not powers of two: recursive doubling and halving-doubling all-reduce fold the
extra ranks in first and out last (MPICH's approach); all-gather by recursive doubling and
reduce-scatter by recursive halving need a power of two and say so.
All-reduce algorithms live in a registry (`collectives.allreduce.ALLREDUCE`); the other ops' sets
are fixed here.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Sequence

from simserve.collectives.allreduce import ALLREDUCE, allreduce
from simserve.collectives.blocks import TopologyFacts, doubling_ag, halving_rs, require_pow2, ring_ag, ring_rs
from simserve.collectives.rings import ring_channels
from simserve.collectives.schedule import Schedule, make_phase, merge_parallel, transfer
from simserve.errors import ConfigError

_FIXED = {
    "allgather": ("ring", "recursive_doubling", "direct"),
    "reducescatter": ("ring", "halving_doubling", "direct"),
    "alltoall": ("direct", "pairwise"),
    "sendrecv": ("direct",),
}


class _Algorithms(Mapping):
    """op -> algorithm names; all-reduce's are the registry's current names."""

    def __getitem__(self, op: str) -> tuple[str, ...]:
        if op == "allreduce":
            return ALLREDUCE.names()
        return _FIXED[op]

    def __iter__(self) -> Iterator[str]:
        return iter(("allreduce", *_FIXED))

    def __len__(self) -> int:
        return 1 + len(_FIXED)


ALGORITHMS = _Algorithms()

__all__ = ["ALGORITHMS", "TopologyFacts", "allgather", "allreduce", "alltoall", "build", "reducescatter",
           "sendrecv"]


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
        rings = ring_channels(ranks, topo.direct, topo.node_of, getattr(topo, "nics_per_node", 1))
        nblocks = len(rings) * n
        bb = (nbytes / nblocks,) * nblocks
        owner = [0] * nblocks
        per_ring = []
        for c, ring in enumerate(rings):
            by_pos = [(c * n + i,) for i in range(n)]
            for i, r in enumerate(ring):
                owner[c * n + i] = r
            per_ring.append((ring_ag if gather else ring_rs)(ring, by_pos, bb))
        phases = merge_parallel(per_ring)
    elif algo in ("recursive_doubling", "halving_doubling"):
        require_pow2(algo, op, n)
        bb = (nbytes / n,) * n
        everything = tuple(range(n))
        rs, ranges = halving_rs(ranks, everything, bb)
        owner = [0] * n
        for j, (lo, _hi) in ranges.items():
            owner[lo] = ranks[j]
        if gather:
            phases = doubling_ag(ranks, everything, bb, ranges)
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
    matrix = _alltoall_matrix(n, nbytes, matrix)
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


def _alltoall_matrix(n: int, nbytes, matrix):
    if matrix is None:
        if nbytes is None:
            raise ConfigError("alltoall needs nbytes or a per-pair byte matrix")
        return [[nbytes / n] * n for _ in range(n)]
    if len(matrix) != n or any(len(row) != n for row in matrix):
        raise ConfigError(f"alltoall matrix must be {n}x{n} for {n} ranks")
    if any(x < 0 for row in matrix for x in row):
        raise ConfigError("alltoall matrix entries must be >= 0 bytes")
    return matrix


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
