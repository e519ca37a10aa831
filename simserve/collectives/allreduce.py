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

from dataclasses import dataclass
from typing import Callable, Sequence

from simserve.collectives.blocks import (TopologyFacts, by_node, doubling_ag, fold, halving_rs, rd_allreduce,
                                         ring_ag, ring_rs, tree_levels)
from simserve.collectives.rings import ring_channels
from simserve.collectives.schedule import Move, Schedule, SwitchReduce, make_phase, merge_parallel, transfer
from simserve.errors import ConfigError
from simserve.registry import Registry



def _always(topology, ranks, nbytes) -> bool:
    return True


@dataclass(frozen=True)
class AllReduceAlgorithm:
    build: Callable[[Sequence[int], float, TopologyFacts], Schedule]
    applies: Callable = _always
    priority: int = 100
    description: str = ""
    # "ring" or "tree": whose protocol tables (collectives.protocols) price its steps; None: played
    # at the links' effective bandwidth with the topology's launch cost (the engines' custom
    # kernels and NVLS, which are not NCCL/RCCL protocols)
    family: str | None = None
    # True: slices stream through (one batch of flows after the critical path's latency, like
    # NCCL's rings and trees); False: phase by phase, each phase waiting for the previous one
    pipelined: bool = True


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

def _one_node(topology, ranks) -> bool:
    return len({topology.node_of(r) for r in ranks}) == 1


def _custom_applies(shot: str):
    """custom (IPC) all-reduce kernels need direct peer access: NVLink or xGMI, one node; the size
    limits (and, for TRT-LLM, which shot) are the engine's on this platform (engine_kernels.yaml)."""
    def applies(topology, ranks, nbytes) -> bool:
        return (_one_node(topology, ranks) and topology.fabric in ("nvswitch", "mesh")
                and topology.kernels.custom_allreduce(len(ranks), nbytes, shot))
    return applies


def _quick_reduce_applies(topology, ranks, nbytes) -> bool:
    return (_one_node(topology, ranks) and topology.fabric in ("nvswitch", "mesh")
            and topology.kernels.quick_reduce_applies(len(ranks), nbytes))


def _nvls_applies(topology, ranks, nbytes) -> bool:
    return _one_node(topology, ranks) and topology.nvls and len(ranks) > 1


def _nvls_tree_applies(topology, ranks, nbytes) -> bool:
    """NCCL offers NVLS_TREE only across nodes (tuning.cc: "Disable NVLS Tree on a single node"),
    with NVLS on every node (multicast needs at least 2 GPUs: transport/nvls.cc ncclNvlsInit) and
    the library's NVLS_TREE table (NCCL; RCCL has none)."""
    groups = by_node(ranks, topology)
    return (topology.nvls and len(groups) > 1 and len({len(g) for g in groups}) == 1 and len(groups[0]) > 1
            and "nvls_tree" in topology.comm.table)


def _never(topology, ranks, nbytes) -> bool:
    """Not among what NCCL's or RCCL's tuner picks from (ring, tree, NVLS; comm.md 1.3) nor an
    engine's custom kernel: run only when the config names it."""
    return False


# ---- the built-in algorithms ---------------------------------------------------------------------

def build_ring(ranks, nbytes, topo) -> Schedule:
    rings = ring_channels(ranks, topo.direct, topo.node_of, getattr(topo, "nics_per_node", 1))
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
    """NCCL's tree all-reduce: inside each node a chain from the node's head GPU; between nodes a
    binary tree over the heads, mirrored on every other channel (the double binary tree); reduce
    up, broadcast down. Channels: one per NIC across nodes (heads on different rails), two on
    one node. Pipelined: played as one batch of flows after the chain's latency (comm.compile, comm.pipeline)."""
    groups = by_node(ranks, topo)
    g = min(len(m) for m in groups)
    if len({len(m) for m in groups}) != 1:
        groups, g = [list(ranks)], len(ranks)       # uneven nodes: one chain through everyone
    channels = 2 if len(groups) == 1 else max(2, min(g, getattr(topo, "nics_per_node", 1)))
    bb = (nbytes / channels,) * channels
    per_channel = [_tree_channel(groups, g, c, channels, bb) for c in range(channels)]
    levels = max(d for _, _, d in tree_levels(len(groups), False)) if len(groups) > 1 else 0
    return schedule("tree", ranks, nbytes, merge_parallel(per_channel), bb,
                    f"{channels} channel(s): {len(groups)} node chain(s) of {g}, inter-node depth {levels}")


