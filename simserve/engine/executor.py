"""Play an iteration plan on the shared SimPy network (layer 2): one executor for every stage kind.

Compute and expert steps hold the stage's GPUs for their seconds; collectives go to the
Communicator (which replays a collective whose links are idle in `fast` and plays it flow by flow
otherwise); an all-to-all, compiled per iteration, is replayed or played by the same rule. The
`fast` decision for a whole stage (price the plan in closed form because its links are its own) is
taken once, by the Stage, from the placement; this module plays what is not priced.

Time accounting follows what a profiler shows: the iteration's elapsed time less its communication
is compute, and the wait for the slowest expert GPU is counted as all-to-all (the GPUs sit in the
combine).
"""
from __future__ import annotations

from simserve.comm.player import play as play_program
from simserve.iteration.price import IdleNetwork, straggler_s
from simserve.iteration.steps import AllToAll, Collective, Compute, Experts, Host, Interleaved, IterationPlan

COMM_KINDS = ("allreduce", "allgather", "alltoall")


class Executor:
    def __init__(self, env, comm, fidelity: str):
        self.env, self.comm, self.fidelity = env, comm, fidelity
        self.idle = IdleNetwork(comm.topology)
        self.calls: dict[tuple[str, str], float] = {}    # (op, algorithm) -> collectives issued

    def count(self, op: str, algorithm: str, times: float) -> None:
        self.calls[(op, algorithm)] = self.calls.get((op, algorithm), 0) + times

    def play(self, plan: IterationPlan):
        """SimPy process body; returns the (compute, all-reduce, all-gather, all-to-all, host) seconds."""
        env = self.env
        start = env.now
        spent = dict.fromkeys(COMM_KINDS, 0.0)
        host = 0.0
        alltoalls: dict = {}
        for step in plan.played():
            if isinstance(step, Compute):
                yield env.timeout(step.seconds)
            elif isinstance(step, Interleaved):
                yield from self._interleaved(step, spent)
            elif isinstance(step, Collective):
                yield from self._collective(step, spent)
            elif isinstance(step, AllToAll):
                program = alltoalls.get(step.key)
                if program is None:
                    program = alltoalls[step.key] = self.idle.alltoall(step)[1]
                yield from self._alltoall(program, spent)
            elif isinstance(step, Experts):
                yield env.timeout(step.slowest_s)
            elif isinstance(step, Host):
                yield env.timeout(step.seconds)
                host += step.seconds
        compute = env.now - start
        for kind in COMM_KINDS:
            compute -= spent[kind]
        compute -= host
        wait = straggler_s(plan)
        return compute - wait, spent["allreduce"], spent["allgather"], spent["alltoall"] + wait, host

    def _interleaved(self, step: Interleaved, spent: dict):
        env, coll = self.env, step.collective
        if self.fidelity == "exact" and coll.count:
            slice_s = step.seconds / (coll.count + 1)
            one = Collective(coll.op, coll.groups, coll.nbytes, coll.algorithm, 1)
            for _ in range(coll.count):
                yield env.timeout(slice_s)
                yield from self._collective(one, spent)
            yield env.timeout(slice_s)
        else:
            yield env.timeout(step.seconds)
            if coll.count and coll.nbytes:
                yield from self._collective(coll, spent)

    def _collective(self, step: Collective, spent: dict):
        env, comm = self.env, self.comm
        if not step.nbytes:
            return
        t0 = env.now
        if len(step.groups) == 1:
            yield from comm.run(step.op, step.groups[0], step.nbytes, algo=step.algorithm, count=step.count)
        else:
            for _ in range(step.count):
                yield env.all_of([env.process(comm.run(step.op, g, step.nbytes, algo=step.algorithm))
                                  for g in step.groups])
        spent[step.op] += env.now - t0

    def _alltoall(self, program, spent: dict):
        env, network = self.env, self.comm.network
        t0 = env.now
        if self.fidelity == "fast" and not network.busy(program.links):
            duration = self.idle.program_s(program)
            program.account(network)
            network.reserve(program.links, env.now + duration)
            yield env.timeout(duration)
        else:
            yield from play_program(env, network, program)
        self.count("alltoall", program.algorithm, 1)
        spent["alltoall"] += env.now - t0

    def charge(self, charges, iterations: int = 1) -> None:
        """Account the bytes and calls of priced (not played) iterations."""
        network = self.comm.network
        for program, times in charges:
            self.count(program.schedule.op, program.algorithm, times * iterations)
            program.account(network, times * iterations)
