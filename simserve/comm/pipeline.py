"""Pipelined rings and trees: one batch of flows after the pipeline's latency (issue 12 part 2).

NCCL cuts a ring's or tree's data into slices that stream through the ranks: a hop does not wait
for the slowest hop of every step, so the time is NCCL's own model (tuning.cc, comm.md 1.3)

    time = base latency + sum of the per-step latencies along the data's path + bytes / bandwidth

We derive both terms from the schedule instead of from a formula: the latency is the critical path
through the schedule's transfers (each transfer waits until its blocks have reached its source,
then takes the protocol's step latency for the links it crosses: intra-node hops the NVLink/xGMI/PCI
value, inter-node hops the NET value), so a ring across nodes pays the network latency only on its
inter-node steps; the bandwidth term is every ring/tree edge's total bytes played as one flow per
edge on the shared network at the protocol's fraction of link bandwidth, so the busiest link (an
NVLink port or a NIC, whichever the channels load most) sets the pace, and other traffic on those
links slows it. Events: O(edges) flows, two timer events, whatever the size or slice count.

The structure (edges, unit bytes, latency) does not depend on the size, so it is compiled once per
(op, algorithm, ranks, protocol) and scaled.
"""
from __future__ import annotations

from simserve.collectives import algorithms
from simserve.comm.program import CompiledPhase, CompiledSchedule
from simserve.network.fluid import idle_phase_s


def _shape(topology, op, algo, ranks, family, proto):
    """(edges [(links, unit bytes)], critical-path step latency, unit bytes by kind, links, notes)."""
    from simserve.comm.compile import facts
    schedule = algorithms.build(op, algo, ranks, 1.0, facts(topology))
    model = topology.comm
    multinode = len({topology.node_of(r) for r in ranks}) > 1
    hop: dict[tuple[int, int], tuple] = {}
    edges: dict[tuple[int, int], float] = {}
    by_kind: dict[str, float] = {}
    ready: dict[tuple[int, int], float] = {}
    for phase in schedule.phases:
        arrivals = []
        for move in phase.moves:
            pair = (move.src, move.dst)
            if pair not in hop:
                links = topology.path(*pair)
                kinds = topology.kinds_of(links)
                hop[pair] = (links, kinds, model.hop_latency_s(family, proto, kinds, multinode))
            links, kinds, lat = hop[pair]
            start = max((ready.get((move.src, b), 0.0) for b in move.blocks), default=0.0)
            arrivals += [((move.dst, b), start + lat) for b in move.blocks]
            edges[pair] = edges.get(pair, 0.0) + move.nbytes
            for kind in kinds:
                by_kind[kind] = by_kind.get(kind, 0.0) + move.nbytes
        for key, t in arrivals:
            if t > ready.get(key, 0.0):
                ready[key] = t
    critical_s = max(ready.values(), default=0.0)
    edge_list = tuple((hop[pair][0], unit) for pair, unit in edges.items())
    touched = frozenset(i for links, _ in edge_list for i in links)
    reduce_unit = sum(phase.reduce_bytes for phase in schedule.phases)
    return edge_list, critical_s, by_kind, touched, reduce_unit, schedule.notes


def pipelined(topology, op, algo, ranks, nbytes, family, proto, cache) -> CompiledSchedule:
    key = (op, algo, ranks, proto)
    memo = cache.table("shape")
    shape = memo.get(key)
    if shape is None:
        shape = _shape(topology, op, algo, ranks, family, proto)
        memo[key] = shape
    edge_list, critical_s, by_kind, touched, reduce_unit, notes = shape
    model = topology.comm
    nodes = len({topology.node_of(r) for r in ranks})
    # the library's own rings and trees run on fewer channels (thread blocks) for smaller messages,
    # as its enqueue picks them; hierarchical (NVRAR's kernels, not NCCL's) streams on all of them
    lib = algo in ("ring", "tree")
    share = model.channel_fraction(family, proto, nbytes, len(ranks), nodes) if lib else 1.0
    factor = model.bandwidth_factor(family, proto, nodes, share)
    latency_s = (model.base_latency_s(family, proto) + critical_s) * model.latency_factor(family, proto, nodes, op)
    items = tuple((links, unit * nbytes / factor, 0.0, unit * nbytes) for links, unit in edge_list)
    phase = CompiledPhase(items, reduce_unit * nbytes * topology.reduce_s_per_B)
    # every flow starts at t = 0, so the max-min rates do not depend on the bytes and the phase's
    # idle time is linear in them: cost the unit phase once per shape (at the protocol's full link
    # rate) and seed the phase memo with its time scaled by the size and this size's factor
    unit_memo = cache.table("unit_phase")
    unit_s = unit_memo.get(key)
    if unit_s is None:
        unit_s = idle_phase_s(tuple((links, unit, 0.0) for links, unit in edge_list),
                              [link.bw_Bps for link in topology.links])
        unit_memo[key] = unit_s
    cache.table("idle_phase")[items] = unit_s * nbytes / factor
    return CompiledSchedule(op, algo, latency_s + model.launch_s, (phase,), touched,
                            {k: v * nbytes for k, v in by_kind.items()}, sum(u for _, u in edge_list) * nbytes,
                            protocol=proto, notes=f"{proto}; {notes}" + (_channels_note(model, family, proto, nbytes,
                                                                                    len(ranks), nodes) if lib else ""))


def _channels_note(model, family, proto, nbytes, nranks, nodes) -> str:
    used, full = model.channels_used(family, proto, nbytes, nranks, nodes)
    return f"; {used} of {full} library channels" if full else ""
