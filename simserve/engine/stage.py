"""One pipeline stage of a replica: its GPUs, its plan builder, and how its iterations are timed.

Every iteration is a plan (simserve.iteration) built from the batch. Timing follows the fidelity
rule of docs/architecture.md, decided once per stage from the placement: when the stage's links are its own (no other
group's collectives and no pipeline transfer can reach them) and fidelity is `fast`, the plan is
priced in closed form and the iteration is one timeout; a stage whose plan does not depend on a
random draw (dense) is then `closed_form`, so the replica can time its iterations without a process
and coalesce decode runs. Otherwise the executor plays the plan on the network.
"""
from __future__ import annotations

import numpy as np

from simserve.cost.operators import BatchStats
from simserve.engine.executor import Executor
from simserve.exactsum import ExactSum
from simserve.iteration.price import IdleNetwork, Price, price
from simserve.iteration.steps import IterationPlan

BUSY_KINDS = ("compute", "allreduce", "allgather", "alltoall")    # host time is the replica's (engine.host)


class Stage:
    def __init__(self, env, comm, planner, fidelity: str, exclusive_links: bool):
        self.env, self.comm, self.planner = env, comm, planner
        self.gpus = planner.gpus
        self.layers = planner.layers
        self.executor = Executor(env, comm, fidelity)
        self.priced = fidelity == "fast" and exclusive_links
        self.closed_form = planner.deterministic and (len(self.gpus) == 1 or self.priced)
        self._comm_memo: dict[tuple[int, int], Price] = {}
        # seconds per GPU of the group, by kind: exact running sums (bounded memory, any order)
        self.busy: dict[str, ExactSum] = {kind: ExactSum() for kind in BUSY_KINDS}

    @property
    def calls(self) -> dict[tuple[str, str], float]:
        return self.executor.calls

    # -- closed form (deterministic plans) -----------------------------------------------------
    def comm_price(self, tokens: int, logits: int) -> Price:
        """The price of the plan's communication on an idle network, memoised per batch shape."""
        key = (tokens, logits)
        found = self._comm_memo.get(key)
        if found is None:
            plan = IterationPlan(self.planner.communication(tokens, logits))
            found = self._comm_memo[key] = price(plan, self.executor.idle)
        return found

    def time(self, stats: BatchStats) -> float:
        compute = self.planner.step_cost.time(stats)
        if len(self.gpus) == 1:
            return compute
        return self.comm_price(stats.tokens, stats.logits_tokens).total_with(compute)

    def decode_times(self, num_seqs: int, kv_tokens_start: float, steps: int) -> np.ndarray:
        compute = self.planner.step_cost.decode_times(num_seqs, kv_tokens_start, steps)
        if len(self.gpus) == 1:
            return compute
        return self.comm_price(num_seqs, num_seqs).total_with(compute)

    def account(self, stats_or_tokens: tuple[int, int], durations) -> tuple[float, ...]:
        """Book closed-form iteration times (one, or an array of a decode run) as compute and
        collectives; returns the (compute, all-reduce, all-gather, all-to-all, host) seconds."""
        single = isinstance(durations, float)          # one iteration (the common case): no numpy
        total = durations if single else float(np.add.reduce(durations))   # np.sum without its wrapper
        busy = self.busy
        if len(self.gpus) == 1:
            if single:
                busy["compute"].add(durations)
            else:
                busy["compute"].add_array(durations)
            return total, 0.0, 0.0, 0.0, 0.0
        comm = self.comm_price(*stats_or_tokens)
        ar, ag = comm.seconds["allreduce"], comm.seconds["allgather"]
        count = 1 if single else np.size(durations)
        self.executor.charge(comm.charges, count)
        if single:
            busy["compute"].add(durations - (ar + ag))
        else:
            busy["compute"].add_array(np.asarray(durations) - (ar + ag))
        busy["allreduce"].add(ar * count)
        busy["allgather"].add(ag * count)
        return total - (ar + ag) * count, ar * count, ag * count, 0.0, 0.0

    # -- one iteration as a process ------------------------------------------------------------
    def execute(self, stats: BatchStats):
        """SimPy process body: the iteration, priced or played; returns its time split."""
        if self.closed_form:
            duration = self.time(stats)
            yield self.env.timeout(duration)
            return self.account((stats.tokens, stats.logits_tokens), duration)
        plan = self.planner.plan(stats)
        if self.priced:
            cost = price(plan, self.executor.idle)
            yield self.env.timeout(cost.total)
            self.executor.charge(cost.charges)
            s = cost.seconds
            split = (s["compute"], s["allreduce"], s["allgather"], s["alltoall"] + s["straggler"], s["host"])
        else:
            split = yield from self.executor.play(plan)
        for kind, seconds in zip(BUSY_KINDS, split):
            self.busy[kind].add(seconds)
        return split

    def busy_s(self) -> dict[str, float]:
        """Seconds per kind, each the correctly rounded sum of its parts (math.fsum: any order)."""
        return {kind: total.value() for kind, total in self.busy.items()}
