"""Play a collective schedule on the SimPy network, phase by phase, and time it.

A schedule is first compiled against a topology (routes, latencies, the bytes it puts on each kind
of link); the compiled form is memoised per (op, algorithm, ranks, bytes) in the run's
`CollectiveCache` (`comm.cache`), because an engine issues the same collective thousands of times.
"""
from __future__ import annotations

from dataclasses import dataclass

import simpy

from simserve.collectives import algorithms
from simserve.collectives.schedule import Schedule, SwitchReduce
from simserve.comm.cache import CollectiveCache, cache_for
from simserve.network.flows import Network
from simserve.network.fluid import idle_phase_s
from simserve.network.topology import Topology


@dataclass(frozen=True)
class CompiledPhase:
    items: tuple          # (link ids, flow bytes, latency_s, payload bytes) per move
    extra_s: float        # after the transfers: local reduction + fixed switch latency


@dataclass(frozen=True)
class CompiledSchedule:
    schedule: Schedule
    launch_s: float
    phases: tuple[CompiledPhase, ...]
    links: frozenset               # every link the collective touches
    bytes_by_kind: dict            # payload bytes per link kind, once per transfer
    payload_bytes: float = 0.0     # bytes of all its transfers together

    def account(self, network: Network, times: float = 1.0) -> None:
        """Add the bytes this collective moves, `times` over, without playing it (a replay)."""
        network.add_bytes(self.bytes_by_kind, times, self.schedule.op, self.payload_bytes)

    @property
    def algorithm(self) -> str:
        return self.schedule.algorithm


def facts(topology: Topology) -> algorithms.TopologyFacts:
    return algorithms.TopologyFacts(node_of=topology.node_of, direct=topology.direct, nvls=topology.nvls)


def compile_schedule(topology: Topology, schedule: Schedule) -> CompiledSchedule:
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
    launch_s = topology.launch_latency_s if schedule.phases else 0.0
    payload = sum(item[3] for phase in phases for item in phase.items)
    return CompiledSchedule(schedule, launch_s, tuple(phases), frozenset(touched), by_kind, payload)


def compiled(topology: Topology, op: str, algo: str, ranks, nbytes: float, matrix=None,
             cache: CollectiveCache | None = None) -> CompiledSchedule:
    """Build and compile a concrete algorithm's schedule, memoised in the run's cache."""
    key = (op, algo, tuple(ranks), float(nbytes) if nbytes is not None else None,
           None if matrix is None else tuple(map(tuple, matrix)))
    memo = (cache or cache_for(topology)).table("compiled")
    found = memo.get(key)
    if found is None:
        schedule = algorithms.build(op, algo, ranks, nbytes, facts(topology), matrix=matrix)
        found = compile_schedule(topology, schedule)
        memo[key] = found
    return found


def play(env: simpy.Environment, network: Network, program: CompiledSchedule):
    """SimPy process body: run the phases one after another; returns the duration in seconds."""
    start_s = env.now
    if program.launch_s:
        yield env.timeout(program.launch_s)
    for phase in program.phases:
        if phase.items:
            yield network.transfer_batch(phase.items, program.schedule.op)
        if phase.extra_s:
            yield env.timeout(phase.extra_s)
    return env.now - start_s


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


def played_idle_time(topology: Topology, program: CompiledSchedule) -> float:
    """The same duration, played on a fresh SimPy network (tests compare the two)."""
    env = simpy.Environment()
    proc = env.process(play(env, Network(env, topology), program))
    env.run()
    return proc.value
