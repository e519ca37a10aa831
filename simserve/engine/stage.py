"""One pipeline stage of a replica: its tensor-parallel GPU group, compute and collectives.

An iteration on a stage is compute (cost.StepCost for the stage's layers) plus its tensor-parallel
collectives: two all-reduces of tokens x hidden activations per layer (after attention and after
the FFN, Megatron-style), one more after the vocab-parallel embedding on the first stage, and a
gather of the vocab-parallel logits on the last stage (vLLM's tensor_model_parallel_gather).

Timing follows DESIGN.md section 2. When the group's links are its own (no other group or
pipeline transfer can use them; decided once from the placement) and fidelity is `fast`, a
collective takes the time it takes on an idle network (memoised per size) and the whole iteration
is one closed-form duration, so decode runs can still be coalesced. Otherwise `execute` plays the
iteration as a SimPy process: in `fast`, one Communicator call per collective kind with the
layer count (replayed if its links are idle, played if not); in `exact`, every collective of every
layer is played on the network between slices of compute.
"""
from __future__ import annotations

import math

import numpy as np

from simserve.catalog import DTYPE_BYTES, ModelCard
from simserve.comm import Communicator, collective_time
from simserve.comm.player import compiled
from simserve.cost.operators import BatchStats, Precision, Shard
from simserve.cost.step import StepCost


class Stage:
    def __init__(self, env, comm: Communicator | None, step_cost: StepCost, gpus: tuple[int, ...],
                 model: ModelCard, precision: Precision, shard: Shard, layers: int, algorithm: str,
                 fidelity: str, exclusive_links: bool):
        self.env = env
        self.comm = comm
        self.step_cost = step_cost
        self.gpus = gpus
        self.layers = layers
        self.algorithm = algorithm
        self.fidelity = fidelity
        tp = len(gpus)
        self.allreduces = (2 * layers + (1 if shard.first_stage else 0)) if tp > 1 else 0
        self.gathers_logits = tp > 1 and shard.last_stage
        act = DTYPE_BYTES[precision.activations]
        self.allreduce_bytes_per_token = model.hidden * act
        self.logit_bytes_per_token = (-(-model.vocab // tp)) * tp * act
        self.closed_form = tp == 1 or (fidelity == "fast" and exclusive_links)
        self._comm_memo: dict[tuple[int, int], tuple[float, float, list]] = {}
        self.calls: dict[tuple[str, str], float] = {}    # (op, algorithm) -> collectives issued
        self.busy = {"compute": [], "allreduce": [], "allgather": []}   # per GPU of the group

    # -- closed form ---------------------------------------------------------------------------
    def comm_s(self, tokens: int, logits: int) -> tuple[float, float]:
        """(all-reduce seconds, all-gather seconds) of one iteration on an idle network."""
        return self._comm(tokens, logits)[:2]

    def _comm(self, tokens: int, logits: int) -> tuple[float, float, list]:
        """(all-reduce s, all-gather s, [(compiled collective, times per iteration)]), memoised."""
        key = (tokens, logits)
        found = self._comm_memo.get(key)
        if found is None:
            topo = self.comm.topology
            ar = ag = 0.0
            programs = []
            for op, algo, nbytes, times in (
                    ("allreduce", self.algorithm, tokens * self.allreduce_bytes_per_token, self.allreduces),
                    ("allgather", "auto", logits * self.logit_bytes_per_token, int(self.gathers_logits))):
                if not times or not nbytes:
                    continue
                t, used = collective_time(topo, op, algo, self.gpus, nbytes)
                if op == "allreduce":
                    ar = times * t
                else:
                    ag = times * t
                programs.append((compiled(topo, op, used, self.gpus, nbytes), times))
            found = self._comm_memo[key] = (ar, ag, programs)
        return found

    def time(self, stats: BatchStats) -> float:
        compute = self.step_cost.time(stats)
        if len(self.gpus) == 1:
            return compute
        ar, ag = self.comm_s(stats.tokens, stats.logits_tokens)
        return compute + ar + ag

    def decode_times(self, num_seqs: int, kv_tokens_start: float, steps: int) -> np.ndarray:
        compute = self.step_cost.decode_times(num_seqs, kv_tokens_start, steps)
        if len(self.gpus) == 1:
            return compute
        ar, ag = self.comm_s(num_seqs, num_seqs)
        return compute + ar + ag

    def account(self, stats_or_tokens: tuple[int, int], durations) -> tuple[float, float, float]:
        """Split closed-form iteration times into compute and collectives for the breakdown;
        returns the (compute, all-reduce, all-gather) seconds of these iterations."""
        single = isinstance(durations, float)          # one iteration (the common case): no numpy
        total = durations if single else float(np.sum(durations))
        if len(self.gpus) == 1:
            self.busy["compute"].append(durations)
            return total, 0.0, 0.0
        tokens, logits = stats_or_tokens
        ar, ag, programs = self._comm(tokens, logits)
        count = 1 if single else np.size(durations)
        for program, times in programs:
            key = (program.schedule.op, program.algorithm)
            self.calls[key] = self.calls.get(key, 0) + times * count
            program.account(self.comm.network, times * count)
        self.busy["compute"].append(durations - (ar + ag) if single else np.asarray(durations) - (ar + ag))
        self.busy["allreduce"].append(ar * count)
        self.busy["allgather"].append(ag * count)
        return total - (ar + ag) * count, ar * count, ag * count

    # -- played --------------------------------------------------------------------------------
    def execute(self, stats: BatchStats):
        """SimPy process body: the iteration with its collectives played on the network."""
        env = self.env
        compute = self.step_cost.time(stats)
        if self.closed_form:
            duration = self.time(stats)
            yield env.timeout(duration)
            return self.account((stats.tokens, stats.logits_tokens), duration)
        start = env.now
        ar_bytes = stats.tokens * self.allreduce_bytes_per_token
        ag_bytes = stats.logits_tokens * self.logit_bytes_per_token
        ar_s = ag_s = 0.0
        if self.fidelity == "exact" and self.allreduces:
            slice_s = compute / (self.allreduces + 1)
            for _ in range(self.allreduces):
                yield env.timeout(slice_s)
                t0 = env.now
                yield from self.comm.run("allreduce", self.gpus, ar_bytes, algo=self.algorithm)
                ar_s += env.now - t0
            yield env.timeout(slice_s)
        else:
            yield env.timeout(compute)
            if self.allreduces and ar_bytes:
                t0 = env.now
                yield from self.comm.run("allreduce", self.gpus, ar_bytes, algo=self.algorithm, count=self.allreduces)
                ar_s = env.now - t0
        if self.gathers_logits and ag_bytes:
            t0 = env.now
            yield from self.comm.run("allgather", self.gpus, ag_bytes, algo="auto")
            ag_s = env.now - t0
        self.busy["compute"].append(env.now - start - ar_s - ag_s)
        self.busy["allreduce"].append(ar_s)
        self.busy["allgather"].append(ag_s)
        return env.now - start - ar_s - ag_s, ar_s, ag_s

    def busy_s(self) -> dict[str, float]:
        out = {}
        for kind, parts in self.busy.items():
            arrays = [np.atleast_1d(np.asarray(p, dtype=float)) for p in parts]
            out[kind] = math.fsum(np.concatenate(arrays)) if arrays else 0.0
        return out
