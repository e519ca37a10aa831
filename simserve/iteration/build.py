"""Plan builders: (stage shard, batch) -> IterationPlan, for every kind of stage (layer 1).

A stage holds `layers` decoder layers of the model (its pipeline shard) and, on the first and last
stage, the embedding and the head. A dense layer is attention + FFN with the Megatron all-reduce
after each (one more after the vocab-parallel embedding, and the vocab-parallel logits gathered on
the last stage, as vLLM's tensor_model_parallel_gather does). An MoE layer is the non-expert part
(attention, router, shared experts) on each attention group's share of the tokens, the attention
output's all-reduce inside each TP group, the dispatch all-to-all over the EP group (per-pair bytes
from this iteration's routing draw), the routed experts (the slowest GPU holds the layer back), the
combine all-to-all, and an all-gather inside each TP group (each TP rank dispatched 1/tp of its
group's tokens). The layout and routing model are simserve.cost.moe's.
"""
from __future__ import annotations

import math

import numpy as np

from simserve.catalog import DTYPE_BYTES, Gpu, ModelCard
from simserve.cost.moe import (ExpertCost, ExpertRouter, MoeLayout, dedup_ratio, dense_layer_op_models,
                               dispatch_matrix, head_models, moe_layer_op_models)
from simserve.cost.operators import BatchStats, Precision, Shard
from simserve.cost.step import StepCost
from simserve.iteration.steps import AllToAll, Collective, Compute, Experts, Interleaved, IterationPlan, Layers
from simserve.runtime import Runtime, graph_batch


def dropped_syncs(layers: int, fraction: float) -> int:
    """Layers of `layers` whose attention-output all-reduce is skipped (collectives.sync_point_drop:
    Kim et al., "SPD: Sync-Point Drop for Efficient Tensor Parallelism of Large Language Models",
    ICML 2025, arXiv:2502.20727, which drops it in the blocks least sensitive to it). A latency
    what-if: which layers, and what it does to accuracy, are out of scope; only the count is
    modelled, rounded half up."""
    return math.floor(fraction * layers + 0.5)


def sync_drop_summary(fraction: float, stages: list) -> dict:
    """The summary's `sync_point_drop` key (none when nothing is dropped): the fraction and the
    attention-output all-reduces one iteration of a replica skips, over its stages."""
    if not fraction:
        return {}
    dropped = sum(getattr(st.planner, "sync_points_dropped", 0) for st in stages)
    return {"sync_point_drop": {"fraction": fraction, "allreduces_dropped_per_iteration": dropped}}


