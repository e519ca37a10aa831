"""Compile a collective schedule against a topology, and its time on an idle network (pure: no SimPy).

A schedule is compiled against a topology (routes, latencies, the bytes it puts on each kind of
link); the compiled form is memoised per (op, algorithm, ranks, bytes) in the run's
`CollectiveCache` (`comm.cache`), because an engine issues the same collective thousands of times.
Its idle-network time comes from the fluid model (`network.fluid`), the SimPy network's model
without the event queue. `comm.player` plays a compiled schedule on the SimPy network.
"""
from __future__ import annotations

from simserve.collectives import algorithms
from simserve.collectives.allreduce import ALLREDUCE
from simserve.collectives.schedule import Schedule, SwitchReduce
from simserve.comm.cache import CollectiveCache, cache_for
from simserve.comm.nvls_tree import nvls_tree_program
from simserve.comm.pipeline import pipelined
from simserve.comm.program import CompiledPhase, CompiledSchedule
from simserve.network.fluid import idle_phase_s
from simserve.network.topology import Topology


def facts(topology: Topology) -> algorithms.TopologyFacts:
    return algorithms.TopologyFacts(node_of=topology.node_of, direct=topology.direct, nvls=topology.nvls,
                                    nics_per_node=topology.nics_per_node, wire_ratio=topology.kernels.wire_ratio)


def family_of(op: str, algo: str) -> tuple[str | None, bool]:
    """(protocol family, pipelined) of an algorithm (collectives.protocols); (None, False): priced
    at the links' effective bandwidth and the topology's launch cost."""
    if op == "allreduce":
        entry = ALLREDUCE.get(algo) if algo in ALLREDUCE else None
        return (entry.family, entry.pipelined) if entry and entry.family else (None, False)
    if op in ("allgather", "reducescatter"):
        return ("ring", True) if algo == "ring" else ("ring", False)
    return None, False


def compile_schedule(topology: Topology, schedule: Schedule, family: str | None = None,
                     proto: str = "") -> CompiledSchedule:
    """Phase by phase: each phase's transfers start together and the next waits for all. With a
    protocol family, each step takes the protocol's latency for the links it crosses and moves its
    bytes at the protocol's fraction of link bandwidth (collectives.protocols)."""
    if family:
        return _compile_with_protocol(topology, schedule, family, proto)
    link_table = topology.links
    phases, touched, by_kind = [], set(), {}
    for phase in schedule.phases:
        items = []
        for move in phase.moves:
            if isinstance(move, SwitchReduce):
                links = topology.switch_reduce_links(move.srcs, move.dsts)
                latency_s = link_table[links[0]].latency_s + link_table[links[-1]].latency_s
                flow_bytes = move.nbytes / topology.nvls_efficiency
            else:
                links = topology.path(move.src, move.dst)
                latency_s = sum(link_table[i].latency_s for i in links)
                flow_bytes = move.nbytes
            items.append((links, flow_bytes, latency_s, move.nbytes))
            touched.update(links)
            for kind in topology.kinds_of(links):
                by_kind[kind] = by_kind.get(kind, 0.0) + move.nbytes
        extra_s = phase.reduce_bytes * topology.reduce_s_per_B
        if phase.uses_switch:
            extra_s += topology.nvls_latency_s
        phases.append(CompiledPhase(tuple(items), extra_s))
    launch_s = (topology.launch_latency_s + topology.comm.launch_s) if schedule.phases else 0.0
    payload = sum(item[3] for phase in phases for item in phase.items)
    return CompiledSchedule(schedule.op, schedule.algorithm, launch_s, tuple(phases), frozenset(touched),
                            by_kind, payload, notes=schedule.notes)


def compiled(topology: Topology, op: str, algo: str, ranks, nbytes: float, matrix=None,
             cache: CollectiveCache | None = None) -> CompiledSchedule:
    """A concrete algorithm compiled for this size (pipelined ones in the protocol the tuner would
    pick), memoised in the run's cache."""
    cache = cache or cache_for(topology)
    key = (op, algo, tuple(ranks), float(nbytes) if nbytes is not None else None,
           None if matrix is None else tuple(map(tuple, matrix)))
    memo = cache.table("compiled")
    found = memo.get(key)
    if found is None:
        # the tuner's rule: the protocol with the least modelled time for this size
        found = min(protocol_options(topology, op, algo, ranks, nbytes, matrix, cache),
                    key=lambda prog: idle_time(topology, prog, cache))
        memo[key] = found
    return found


def protocol_options(topology: Topology, op: str, algo: str, ranks, nbytes: float, matrix=None,
                     cache: CollectiveCache | None = None) -> list[CompiledSchedule]:
    """The algorithm compiled in each protocol of the topology's library (one program when it is
    not priced in protocols)."""
    cache = cache or cache_for(topology)
    family, streams = family_of(op, algo) if len(ranks) > 1 and nbytes else (None, False)
    if family == "nvls_tree":          # NVLS_TREE: Simple only, its own overlapped program
        return [nvls_tree_program(topology, tuple(ranks), float(nbytes), cache)]
    if streams:
        return [pipelined(topology, op, algo, tuple(ranks), float(nbytes), family, proto, cache)
                for proto in topology.comm.protocols]
    schedule = algorithms.build(op, algo, ranks, nbytes, facts(topology), matrix=matrix)
    if family is None:
        return [compile_schedule(topology, schedule)]
    return [compile_schedule(topology, schedule, family, proto) for proto in topology.comm.protocols]


def _compile_with_protocol(topology: Topology, schedule: Schedule, family: str, proto: str) -> CompiledSchedule:
    model = topology.comm
    nodes = len({topology.node_of(r) for r in schedule.ranks})
    factor = model.bandwidth_factor(family, proto, nodes)
    phases, touched, by_kind, hop = [], set(), {}, {}
    for phase in schedule.phases:
        items = []
        for move in phase.moves:
            pair = (move.src, move.dst)
            if pair not in hop:
                links = topology.path(*pair)
                kinds = topology.kinds_of(links)
                hop[pair] = (links, kinds, model.hop_latency_s(family, proto, kinds, nodes > 1))
            links, kinds, latency_s = hop[pair]
            items.append((links, move.nbytes / factor, latency_s, move.nbytes))
            touched.update(links)
            for kind in kinds:
                by_kind[kind] = by_kind.get(kind, 0.0) + move.nbytes
        phases.append(CompiledPhase(tuple(items), phase.reduce_bytes * topology.reduce_s_per_B))
    launch_s = model.base_latency_s(family, proto) + model.launch_s if schedule.phases else 0.0
    payload = sum(item[3] for phase in phases for item in phase.items)
    return CompiledSchedule(schedule.op, schedule.algorithm, launch_s, tuple(phases), frozenset(touched),
                            by_kind, payload, protocol=proto, notes=f"{proto}; {schedule.notes}")


def idle_time(topology: Topology, program: CompiledSchedule, cache: CollectiveCache | None = None) -> float:
    """Duration of the collective alone on an idle network (memoised by the caller).

    Evaluated by the pure fluid model (`network.fluid`), which is the SimPy network's model without
    the event queue; phases with the same flows (every step of a ring) are costed once."""
    capacity = [link.bw_Bps for link in topology.links]
    phase_memo = (cache or cache_for(topology)).table("idle_phase")
    total_s = program.launch_s
    for phase in program.phases:
        phase_s = phase_memo.get(phase.items)
        if phase_s is None:
            phase_s = idle_phase_s(phase.items, capacity)
            phase_memo[phase.items] = phase_s
        total_s += phase_s + phase.extra_s
    return total_s
