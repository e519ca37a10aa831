"""Play an iteration plan on the shared SimPy network (layer 2): one executor for every stage kind.

Compute and expert steps hold the stage's GPUs for their seconds; collectives, and the compute
slices between interleaved ones, go to the Communicator (which replays a pattern whose links are
idle in `fast`, plays it flow by flow otherwise, and turns a replay that traffic reaches back into
flows); an all-to-all, compiled per iteration, goes through the same mechanism. The
`fast` decision for a whole stage (price the plan in closed form because its links are its own) is
taken once, by the Stage, from the placement; this module plays what is not priced.

Time accounting follows what a profiler shows: the iteration's elapsed time less its communication
is compute, and the wait for the slowest expert GPU is counted as all-to-all (the GPUs sit in the
combine).
"""
from __future__ import annotations

from simserve.iteration.price import IdleNetwork, straggler_s
from simserve.iteration.steps import AllToAll, Collective, Compute, Experts, Host, Interleaved, IterationPlan, RingPass, TwoBatch

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
            elif isinstance(step, RingPass):
                yield from self._ring(step, spent)
            elif isinstance(step, TwoBatch):
                yield from self._two_batch(step, spent)
        compute = env.now - start
        for kind in COMM_KINDS:
            compute -= spent[kind]
        compute -= host
        wait = straggler_s(plan)
        return compute - wait, spent["allreduce"], spent["allgather"], spent["alltoall"] + wait, host

    def _interleaved(self, step: Interleaved, spent: dict):
        """Compute cut into count + 1 equal slices with one collective between each two. One group:
        the Communicator plays the pattern (in `fast`, replayed as one timeout while its links are
        idle, and turned back into the played pattern where traffic reaches them)."""
        env, coll = self.env, step.collective
        if not coll.count or not coll.nbytes:
            yield env.timeout(step.seconds)
            return
        slice_s = step.seconds / (coll.count + 1)
        if len(coll.groups) == 1:
            _, spent_s = yield from self.comm.run(coll.op, coll.groups[0], coll.nbytes, algo=coll.algorithm,
                                                  count=coll.count, lead_s=slice_s, tail_s=slice_s)
            spent[coll.op] += spent_s
            return
        one = Collective(coll.op, coll.groups, coll.nbytes, coll.algorithm, 1)
        for _ in range(coll.count):
            yield env.timeout(slice_s)
            yield from self._collective(one, spent)
        yield env.timeout(slice_s)

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

    def _alltoall(self, program, spent: dict, times: int = 1):
        """`times` back-to-back all-to-alls, played or replayed by the Communicator's rule, so a
        replay that traffic reaches turns back into flows (`fast` equals `exact` where all-to-alls
        share links)."""
        t0 = self.env.now
        yield from self.comm.execute(program, self.idle.program_s(program), times)
        self.count("alltoall", program.algorithm, times)
        spent["alltoall"] += self.env.now - t0

    def _two_batch(self, step: TwoBatch, spent: dict):
        """Two-batch overlap (simserve.iteration.overlap): the compute stream and the communication
        stream as two processes in the module's order, in both fidelities. Each collective goes
        through the Communicator, so `fast` replays it while its links are idle and plays it where
        traffic reaches them; playing the 2n collectives back to back instead would put them on
        the links at other times than `exact` does, and differ wherever a plan is played (its
        links shared). Only the time the collectives add beyond the compute is booked as theirs."""
        env, coll = self.env, step.collective
        n = coll.count
        slice_s = step.compute_s / (n + 1)
        t0 = env.now
        scratch = dict.fromkeys(COMM_KINDS, 0.0)
        one = Collective(coll.op, coll.groups, coll.nbytes, coll.algorithm, 1)
        done = {(h, k): env.event() for h in range(2) for k in range(n + 1)}      # compute slice ends
        sent = {(h, k): env.event() for h in range(2) for k in range(n)}          # collective ends

        def compute():
            for k in range(n + 1):
                for h in range(2):
                    if k:
                        yield sent[(h, k - 1)]
                    yield env.timeout(slice_s)
                    done[(h, k)].succeed()

        def communicate():
            for k in range(n):
                for h in range(2):
                    yield done[(h, k)]
                    yield from self._collective(one, scratch)
                    sent[(h, k)].succeed()

        yield env.all_of([env.process(compute()), env.process(communicate())])
        spent[coll.op] += max(0.0, env.now - t0 - 2 * step.compute_s)

    def _ring(self, step: RingPass, spent: dict):
        """Ring attention: each K/V pass runs beside the block compute it overlaps; only what the
        compute does not hide is booked as all-to-all. Every layer's every pass is its own
        all-to-all in both fidelities (`fast` replays each while its links are idle): passes played
        back to back would meet other traffic at other times than `exact`'s."""
        env = self.env
        program = self.idle.alltoall(step.transfer)[1]
        scratch = {"alltoall": 0.0}
        t0 = env.now
        for _ in range(step.count):
            for _ in range(step.steps):
                yield env.all_of([env.timeout(step.compute_s), env.process(self._alltoall(program, scratch))])
            yield env.timeout(step.compute_s)
        spent["alltoall"] += env.now - t0 - step.count * (step.steps + 1) * step.compute_s

    def charge(self, charges, iterations: int = 1) -> None:
        """Account the bytes and calls of priced (not played) iterations."""
        network = self.comm.network
        for program, times in charges:
            self.count(program.schedule.op, program.algorithm, times * iterations)
            program.account(network, times * iterations)
