"""NCCL's NVLS_TREE all-reduce as one batch of overlapped flows (issue 12 parts 1 and 5). Pure: no SimPy.

NCCL runs NVLS_TREE's three parts (the NVLink SHARP reduce-scatter inside each node, the tree over
the NICs, the NVLS multicast back) at once: each channel pipelines its chunks through them, so, as
for pipelined rings (comm.pipeline), the collective is one batch of flows after the pipeline's
latency, and whichever of the NVLink ports and the NICs carries the most bytes per second of its
capacity sets the pace (other traffic on either slows it).

- Latency: NCCL's own NVLS_TREE model (comm_libraries.yaml `nvls_tree`, tuning.cc lines 427-428):
  baseLat + intraLat (NVLink, 25 us) + 2 log2i(nNodes) x interLat (NET, 20.9 us).
- Flows: per node one in-switch flow of S / nvls_efficiency over its GPUs' NVLink ports (what a
  one-node NVLS all-reduce of S costs, so the measured efficiency it is fitted on carries over),
  and every tree edge's bytes over its NIC path (a double binary tree over the nodes per rail: on 2
  nodes S / G per NIC direction, on 4 nodes 3 S / 2G, on many nearly 2 S / G, hence NCCL's "2 node
  case" factor 2).
- NCCL's per-channel cap: busBw <= nChannels x perChMaxNVLSTreeBw (tuning.cc lines 307-323), an
  empirical ceiling that the flows alone do not reach on 2 nodes (the switch ports would allow
  about 516 GB/s busbw on 2 x 8 H100, NCCL caps at 8 x 57.7 = 462). Where the cap binds the flows'
  bytes are scaled up so that alone they take busbytes / cap, as a protocol's bandwidth factor
  scales a ring's (comm.pipeline).
"""
from __future__ import annotations

import math

from simserve.collectives import algorithms
from simserve.collectives.schedule import SwitchReduce, Transfer
from simserve.comm.program import CompiledPhase, CompiledSchedule
from simserve.network.fluid import idle_phase_s


def _unit_shape(topology, ranks):
    """(unit flows [(links, bytes per byte of S, payload per byte)], by-kind payload, reduce bytes,
    notes) of the NVLS_TREE schedule of 1 byte."""
    from simserve.comm.compile import facts
    schedule = algorithms.build("allreduce", "nvls_tree", ranks, 1.0, facts(topology))
    edges: dict[tuple[int, int], float] = {}
    nodes: dict[int, list[int]] = {}
    for phase in schedule.phases:
        for move in phase.moves:
            if isinstance(move, Transfer):
                edges[(move.src, move.dst)] = edges.get((move.src, move.dst), 0.0) + move.nbytes
            elif isinstance(move, SwitchReduce) and len(move.dsts) == 1:
                nodes.setdefault(topology.node_of(move.dsts[0]), []).append(move.dsts[0])
    flows, by_kind = [], {}
    for members in nodes.values():
        links = topology.switch_reduce_links(tuple(members), tuple(members))
        flows.append((links, 1.0 / topology.nvls_efficiency, 1.0))
    for pair, unit in edges.items():
        links = topology.path(*pair)
        flows.append((links, unit, unit))
    for links, _, payload in flows:
        for kind in topology.kinds_of(links):
            by_kind[kind] = by_kind.get(kind, 0.0) + payload
    reduce_unit = sum(phase.reduce_bytes for phase in schedule.phases)
    return tuple(flows), by_kind, reduce_unit, schedule.notes


def _cap_scale(topology, flows, nranks: int, gpn: int, nnodes: int) -> tuple[float, float]:
    """(factor on the flows' bytes so that alone they take at least busbytes / NCCL's cap, the
    unscaled unit time)."""
    table = topology.comm.table["nvls_tree"]
    unit_s = idle_phase_s(tuple((links, b, 0.0) for links, b, _ in flows), [link.bw_Bps for link in topology.links])
    caps = table["per_channel_max_busbw_GBps"].get(topology.comm.arch)
    if not caps or unit_s <= 0:
        return 1.0, unit_s
    cap_Bps = min(table["max_arity"], gpn) * caps[0 if nnodes == 1 else 1 if nnodes == 2 else 2] * 1e9
    cap_s = 2 * (nranks - 1) / nranks / cap_Bps      # nccl-tests bus bytes of 1 B at the cap
    return max(1.0, cap_s / unit_s), unit_s


def nvls_tree_program(topology, ranks, nbytes: float, cache) -> CompiledSchedule:
    """The compiled NVLS_TREE all-reduce of `nbytes` (memoised shape per group in `cache`)."""
    key = ("allreduce", "nvls_tree", ranks, "simple")
    memo = cache.table("shape")
    shape = memo.get(key)
    nnodes = len({topology.node_of(r) for r in ranks})
    if shape is None:
        flows, by_kind, reduce_unit, notes = _unit_shape(topology, ranks)
        scale, unit_s = _cap_scale(topology, flows, len(ranks), len(ranks) // nnodes, nnodes)
        shape = (flows, by_kind, reduce_unit, notes, scale, unit_s)
        memo[key] = shape
    flows, by_kind, reduce_unit, notes, scale, unit_s = shape
    table = topology.comm.table["nvls_tree"]
    latency_s = (table["base_latency_us"] + table["intra_latency_us"]
                 + 2 * int(math.log2(nnodes)) * table["net_latency_us"]) * 1e-6
    items = tuple((links, b * nbytes * scale, 0.0, payload * nbytes) for links, b, payload in flows)
    phase = CompiledPhase(items, reduce_unit * nbytes * topology.reduce_s_per_B)
    # all flows start together: the idle time is linear in the bytes (comm.pipeline does the same)
    cache.table("idle_phase")[items] = unit_s * nbytes * scale
    capped = f"; NCCL per-channel cap x{scale:.3f}" if scale > 1 else ""
    return CompiledSchedule("allreduce", "nvls_tree", latency_s + topology.comm.launch_s, (phase,),
                            frozenset(i for links, _, _ in flows for i in links),
                            {k: v * nbytes for k, v in by_kind.items()}, sum(p for _, _, p in flows) * nbytes,
                            protocol="simple", notes=f"simple; {notes}{capped}")
