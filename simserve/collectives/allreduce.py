"""All-reduce algorithms as a registry: adding one is a module that registers a builder.

    from simserve.collectives.allreduce import ALLREDUCE, AllReduceAlgorithm
    ALLREDUCE.register("mine", AllReduceAlgorithm(build=my_builder))

`build(ranks, nbytes, topo) -> Schedule` (pure; `topo` is duck-typed `TopologyFacts`);
`applies(topology, ranks, nbytes) -> bool` says whether `auto` may consider it for this group and
size (default: always). `priority` orders `auto`'s candidates (ties go to the lower value). The
config's allowed values (`collectives.allreduce`), the CLI help and `simserve catalog` read
`ALLREDUCE.names()`. The built-in algorithms below register themselves the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from simserve.collectives.blocks import (TopologyFacts, by_node, doubling_ag, fold, halving_rs, rd_allreduce,
                                         ring_ag, ring_rs, tree_levels)
from simserve.collectives.rings import ring_channels
from simserve.collectives.schedule import Move, Schedule, SwitchReduce, make_phase, merge_parallel, transfer
from simserve.errors import ConfigError
from simserve.registry import Registry

# Tree pipelining: NCCL's Simple protocol moves 512 KiB slices (NCCL_BUFFSIZE 4 MiB / NCCL_STEPS 8).
TREE_CHUNK_BYTES = 512 * 1024
TREE_MAX_CHUNKS = 64          # bounds the phases of a huge message; pipeline fill then costs <~10%


def _always(topology, ranks, nbytes) -> bool:
    return True


@dataclass(frozen=True)
class AllReduceAlgorithm:
    build: Callable[[Sequence[int], float, TopologyFacts], Schedule]
    applies: Callable = _always
    priority: int = 100
    description: str = ""


ALLREDUCE: Registry[AllReduceAlgorithm] = Registry("all-reduce algorithm")


def allreduce(algo: str, ranks: Sequence[int], nbytes: float, topo: TopologyFacts) -> Schedule:
    ranks = tuple(ranks)
    entry = ALLREDUCE.get(algo, "collectives.allreduce")
    if len(ranks) == 1:
        return Schedule("allreduce", algo, ranks, nbytes, (), (float(nbytes),))
    return entry.build(ranks, float(nbytes), topo)


def schedule(algo, ranks, nbytes, phases, bb, notes="") -> Schedule:
    return Schedule("allreduce", algo, tuple(ranks), float(nbytes), tuple(make_phase(p, bb) for p in phases),
                    tuple(bb), notes=notes)


# ---- where `auto` may use each (comm.md 1.3, 1.4) -------------------------------------------------

# vLLM all_reduce_utils.py: custom all-reduce max size on SM90 by world size (comm.md 1.4); beyond it
# vLLM hands the call to NCCL. Group sizes between the listed ones take the next larger size's cap.
_CUSTOM_AR_MAX_BYTES = ((2, 64 * 2**20), (4, 32 * 2**20), (6, 512 * 2**10), (8, 256 * 2**10))


def custom_allreduce_max_bytes(n: int) -> float:
    for size, cap in _CUSTOM_AR_MAX_BYTES:
        if n <= size:
            return cap
    return 0.0        # vLLM's custom all-reduce stops at 8 GPUs


def _one_node(topology, ranks) -> bool:
    return len({topology.node_of(r) for r in ranks}) == 1


def _custom_applies(topology, ranks, nbytes) -> bool:
    # custom (IPC) all-reduce kernels need direct peer access: NVLink or xGMI, one node
    return (_one_node(topology, ranks) and topology.fabric in ("nvswitch", "mesh")
            and nbytes <= custom_allreduce_max_bytes(len(ranks)))


def _nvls_applies(topology, ranks, nbytes) -> bool:
    return _one_node(topology, ranks) and topology.nvls and len(ranks) > 1


def _hierarchical_applies(topology, ranks, nbytes) -> bool:
    if _one_node(topology, ranks):
        return False
    sizes = {len(g) for g in by_node(ranks, topology)}
    return len(sizes) == 1 and sizes.pop() > 1


# ---- the built-in algorithms ---------------------------------------------------------------------

def build_ring(ranks, nbytes, topo) -> Schedule:
    rings = ring_channels(ranks, topo.direct)
    n = len(ranks)
    nblocks = len(rings) * n
    bb = (nbytes / nblocks,) * nblocks
    rs, ag = [], []
    for c, ring in enumerate(rings):
        by_pos = [(c * n + i,) for i in range(n)]
        rs.append(ring_rs(ring, by_pos, bb))
        ag.append(ring_ag(ring, by_pos, bb))
    return schedule("ring", ranks, nbytes, merge_parallel(rs) + merge_parallel(ag), bb,
                    f"{len(rings)} ring channel(s)")


def build_recursive_doubling(ranks, nbytes, topo) -> Schedule:
    bb = (float(nbytes),)
    return schedule("recursive_doubling", ranks, nbytes, rd_allreduce(ranks, (0,), bb), bb)


def build_halving_doubling(ranks, nbytes, topo) -> Schedule:
    pairs, core = fold(ranks)
    bb = (nbytes / len(core),) * len(core)
    everything = tuple(range(len(core)))
    rs, ranges = halving_rs(core, everything, bb)
    phases = ([[transfer(a, b, everything, bb, reduce=True) for a, b in pairs]] if pairs else [])
    phases += rs + doubling_ag(core, everything, bb, ranges)
    phases += [[transfer(b, a, everything, bb) for a, b in pairs]] if pairs else []
    return schedule("halving_doubling", ranks, nbytes, phases, bb, f"{len(pairs)} rank(s) folded" if pairs else "")


def build_tree(ranks, nbytes, topo) -> Schedule:
    """Two mirrored binary trees (NCCL's double binary tree), each reducing and broadcasting half
    of the data in pipelined chunks."""
    n = len(ranks)
    chunks = max(1, min(TREE_MAX_CHUNKS, math.ceil(nbytes / 2 / TREE_CHUNK_BYTES)))
    bb = (nbytes / (2 * chunks),) * (2 * chunks)
    trees = [tree_levels(n, mirrored=False), tree_levels(n, mirrored=True)]
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
    return schedule("tree", ranks, nbytes, phases, bb, f"2 trees x {chunks} pipelined chunk(s), depth {depth}")


def build_one_shot(ranks, nbytes, topo) -> Schedule:
    bb = (float(nbytes),)
    return schedule("one_shot", ranks, nbytes,
                    [[transfer(a, b, (0,), bb, reduce=True) for a in ranks for b in ranks if a != b]], bb)


def build_two_shot(ranks, nbytes, topo) -> Schedule:
    n = len(ranks)
    bb = (nbytes / n,) * n
    phases = [[transfer(a, ranks[j], (j,), bb, reduce=True) for a in ranks for j in range(n) if a != ranks[j]],
              [transfer(ranks[j], b, (j,), bb) for j in range(n) for b in ranks if b != ranks[j]]]
    return schedule("two_shot", ranks, nbytes, phases, bb)


def build_nvls(ranks, nbytes, topo) -> Schedule:
    if not topo.nvls:
        raise ConfigError("nvls needs an NVSwitch with in-switch reduction (dgx-h100, dgx-h200, dgx-b200)")
    if len({topo.node_of(r) for r in ranks}) > 1:
        raise ConfigError("nvls reduces inside one NVSwitch node; this group spans nodes (use hierarchical)")
    bb = (float(nbytes),)
    return schedule("nvls", ranks, nbytes, [[SwitchReduce(tuple(ranks), tuple(ranks), float(nbytes), (0,))]], bb)


def build_hierarchical(ranks, nbytes, topo) -> Schedule:
    """Intra-node ring RS -> inter-node recursive-doubling AR of each 1/G shard over the GPUs that
    hold it (one rail each; NVRAR's structure) -> intra-node ring AG."""
    groups = by_node(ranks, topo)
    sizes = {len(g) for g in groups}
    if len(sizes) != 1:
        raise ConfigError(f"hierarchical all-reduce needs the same number of GPUs on every node; got "
                          f"{sorted(len(g) for g in groups)}")
    g_size = sizes.pop()
    if len(groups) == 1:                       # one node: the hierarchy collapses to its ring
        sched = build_ring(ranks, nbytes, topo)
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
            rs_g.append(ring_rs(ring, by_pos, bb))
            ag_g.append(ring_ag(ring, by_pos, bb))
            for i, r in enumerate(ring):
                owned.setdefault(r, []).append(c * g_size + i)
        rs.append(merge_parallel(rs_g))
        ag.append(merge_parallel(ag_g))
    inter = [rd_allreduce([group[i] for group in groups], tuple(owned[groups[0][i]]), bb) for i in range(g_size)]
    # the block ids a local index owns are the same on every node by construction
    assert all(owned[group[i]] == owned[groups[0][i]] for group in groups for i in range(g_size))
    phases = merge_parallel(rs) + merge_parallel(inter) + merge_parallel(ag)
    return schedule("hierarchical", ranks, nbytes, phases, bb,
                    f"{len(groups)} nodes x {g_size} GPUs, {len(rings_local)} intra ring(s), RD inter")


# registration order is the listing order; priority is auto's tie-break order (as before the registry)
ALLREDUCE.register("ring", AllReduceAlgorithm(build_ring, priority=0, description="ring RS + AG (NCCL Ring)"))
ALLREDUCE.register("recursive_doubling", AllReduceAlgorithm(build_recursive_doubling, priority=2,
                                                            description="full vector exchanged log2 N times"))
ALLREDUCE.register("halving_doubling", AllReduceAlgorithm(build_halving_doubling, priority=3,
                                                          description="Rabenseifner: recursive halving RS + doubling AG"))
ALLREDUCE.register("tree", AllReduceAlgorithm(build_tree, priority=1, description="NCCL double binary tree"))
ALLREDUCE.register("nvls", AllReduceAlgorithm(build_nvls, _nvls_applies, priority=6,
                                              description="NVLink SHARP in-switch reduction"))
ALLREDUCE.register("one_shot", AllReduceAlgorithm(build_one_shot, _custom_applies, priority=4,
                                                  description="vLLM/TRT-LLM one-shot custom kernel"))
ALLREDUCE.register("two_shot", AllReduceAlgorithm(build_two_shot, _custom_applies, priority=5,
                                                  description="vLLM/TRT-LLM two-shot custom kernel"))
ALLREDUCE.register("hierarchical", AllReduceAlgorithm(build_hierarchical, _hierarchical_applies, priority=7,
                                                      description="intra RS, inter RD, intra AG (NVRAR)"))