class DensePlanner:
    """A dense stage: one GPU group of `tp` GPUs running its layers and heads as one compute block
    with the TP collectives interleaved (Megatron-style; the same plan for every iteration of the
    same shape, so runs of decode steps can be priced as arrays)."""

    deterministic = True

    def __init__(self, model: ModelCard, shard: Shard, precision: Precision, gpu: Gpu, gpus: tuple[int, ...],
                 algorithm: str, step_cost: StepCost | None = None, sync_drop: float = 0.0):
        self.gpus = tuple(gpus)
        self.layers = shard.num_layers if shard.num_layers is not None else model.num_layers
        self.step_cost = step_cost or StepCost(model, shard, precision, gpu)
        self.algorithm = algorithm
        tp = len(self.gpus)
        self.sync_points_dropped = dropped_syncs(self.layers, sync_drop) if tp > 1 else 0
        self.allreduces = (2 * self.layers - self.sync_points_dropped + (1 if shard.first_stage else 0)) \
            if tp > 1 else 0
        self.gathers_logits = tp > 1 and shard.last_stage
        act = DTYPE_BYTES[precision.activations]
        self.allreduce_bytes_per_token = model.hidden * act
        self.logit_bytes_per_token = (-(-model.vocab // tp)) * tp * act

    def communication(self, tokens: int, logits: int) -> tuple:
        """The plan's collectives for a batch of `tokens` tokens sampling `logits` of them."""
        steps = []
        if self.allreduces:
            steps.append(Collective("allreduce", (self.gpus,), tokens * self.allreduce_bytes_per_token,
                                    self.algorithm, self.allreduces))
        if self.gathers_logits:
            steps.append(Collective("allgather", (self.gpus,), logits * self.logit_bytes_per_token, "auto"))
        return tuple(steps)

    def plan(self, stats: BatchStats) -> IterationPlan:
        return self.plan_of(self.step_cost.time(stats), stats.tokens, stats.logits_tokens)

    def plan_of(self, compute_s, tokens: int, logits: int) -> IterationPlan:
        comm = self.communication(tokens, logits)
        if not self.allreduces:
            return IterationPlan((Compute(compute_s),) + comm)
        return IterationPlan((Interleaved(compute_s, comm[0]),) + comm[1:])


def _scaled(stats: BatchStats, factor: float) -> BatchStats:
    if factor == 1.0:
        return stats
    return BatchStats(stats.prefill_tokens * factor, stats.decode_tokens * factor, stats.prefill_attn_pairs * factor,
                      stats.prefill_kv_tokens * factor, stats.decode_kv_tokens * factor, stats.logits_tokens * factor)


class MoePlanner:
    """An MoE stage: its EP group (`tp` x dp_attention GPUs), a fresh routing draw every iteration
    (so plans are not reused: `deterministic` is False), and the draw's load statistics."""

    deterministic = False

    def __init__(self, model: ModelCard, shard: Shard, precision: Precision, gpu: Gpu, gpus: tuple[int, ...],
                 layout: MoeLayout, router: ExpertRouter, share: np.ndarray, *, allreduce: str, alltoall: str,
                 dense_layers: int, moe_layers: int, runtime: Runtime | None = None, sync_drop: float = 0.0):
        self.gpus, self.layout, self.router, self.share = tuple(gpus), layout, router, share
        self.runtime = runtime          # CUDA-graph padding of decode batches (None: no graphs)
        self.layers = dense_layers + moe_layers
        self.dense_layers, self.moe_layers = dense_layers, moe_layers
        # layers of each kind without their attention-output all-reduce (collectives.sync_point_drop)
        self.dense_drop = dropped_syncs(dense_layers, sync_drop) if layout.tp > 1 else 0
        self.moe_drop = dropped_syncs(moe_layers, sync_drop) if layout.tp > 1 else 0
        self.sync_points_dropped = self.dense_drop + self.moe_drop
        self.allreduce_algo, self.alltoall_algo = allreduce, alltoall
        tp = layout.tp
        self.groups = tuple(self.gpus[g * tp:(g + 1) * tp] for g in range(layout.dp_attention))
        head = head_models(model, tp, precision)
        if not shard.first_stage:
            head = [m for m in head if m.name != "embedding"]
        if not shard.last_stage:
            head = [m for m in head if m.name not in ("final_norm", "lm_head")]
        self.first_stage, self.last_stage = shard.first_stage, shard.last_stage
        self.moe_cost = StepCost.of_ops([(m, 1.0) for m in moe_layer_op_models(model, tp, precision)], gpu)
        self.dense_cost = StepCost.of_ops([(m, 1.0) for m in dense_layer_op_models(model, tp, precision)], gpu)
        self.head_cost = StepCost.of_ops([(m, 1.0) for m in head], gpu)
        self.expert_cost = ExpertCost.of(model, layout, precision, gpu)
        self.dedup = dedup_ratio(router.expected_popularity(), share, router.top_k)   # (S, ranks)
        act = DTYPE_BYTES[precision.activations]
        self.token_bytes = model.hidden * act
        self.logit_bytes_per_token = (-(-model.vocab // tp)) * tp * act
        self.imbalance: list[np.ndarray] = []       # max / mean token-expert pairs per GPU, per draw
        self.slowest_over_mean: list[np.ndarray] = []
        self.straggler_s = 0.0
        self.alltoall_bytes = 0.0                   # dispatch + combine payload, all layers

    def _tp(self, op: str, nbytes: float, count: int = 1) -> tuple:
        if self.layout.tp == 1 or nbytes <= 0:
            return ()
        algo = self.allreduce_algo if op == "allreduce" else "auto"
        return (Collective(op, self.groups, nbytes, algo),) * count

    def plan(self, stats: BatchStats) -> IterationPlan:
        lay = self.layout
        if self.runtime is not None:
            stats, _ = graph_batch(self.runtime, stats, lay.dp_attention)
        tokens = stats.tokens
        group = _scaled(stats, 1.0 / lay.dp_attention)
        tok = math.ceil(tokens / lay.dp_attention) * self.token_bytes
        logits = math.ceil(stats.logits_tokens / lay.dp_attention) * self.logit_bytes_per_token
        steps = []
        if self.dense_layers:
            body = (Compute(self.dense_cost.time(group), "dense_layer"),) + self._tp("allreduce", tok, 2)
            steps += self._split(self.dense_layers, self.dense_drop, (body,))
        if self.moe_layers:
            steps += self._split(self.moe_layers, self.moe_drop, self._moe_bodies(tokens, group, tok))
        if self.first_stage or self.last_stage:
            steps.append(Compute(self.head_cost.time(group), "head"))
        if self.first_stage:
            steps += self._tp("allreduce", tok)
        if self.last_stage:
            steps += self._tp("allgather", logits)
        return IterationPlan(tuple(steps))

    @staticmethod
    def _split(count: int, dropped: int, bodies: tuple) -> list:
        """`count` layers of `bodies`, the last `dropped` of them without the all-reduce that
        follows the attention (each body's second step)."""
        if not dropped:
            return [Layers(count, bodies)]
        without = tuple((body[0],) + body[2:] for body in bodies)
        return [Layers(count - dropped, bodies)] * (count > dropped) + [Layers(dropped, without)]

    def _uses(self, draws: int) -> list[int]:
        """How many MoE layers run each routing draw, the dropped ones included."""
        bodies = ((),) * draws
        if not self.moe_drop:
            return Layers(self.moe_layers, bodies).uses()
        kept, dropped = Layers(self.moe_layers - self.moe_drop, bodies), Layers(self.moe_drop, bodies)
        return [a + b for a, b in zip(kept.uses(), dropped.uses())]

    def _moe_bodies(self, tokens: int, group: BatchStats, tok: float) -> tuple:
        """One body per distinct routing draw of this iteration; records the draw's load statistics."""
        lay = self.layout
        pairs = self.router.draw(tokens)                          # (S, E)
        served = pairs[:, :, None] * self.share                   # (S, E, ranks)
        loads = served.sum(axis=1)                                # (S, ranks)
        expert_s = self.expert_cost.per_rank_s(served)            # (S, ranks)
        slowest, mean = expert_s.max(axis=1), expert_s.mean(axis=1)
        means = loads.mean(axis=1)
        self.imbalance.append(np.where(means > 0, loads.max(axis=1) / np.where(means > 0, means, 1.0), 1.0))
        self.slowest_over_mean.append(np.where(mean > 0, slowest / np.where(mean > 0, mean, 1.0), 1.0))
        draws = pairs.shape[0]
        uses = self._uses(draws)
        self.straggler_s += float(np.dot(np.array(uses), slowest - mean))
        attention = Compute(self.moe_cost.time(group), "moe_layer")
        after = self._tp("allgather", tok) if lay.ep > 1 else self._tp("allreduce", tok)
        bodies = []
        for s in range(draws):
            body = [attention, *self._tp("allreduce", tok)]
            experts = Experts(float(slowest[s]), float(mean[s]), (s,))
            if lay.ep > 1:
                m = dispatch_matrix(loads[s] * self.dedup[s], tokens, self.token_bytes)
                self.alltoall_bytes += 2 * sum(map(sum, m)) * uses[s]
                body += [AllToAll(self.gpus, tuple(map(tuple, m)), self.alltoall_algo, (s, "dispatch")), experts,
                         AllToAll(self.gpus, tuple(zip(*m)), self.alltoall_algo, (s, "combine"))]
            else:
                body.append(experts)
            bodies.append(tuple(body + list(after)))
        return tuple(bodies)