def _tree_channel(groups, g, c, channels, bb) -> list[list[Move]]:
    step = max(1, g // channels)
    head = (c * step) % g
    chains = [[members[(head + k) % g] for k in range(g)] for members in groups]
    edges = tree_levels(len(groups), mirrored=bool(c % 2)) if len(groups) > 1 else []
    depth = max((d for _, _, d in edges), default=0)
    block = (c,)
    up = [[transfer(ch[k + 1], ch[k], block, bb, reduce=True) for ch in chains] for k in range(g - 2, -1, -1)]
    up += [[transfer(chains[child][0], chains[parent][0], block, bb, reduce=True)
            for child, parent, level in edges if level == d] for d in range(depth, 0, -1)]
    down = [[transfer(chains[parent][0], chains[child][0], block, bb)
             for child, parent, level in edges if level == d] for d in range(1, depth + 1)]
    down += [[transfer(ch[k], ch[k + 1], block, bb) for ch in chains] for k in range(g - 1)]
    return up + down


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


def build_quick_reduce(ranks, nbytes, topo) -> Schedule:
    """vLLM's ROCm QuickReduce: a two-shot all-reduce whose transfers carry the codec's bytes
    (`wire_ratio` per bf16 byte: values plus block scales; csrc/quickreduce/quick_reduce.h
    AllReduceTwoshot, quick_reduce_impl.cuh)."""
    n = len(ranks)
    bb = (nbytes * getattr(topo, "wire_ratio", 1.0) / n,) * n
    phases = [[transfer(a, ranks[j], (j,), bb, reduce=True) for a in ranks for j in range(n) if a != ranks[j]],
              [transfer(ranks[j], b, (j,), bb) for j in range(n) for b in ranks if b != ranks[j]]]
    return schedule("quick_reduce", ranks, nbytes, phases, bb, f"wire ratio {bb[0] * n / nbytes:.3f}")


def build_nvls(ranks, nbytes, topo) -> Schedule:
    if not topo.nvls:
        raise ConfigError("nvls needs an NVSwitch with in-switch reduction (dgx-h100, dgx-h200, dgx-b200)")
    if len({topo.node_of(r) for r in ranks}) > 1:
        raise ConfigError("nvls reduces inside one NVSwitch node; this group spans nodes (use hierarchical)")
    bb = (float(nbytes),)
    return schedule("nvls", ranks, nbytes, [[SwitchReduce(tuple(ranks), tuple(ranks), float(nbytes), (0,))]], bb)


def build_nvls_tree(ranks, nbytes, topo) -> Schedule:
    """NCCL's NVLS_TREE (multi-node NVLS): inside each node NVLink SHARP reduce-scatters (GPU j pulls
    its node's sum of shard j through the switch, multimem ld_reduce); GPU j, the head of rail j,
    all-reduces shard j with the other nodes' j-th GPUs over NCCL's double binary tree on the NICs
    (two mirrored trees, half the shard each); then it multicasts the result to its node (multimem
    st). Blocks: shard j x tree c. comm.nvls_tree plays the three parts overlapped, as NCCL
    pipelines them."""
    groups = _nvls_tree_groups(ranks, topo)
    g, nodes = len(groups[0]), len(groups)
    bb = (nbytes / (2 * g),) * (2 * g)
    shard = [(2 * j, 2 * j + 1) for j in range(g)]
    rs = [SwitchReduce(tuple(m), (m[j],), 2 * bb[0], shard[j]) for m in groups for j in range(g)]
    ag = [SwitchReduce((m[j],), tuple(m), 2 * bb[0], shard[j]) for m in groups for j in range(g)]
    trees = [_rail_tree(groups, j, c, bb) for c in range(2) for j in range(g)]
    depth = max(d for _, _, d in tree_levels(nodes, False))
    return schedule("nvls_tree", ranks, nbytes, [rs] + merge_parallel(trees) + [ag], bb,
                    f"{nodes} nodes x {g} GPUs: NVLS in each node, {g} rail tree(s) of depth {depth}")


def _nvls_tree_groups(ranks, topo) -> list[list[int]]:
    groups = by_node(ranks, topo)
    if not topo.nvls:
        raise ConfigError("nvls_tree needs NVSwitches with in-switch reduction (dgx-h100, dgx-h200, dgx-b200)")
    if len(groups) < 2 or len({len(m) for m in groups}) != 1 or len(groups[0]) < 2:
        raise ConfigError(f"nvls_tree needs 2 or more nodes with the same number (>= 2) of GPUs each; got "
                          f"{sorted(len(m) for m in groups)}")
    return groups


def _rail_tree(groups, j, c, bb) -> list[list[Move]]:
    """Tree c (mirrored when odd) over the nodes' j-th GPUs: reduce up, then broadcast down."""
    edges = tree_levels(len(groups), mirrored=bool(c))
    depth = max(d for _, _, d in edges)
    block = (2 * j + c,)
    up = [[transfer(groups[child][j], groups[parent][j], block, bb, reduce=True)
           for child, parent, level in edges if level == d] for d in range(depth, 0, -1)]
    down = [[transfer(groups[parent][j], groups[child][j], block, bb)
             for child, parent, level in edges if level == d] for d in range(1, depth + 1)]
    return up + down


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


# registration order is the listing order; priority is auto's tie-break order. `auto` chooses what
# the library's tuner would (ring, tree, NVLS) plus the engine's custom kernels within their caps.
ALLREDUCE.register("ring", AllReduceAlgorithm(build_ring, priority=0, description="ring RS + AG (NCCL Ring)",
                                              family="ring"))
ALLREDUCE.register("recursive_doubling", AllReduceAlgorithm(build_recursive_doubling, _never, family="ring", pipelined=False,
                                                      priority=2,
                                                            description="full vector exchanged log2 N times"))
ALLREDUCE.register("halving_doubling", AllReduceAlgorithm(build_halving_doubling, _never, family="ring", pipelined=False,
                                                      priority=3,
                                                          description="Rabenseifner: recursive halving RS + doubling AG"))
ALLREDUCE.register("tree", AllReduceAlgorithm(build_tree, priority=1, family="tree",
                                              description="NCCL tree: node chains + double binary tree"))
ALLREDUCE.register("nvls", AllReduceAlgorithm(build_nvls, _nvls_applies, priority=6,
                                              description="NVLink SHARP in-switch reduction"))
ALLREDUCE.register("one_shot", AllReduceAlgorithm(build_one_shot, _custom_applies("one_shot"), priority=4,
                                                  description="vLLM/TRT-LLM one-shot custom kernel"))
ALLREDUCE.register("two_shot", AllReduceAlgorithm(build_two_shot, _custom_applies("two_shot"), priority=5,
                                                  description="vLLM/TRT-LLM two-shot custom kernel"))
ALLREDUCE.register("quick_reduce", AllReduceAlgorithm(build_quick_reduce, _quick_reduce_applies, priority=8,
                                                      description="vLLM ROCm QuickReduce (two-shot, codec on the wire)"))
ALLREDUCE.register("nvls_tree", AllReduceAlgorithm(build_nvls_tree, _nvls_tree_applies, priority=9,
                                                   family="nvls_tree",
                                                   description="NCCL NVLS_TREE: NVLS in each node, tree over NICs"))
# hierarchical streams its phases (NVRAR overlaps the intra-node reduce-scatter with the inter-node
# exchange, seed 001 / arXiv 2511.09557): slices flow through RS -> RD -> AG like a pipeline
ALLREDUCE.register("hierarchical", AllReduceAlgorithm(build_hierarchical, _never, family="ring", pipelined=True,
                                                      priority=7,
                                                      description="intra RS, inter RD, intra AG (NVRAR)"))
