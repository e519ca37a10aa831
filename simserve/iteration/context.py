"""Context parallelism: a stage of `cp` TP groups sharing each prompt's tokens (layer 1).

As in Meta's "Context Parallelism for Scalable Million-Token Inference" (Yang et al., 2024; seed
004 of this project): a prefill's tokens are cut into 2 x cp chunks and CP rank r holds chunks r
and 2cp-1-r (the load-balanced causal split), so every rank has 1/cp of the tokens and, at every
ring step, exactly two chunk-pairs of causal attention work (each rank 1/cp^2 of the prompt's
(query, key) pairs per step, the diagonal step included). Attention is ring pass-KV: each of the cp
steps computes on the K/V block a rank holds while the block moves on to the next rank
(`RingPass`). Everything else (QKV, output projection, FFN, their TP all-reduces) runs on each
rank's own tokens.

Decode keeps the KV where the prefill made it: every CP rank holds 1/cp of each sequence's
context. A decode token is computed on every CP group (its projections and FFN replicated), each
rank attends over its share of the context, and the partial attention outputs are merged with an
all-gather across the CP ranks after every layer (each rank's partial output of hidden/tp values
per sequence; the log-sum-exp statistics are negligible beside it).
"""
from __future__ import annotations

import dataclasses

from simserve.catalog import DTYPE_BYTES, Gpu, ModelCard
from simserve.cost.operators import BatchStats, Precision, Shard
from simserve.cost.memory import kv_bytes_per_token
from simserve.cost.step import StepCost
from simserve.iteration.steps import AllToAll, Collective, Compute, Interleaved, IterationPlan, RingPass


class ContextParallelPlanner:
    """A dense stage of `cp` TP groups (GPU i of the stage is CP rank i // tp, TP rank i % tp)."""

    # its plans are priced per iteration (Stage.execute), not through DensePlanner's
    # compute + communication closed form
    deterministic = False

    def __init__(self, model: ModelCard, shard: Shard, precision: Precision, gpu: Gpu, gpus: tuple[int, ...],
                 cp: int, algorithm: str, step_cost: StepCost | None = None):
        self.gpus, self.cp, self.algorithm = tuple(gpus), cp, algorithm
        self.tp = tp = len(self.gpus) // cp
        self.layers = shard.num_layers if shard.num_layers is not None else model.num_layers
        self.step_cost = step_cost or StepCost(model, shard, precision, gpu)
        self.tp_groups = tuple(self.gpus[c * tp:(c + 1) * tp] for c in range(cp))
        self.cp_groups = tuple(self.gpus[t::tp] for t in range(tp))
        self.allreduces = (2 * self.layers + (1 if shard.first_stage else 0)) if tp > 1 else 0
        self.gathers_logits = tp > 1 and shard.last_stage
        act = DTYPE_BYTES[precision.activations]
        self.allreduce_bytes_per_token = model.hidden * act
        self.logit_bytes_per_token = (-(-model.vocab // tp)) * tp * act
        self.partial_bytes_per_token = model.hidden / tp * act      # one rank's attention output share
        # one layer's K/V on one GPU of the TP group, per token
        self.kv_bytes_per_token = kv_bytes_per_token(model, Shard(tp=tp, num_layers=1), precision)

    def _rank_stats(self, stats: BatchStats, attention: bool) -> BatchStats:
        """One CP rank's share: 1/cp of the prefill tokens (with 1/cp of their causal pairs, or
        none), every decode token with 1/cp of its context."""
        cp = self.cp
        return dataclasses.replace(
            stats, prefill_tokens=stats.prefill_tokens / cp,
            prefill_attn_pairs=stats.prefill_attn_pairs / cp if attention else 0.0,
            prefill_kv_tokens=stats.prefill_kv_tokens / cp if attention else 0.0,
            decode_kv_tokens=stats.decode_kv_tokens / cp)

    def ring(self, stats: BatchStats) -> RingPass:
        """The prefill's ring attention: one block's compute and one K/V pass per layer."""
        whole = self.step_cost.time(self._rank_stats(stats, True))
        without = self.step_cost.time(self._rank_stats(stats, False))
        block_s = max(0.0, whole - without) / (self.layers * self.cp)
        nbytes = stats.prefill_kv_tokens / self.cp * self.kv_bytes_per_token
        n = len(self.gpus)
        matrix = [[0.0] * n for _ in range(n)]
        for i in range(n):          # CP rank c's TP rank t sends to CP rank c + 1's TP rank t
            matrix[i][(i + self.tp) % n] = nbytes
        transfer = AllToAll(self.gpus, tuple(map(tuple, matrix)), "direct", ("cp-ring",))
        return RingPass(block_s, transfer, self.cp - 1, self.layers)

    def plan(self, stats: BatchStats) -> IterationPlan:
        rank = self._rank_stats(stats, False)
        compute_s = self.step_cost.time(rank)
        steps: list = []
        tokens = rank.prefill_tokens + rank.decode_tokens
        if self.allreduces:
            steps.append(Interleaved(compute_s, Collective("allreduce", self.tp_groups,
                                                           tokens * self.allreduce_bytes_per_token,
                                                           self.algorithm, self.allreduces)))
        else:
            steps.append(Compute(compute_s))
        if stats.prefill_tokens:
            steps.append(self.ring(stats))
        if stats.decode_tokens:
            steps.append(Collective("allgather", self.cp_groups,
                                    stats.decode_tokens * self.partial_bytes_per_token * self.cp, "auto",
                                    self.layers))
        if self.gathers_logits:
            steps.append(Collective("allgather", self.tp_groups[:1],
                                    stats.logits_tokens * self.logit_bytes_per_token, "auto"))
        return IterationPlan(tuple(steps))
