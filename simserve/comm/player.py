"""Play a compiled collective on the SimPy network: phase by phase, or, for pipelined rings and
trees, as one batch of flows after the pipeline's latency (comm.pipeline). Compiling and the
idle-network time are pure and live in `comm.compile`.
"""
from __future__ import annotations

import simpy

from simserve.comm.compile import idle_time
from simserve.comm.program import CompiledSchedule
from simserve.network.flows import Network
from simserve.network.topology import Topology


def play(env: simpy.Environment, network: Network, program: CompiledSchedule, first_phase: int = 0,
         launch: bool = True):
    """SimPy process body: run the phases one after another (from `first_phase`, after the launch
    wait unless `launch` is False); returns the duration in seconds."""
    start_s = env.now
    if program.launch_s and launch:
        yield env.timeout(program.launch_s)
    for phase in program.phases[first_phase:]:
        if phase.items:
            yield network.transfer_batch(phase.items, program.op)
        if phase.extra_s:
            yield env.timeout(phase.extra_s)
    return env.now - start_s


def played_idle_time(topology: Topology, program: CompiledSchedule) -> float:
    """The same duration, played on a fresh SimPy network (tests compare the two)."""
    env = simpy.Environment()
    proc = env.process(play(env, Network(env, topology), program))
    env.run()
    return proc.value
