"""Closed-form price of an iteration plan on an idle network (pure: no events are played).

Equal steps are priced once and multiplied by how often the plan runs them (a 126-layer stage
issues the same all-reduce 253 times); each kind's seconds are summed in order of first appearance,
and the iteration takes compute + straggler wait + all-reduce + all-gather + all-to-all + host.
The executor's played duration equals this on an idle network (tests/test_iteration.py holds the
two together); `fast` fidelity uses it whenever a stage's links carry no other traffic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simserve.collectives import algorithms
from simserve.comm.compile import compile_schedule, compiled, facts
from simserve.comm.tuner import collective_time
from simserve.iteration.overlap import two_batch_s
from simserve.iteration.steps import AllToAll, Collective, Compute, Experts, Host, Interleaved, IterationPlan, RingPass, TwoBatch
from simserve.network.fluid import idle_phase_s

KINDS = ("compute", "straggler", "allreduce", "allgather", "alltoall", "host")


@dataclass
class Price:
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KINDS, 0.0))
    charges: list = field(default_factory=list)     # (compiled program, times): what to account

    @property
    def total(self) -> float:
        return self.total_with(self.seconds["compute"])

    def total_with(self, compute_s):
        """The iteration's seconds with `compute_s` of compute (a float, or an array of decode steps)."""
        s = self.seconds
        return compute_s + s["straggler"] + s["allreduce"] + s["allgather"] + s["alltoall"] + s["host"]

    @property
    def communication(self) -> float:
        s = self.seconds
        return s["allreduce"] + s["allgather"] + s["alltoall"]


class IdleNetwork:
    """Idle-network times of the plan's communication on one topology."""

    def __init__(self, topology):
        self.topology = topology
        self.capacity = [link.bw_Bps for link in topology.links]

    def collective(self, op: str, algorithm: str, group, nbytes: float):
        """(seconds, compiled program) of one collective; memoised by the Communicator's tables."""
        seconds, used = collective_time(self.topology, op, algorithm, group, nbytes)
        return seconds, compiled(self.topology, op, used, group, nbytes)

    def alltoall(self, step: AllToAll):
        """(seconds, compiled program): the fastest candidate, compiled afresh (matrices change every
        iteration, so a memo would grow without bound)."""
        algos = ("direct", "pairwise") if step.algorithm == "auto" else (step.algorithm,)
        best = None
        for algo in algos:
            program = compile_schedule(self.topology, algorithms.build(
                "alltoall", algo, step.group, None, facts(self.topology), matrix=[list(r) for r in step.matrix]))
            t = self.program_s(program)
            if best is None or t < best[0]:
                best = (t, program)
        return best

    def program_s(self, program) -> float:
        return program.launch_s + sum(idle_phase_s(ph.items, self.capacity) + ph.extra_s for ph in program.phases)


def _tally(plan: IterationPlan):
    """Distinct steps with the number of times the plan runs each, in order of first appearance."""
    compute: dict = {}
    collectives: dict = {}
    alltoalls: dict = {}
    experts: list = []
    rings: list = []
    host = 0.0
    for step, times in plan.flat():
        if isinstance(step, Compute):
            compute[(step.label, step.seconds)] = compute.get((step.label, step.seconds), 0) + times
        elif isinstance(step, Interleaved):
            compute[("interleaved", step.seconds)] = compute.get(("interleaved", step.seconds), 0) + times
            coll = step.collective
            collectives[coll] = collectives.get(coll, 0) + times * coll.count
        elif isinstance(step, Collective):
            collectives[step] = collectives.get(step, 0) + times * step.count
        elif isinstance(step, AllToAll):
            entry = alltoalls.setdefault(step.key, [step, 0])
            entry[1] += times
        elif isinstance(step, Experts):
            experts.append((step, times))
        elif isinstance(step, Host):
            host += times * step.seconds
        elif isinstance(step, (RingPass, TwoBatch)):
            rings.append((step, times))
    return compute, collectives, alltoalls, experts, host, rings


def price(plan: IterationPlan, network: IdleNetwork) -> Price:
    """Seconds per kind and the byte charges of one iteration on an idle network."""
    compute, collectives, alltoalls, experts, host, rings = _tally(plan)
    out = Price()
    s = out.seconds
    for (_, seconds), times in compute.items():
        s["compute"] += times * seconds
    if experts:
        uses = np.array([times for _, times in experts])
        mean = np.array([e.mean_s for e, _ in experts])
        slowest = np.array([e.slowest_s for e, _ in experts])
        s["compute"] += float(np.dot(uses, mean))
        s["straggler"] += float(np.dot(uses, slowest - mean))
    for coll, times in collectives.items():
        if not coll.nbytes or len(coll.groups[0]) < 2:
            continue
        t, program = network.collective(coll.op, coll.algorithm, coll.groups[0], coll.nbytes)
        s[coll.op] += t * times
        out.charges.append((program, times * len(coll.groups)))
    for step, times in alltoalls.values():
        t, program = network.alltoall(step)
        s["alltoall"] += t * times
        out.charges.append((program, times))
    for ring, times in rings:
        if isinstance(ring, TwoBatch):
            _two_batch(ring, times, network, out)
            continue
        exposed_s, program = ring_exposed_s(ring, network)
        uses = times * ring.count
        s["compute"] += uses * (ring.steps + 1) * ring.compute_s
        s["alltoall"] += uses * exposed_s           # the K/V passes compute did not hide
        out.charges.append((program, uses * ring.steps))
    s["host"] += host
    return out


def _two_batch(step: TwoBatch, times: int, network: IdleNetwork, out: Price) -> None:
    """Two interleaved halves: compute is both halves' compute; the rest is exposed collective time."""
    coll = step.collective
    t, program = network.collective(coll.op, coll.algorithm, coll.groups[0], coll.nbytes)
    total = two_batch_s(step.compute_s / (coll.count + 1), t, coll.count)
    out.seconds["compute"] += times * 2 * step.compute_s
    out.seconds[coll.op] += times * max(0.0, total - 2 * step.compute_s)    # a hidden collective adds nothing
    out.charges.append((program, times * 2 * coll.count * len(coll.groups)))


def ring_exposed_s(ring: RingPass, network: IdleNetwork):
    """(exposed seconds of one layer's K/V passes, compiled pass): steps x max(0, pass - block compute)."""
    t, program = network.alltoall(ring.transfer)
    return ring.steps * max(0.0, t - ring.compute_s), program


def straggler_s(plan: IterationPlan) -> float:
    """The plan's wait for the slowest expert GPU beyond the mean (what `price` books as straggler)."""
    experts = [(e, times) for e, times in plan.flat() if isinstance(e, Experts)]
    if not experts:
        return 0.0
    uses = np.array([times for _, times in experts])
    return float(np.dot(uses, np.array([e.slowest_s for e, _ in experts]) - np.array([e.mean_s for e, _ in experts])))
