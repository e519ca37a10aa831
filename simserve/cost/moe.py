"""Mixture-of-experts layers as pure functions: routing, expert placement, expert cost, memory.

Layout (vLLM's expert-parallel layout, `--enable-expert-parallel` with data-parallel attention):
a replica's `ep` GPUs form the EP group. Attention runs tensor-parallel in groups of `tp` GPUs,
`dp_attention = ep / tp` such groups side by side, each taking an equal share of the batch's tokens
(and attention work). The routed experts are sharded over the `ep` GPUs; attention, the router,
shared experts, dense layers and the vocab-parallel head are sharded by `tp` inside each group
(replicated across groups). With `ep = 1` every GPU of the TP group holds every expert at 1/tp of
its width (vLLM's default without EP): no all-to-all, the MoE output is all-reduced like a dense FFN.

Routing (documented approximations):
- Expert popularity per layer: uniform, zipf(s) (rank r gets r^-s, ranks shuffled per layer),
  dirichlet(alpha), or a routing trace; fixed per layer for the run, or re-drawn every iteration.
- Each iteration draws token-expert pairs: T tokens x top_k choices, multinomial over the
  popularity. The k choices of one token are drawn independently (with replacement), which only
  matters for experts whose popularity approaches 1 / top_k.
- `distinct` routing draws per iteration stand for all MoE layers: layer l uses draw l mod n.
- Dispatch de-duplication (one copy of a token per destination GPU, however many of its experts
  that GPU hosts): a GPU receives its pairs times a ratio fixed per layer from the expected
  popularity (`dedup_ratio`: exact in expectation for uniform popularity; 1 when a GPU hosts one
  expert, since a token's k experts are distinct).
- Tokens leave from every GPU of the group equally (T / ep each); combine returns the same tokens.

Expert compute per GPU: for each expert copy it hosts that receives c tokens, a gated FFN as
grouped GEMMs, `max(c x flops / achievable FLOP/s, (weights + c x activations) / achievable HBM
bandwidth)`: a copy with few tokens is bound by reading its weights (the roofline is what makes
grouped GEMMs inefficient at small token counts); copies with no tokens cost nothing. Three kernel
launches per GPU (grouped gate_up, activation, grouped down). The MoE layer waits for the slowest GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simserve.catalog import DTYPE_BYTES, Gpu, ModelCard
from simserve.cost.memory import GiB, MemoryPlan, attention_params
from simserve.cost.memory import kv_bytes_per_token as dense_kv_bytes_per_token
from simserve.cost.operators import (Op, OpModel, Precision, Shard, ffn_op_models, head_op_models, mla_op_models,
                                     quant_per_token)
from simserve.cost.operators import attention_op_models as dense_attention_op_models
from simserve.cost.roofline import efficiencies
from simserve.errors import ConfigError



@dataclass(frozen=True)
class MoeLayout:
    ep: int          # GPUs the experts are sharded over (1: experts TP-sharded on every GPU)
    tp: int          # attention tensor-parallel degree
    redundant: int = 0

    @property
    def gpus(self) -> int:
        return max(self.ep, self.tp)

    @property
    def dp_attention(self) -> int:
        return self.gpus // self.tp

    @property
    def expert_ranks(self) -> int:
        return self.ep

    @property
    def expert_width_divisor(self) -> int:
        return self.tp if self.ep == 1 else 1


# ---- routing -------------------------------------------------------------------------------------

def popularity(kind: str, num_experts: int, rows: int, rng: np.random.Generator, *, zipf_s: float = 1.2,
               dirichlet_alpha: float | None = None) -> np.ndarray:
    """(rows, E) expert popularities, each row summing to 1."""
    if kind == "uniform":
        return np.full((rows, num_experts), 1.0 / num_experts)
    if kind == "zipf":
        base = np.arange(1, num_experts + 1, dtype=float) ** -zipf_s
        base /= base.sum()
        return np.stack([base[rng.permutation(num_experts)] for _ in range(rows)])
    if kind == "dirichlet":
        return rng.dirichlet(np.full(num_experts, dirichlet_alpha or 1.0), size=rows)
    raise ConfigError(f"unknown routing {kind!r}")


def _normalise(counts: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=-1, keepdims=True)
    uniform = np.full_like(counts, 1.0 / counts.shape[-1])
    return np.where(total > 0, counts / np.where(total > 0, total, 1.0), uniform)


class ExpertRouter:
    """Draws each iteration's token-expert pair counts for `distinct` MoE layers (seeded)."""

    def __init__(self, kind: str, num_experts: int, top_k: int, distinct: int, rng_popularity: np.random.Generator,
                 rng_counts: np.random.Generator, *, zipf_s: float = 1.2, dirichlet_alpha: float | None = None,
                 redraw: bool = False, trace: np.ndarray | None = None):
        self.kind, self.num_experts, self.top_k, self.distinct = kind, num_experts, top_k, distinct
        self.zipf_s, self.dirichlet_alpha, self.redraw = zipf_s, dirichlet_alpha, redraw
        self.rng = rng_counts
        self.trace = trace
        self.iteration = 0
        if trace is not None:
            rows = [_normalise(trace[:, s % trace.shape[1]]).mean(axis=0) for s in range(distinct)]
            self.popularity = np.stack(rows)
        else:
            self.popularity = popularity(kind, num_experts, distinct, rng_popularity, zipf_s=zipf_s,
                                         dirichlet_alpha=dirichlet_alpha)

    def expected_popularity(self) -> np.ndarray:
        """What a placement can know: the fixed popularity, or (re-drawn every iteration) uniform."""
        if self.redraw and self.kind != "uniform":
            return np.full_like(self.popularity, 1.0 / self.num_experts)
        return self.popularity

    def draw(self, tokens: int) -> np.ndarray:
        """(distinct, E) token-expert pairs of an iteration of `tokens` tokens."""
        if self.trace is not None:
            step = self.trace[self.iteration % self.trace.shape[0]]
            pvals = _normalise(np.stack([step[s % step.shape[0]] for s in range(self.distinct)]))
        elif self.redraw:
            pvals = popularity(self.kind, self.num_experts, self.distinct, self.rng, zipf_s=self.zipf_s,
                               dirichlet_alpha=self.dirichlet_alpha)
        else:
            pvals = self.popularity
        self.iteration += 1
        return self.rng.multinomial(int(tokens) * self.top_k, pvals)


# ---- placement -----------------------------------------------------------------------------------

def place_experts(strategy: str, expected: np.ndarray, ranks: int, redundant: int = 0) -> np.ndarray:
    """(layers, E, ranks): the share of expert e's tokens that rank r serves, per distinct layer.

    round_robin: expert e on rank e mod ranks. balanced: the survey's greedy expert load balancing
    (Huang et al. 2024): first `redundant` extra copies go, one at a time, to the expert with the
    highest expected load per copy; then copies are placed heaviest first on the least-loaded rank
    that has a free slot and no copy of that expert (every rank holds (E + redundant) / ranks)."""
    layers, experts = expected.shape
    share = np.zeros((layers, experts, ranks))
    if strategy == "round_robin" or ranks == 1:
        share[:, np.arange(experts), np.arange(experts) % ranks] = 1.0
        return share
    slots = (experts + redundant) // ranks
    for s in range(layers):
        p = expected[s]
        copies = np.ones(experts, dtype=int)
        for _ in range(redundant):
            load = np.where(copies < ranks, p / copies, -1.0)
            copies[int(np.argmax(load))] += 1
        items = sorted(((p[e] / copies[e], e) for e in range(experts) for _ in range(copies[e])),
                       key=lambda x: (-x[0], x[1]))
        load = np.zeros(ranks)
        used = np.zeros(ranks, dtype=int)
        for w, e in items:
            free = [r for r in range(ranks) if used[r] < slots and share[s, e, r] == 0]
            r = min(free, key=lambda r: (load[r], r))
            share[s, e, r] = 1.0 / copies[e]
            load[r] += w
            used[r] += 1
    return share


# ---- expert compute ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExpertCost:
    """Per-copy roofline coefficients of one expert's gated FFN on one GPU."""
    s_per_token_compute: float    # FLOPs per token / achievable FLOP/s
    weights_s: float              # weights read / achievable bandwidth
    s_per_token_memory: float     # activation bytes per token / achievable bandwidth
    overhead_s: float             # kernel launches per GPU per MoE layer
    s_per_token_quant: float = 0.0   # fp8/fp4 activation quantisation of both GEMM inputs, per token

    @staticmethod
    def of(model: ModelCard, layout: MoeLayout, precision: Precision, gpu: Gpu) -> "ExpertCost":
        h = model.hidden
        width = model.moe.expert_intermediate // layout.expert_width_divisor
        wb, ab = DTYPE_BYTES[precision.weights], DTYPE_BYTES[precision.activations]
        probe = Op("experts", "gemm", 0.0, 0.0, precision.gemm_dtype)
        eta_c, eta_m = efficiencies(probe, gpu)
        flops = 6.0 * h * width                                   # gate_up (2HI x 2) + down (2IH)
        act = (h + 2 * width) * ab + 3 * width * ab + (width + h) * ab   # gate_up in/out, SiLU, down in/out
        # routed experts quantise their inputs as dense GEMMs do (gate_up's hidden, down's width)
        _, quant_bytes, quant_kernels = quant_per_token([h, width], precision)
        eta_q = efficiencies(Op("quant", "elementwise", 0.0, 0.0, "fp32"), gpu)[1]
        return ExpertCost(flops / (gpu.flops(precision.gemm_dtype) * eta_c), 3.0 * h * width * wb / (gpu.hbm_bw_Bps * eta_m),
                          act / (gpu.hbm_bw_Bps * eta_m), (3 + quant_kernels) * gpu.efficiency.kernel_overhead_s,
                          quant_bytes / (gpu.hbm_bw_Bps * eta_q))

    def per_rank_s(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (..., E, ranks) served by each copy -> (..., ranks) expert seconds of each GPU."""
        copy_s = np.maximum(tokens * self.s_per_token_compute, self.weights_s + tokens * self.s_per_token_memory)
        if self.s_per_token_quant:
            copy_s = copy_s + tokens * self.s_per_token_quant
        copy_s = np.where(tokens > 0, copy_s, 0.0)
        total = copy_s.sum(axis=-2)
        return np.where(tokens.sum(axis=-2) > 0, total + self.overhead_s, 0.0)


def rank_tokens(pairs: np.ndarray, share: np.ndarray) -> np.ndarray:
    """pairs (S, E), share (S, E, ranks) -> tokens each copy serves (S, E, ranks)."""
    return pairs[:, :, None] * share


def dedup_ratio(expected: np.ndarray, share: np.ndarray, top_k: int) -> np.ndarray:
    """(S, ranks): distinct tokens per token-expert pair a GPU receives (see the module docstring).
    From the expected popularity: a GPU whose copies draw a share q of the pairs is hit by a token
    with probability 1 - prod_{t<k} (1 - qE / (E - t)), which is exact for uniform popularity (qE of
    the E experts on it, k distinct choices); the ratio is that over k q, kept within
    [1 / min(k, copies on the GPU), 1] (one copy: never a duplicate)."""
    experts = expected.shape[1]
    q = np.einsum("se,ser->sr", expected, share)
    copies = (share > 0).sum(axis=1)
    miss = np.ones_like(q)
    for t in range(min(top_k, experts)):
        miss = miss * np.clip(1.0 - q * experts / (experts - t), 0.0, 1.0)
    ratio = np.where(q > 0, (1.0 - miss) / np.where(q > 0, top_k * q, 1.0), 1.0)
    floor = 1.0 / np.maximum(np.minimum(copies, top_k), 1)
    return np.clip(ratio, floor, 1.0)


def dispatch_matrix(received: np.ndarray, tokens: int, bytes_per_token: float) -> list[list[float]]:
    """Per-pair dispatch bytes M[i][j] for one layer: rank i holds tokens / n of the batch and sends
    rank j its proportional share of the distinct tokens j receives; the diagonal stays local."""
    n = len(received)
    row = [float(received[j]) / n * bytes_per_token for j in range(n)]
    return [[0.0 if i == j else row[j] for j in range(n)] for i in range(n)]


# ---- non-expert operators ------------------------------------------------------------------------

def attention_op_models(model: ModelCard, tp: int, precision: Precision) -> list[OpModel]:
    if model.mla is not None:
        return mla_op_models(model, tp, precision)
    return dense_attention_op_models(model, Shard(tp=tp), precision)


def moe_layer_op_models(model: ModelCard, tp: int, precision: Precision) -> list[OpModel]:
    """An MoE layer's operators outside the routed experts, on one GPU: attention, the router
    (kept in the activation dtype, as vLLM leaves the gate unquantised), shared experts (TP-sharded)."""
    moe, h = model.moe, model.hidden
    router = OpModel("router", "gemm", precision.activations, gate="tokens",
                     flops={"tokens": 2.0 * h * moe.num_experts},
                     bytes={"const": h * moe.num_experts * DTYPE_BYTES[precision.activations],
                            "tokens": (h + moe.num_experts) * DTYPE_BYTES[precision.activations]})
    ops = attention_op_models(model, tp, precision) + [router]
    if moe.shared_experts:
        ops += ffn_op_models(h, moe.shared_experts * moe.expert_intermediate // tp, precision, "shared_")
    return ops


def dense_layer_op_models(model: ModelCard, tp: int, precision: Precision) -> list[OpModel]:
    return attention_op_models(model, tp, precision) + ffn_op_models(model.hidden, model.intermediate // tp, precision)


def head_models(model: ModelCard, tp: int, precision: Precision) -> list[OpModel]:
    return head_op_models(model, Shard(tp=tp), precision)


# ---- memory --------------------------------------------------------------------------------------

def kv_bytes_per_token(model: ModelCard, tp: int, precision: Precision, layers: int | None = None) -> float:
    """KV cache bytes per token on one GPU, its `layers` (default all)."""
    return dense_kv_bytes_per_token(model, Shard(tp=tp, num_layers=layers), precision)


def moe_weights_bytes(model: ModelCard, layout: MoeLayout, precision: Precision,
                      stage: "StageLayers | None" = None) -> tuple[float, float]:
    """(all weights, routed-expert weights) on one GPU of a stage (default: the whole model)."""
    stage = stage or StageLayers.whole(model)
    moe, h, tp = model.moe, model.hidden, layout.tp
    wb, ab = DTYPE_BYTES[precision.weights], DTYPE_BYTES[precision.activations]
    moe_layers = stage.moe_layers
    dense = stage.layers * attention_params(model, tp) * wb
    dense += stage.dense_layers * 3 * h * (model.intermediate // tp) * wb
    dense += moe_layers * (3 * h * moe.shared_experts * moe.expert_intermediate // tp * wb + h * moe.num_experts * ab)
    slots = (moe.num_experts + layout.redundant) // layout.ep
    experts = moe_layers * slots * 3 * h * (moe.expert_intermediate // layout.expert_width_divisor) * wb
    vocab_shard = -(-model.vocab // tp)
    tables = int(stage.first_stage) + int(stage.last_stage and not (model.tied_embeddings and stage.first_stage))
    head = vocab_shard * h * ab * tables
    return dense + experts + head, experts


@dataclass(frozen=True)
class StageLayers:
    """The layers of one pipeline stage of an MoE model: its leading dense layers and MoE layers."""
    dense_layers: int
    moe_layers: int
    first_stage: bool = True
    last_stage: bool = True

    @property
    def layers(self) -> int:
        return self.dense_layers + self.moe_layers

    @staticmethod
    def whole(model: ModelCard) -> "StageLayers":
        return StageLayers(model.moe.first_dense_layers, model.num_layers - model.moe.first_dense_layers)

    @staticmethod
    def split(model: ModelCard, layers: tuple[int, ...]) -> list["StageLayers"]:
        """Consecutive stages of `layers[s]` layers each; the model's first layers are the dense ones."""
        out, start = [], 0
        for s, n in enumerate(layers):
            dense = max(0, min(start + n, model.moe.first_dense_layers) - start)
            out.append(StageLayers(dense, n - dense, s == 0, s == len(layers) - 1))
            start += n
        return out


def moe_memory_plan(model: ModelCard, layout: MoeLayout, precision: Precision, gpu: Gpu, *,
                    gpu_memory_utilization: float = 0.9, reserved_bytes: float = 1.5 * GiB,
                    max_tokens: int = 8192, max_seqs: int = 256,
                    stage: StageLayers | None = None) -> tuple[MemoryPlan, float]:
    """One GPU's plan (KV per token and capacity of that GPU) and its routed-expert weight bytes.
    Activations: a forward pass of max_tokens / dp_attention tokens through attention, plus the
    tokens an expert GPU receives (top_k x its share, doubled for routing skew) through the experts'
    gate_up output and activation, plus fp32 logits on the last stage; an estimate, not a profile."""
    stage = stage or StageLayers.whole(model)
    moe, h, tp = model.moe, model.hidden, layout.tp
    ab = DTYPE_BYTES[precision.activations]
    usable = gpu.hbm_bytes * gpu_memory_utilization
    weights, experts = moe_weights_bytes(model, layout, precision, stage)
    group_tokens = max_tokens / layout.dp_attention
    heads = model.num_heads // tp
    attn = (3 * h + 2 * heads * model.head_dim * 2) * ab
    width = moe.expert_intermediate // layout.expert_width_divisor
    received = min(max_tokens * moe.top_k, 2.0 * max_tokens * moe.top_k / layout.ep)
    act = group_tokens * attn + received * (3 * width + 2 * h) * ab
    if stage.last_stage:
        act += max_seqs / layout.dp_attention * (-(-model.vocab // tp)) * 4.0
    plan = MemoryPlan(hbm_bytes=gpu.hbm_bytes, usable_bytes=usable, weights_bytes=weights, activation_bytes=act,
                      reserved_bytes=reserved_bytes, kv_bytes_per_token=kv_bytes_per_token(model, tp, precision,
                                                                                           stage.layers),
                      kv_capacity_bytes=usable - weights - act - reserved_bytes)
    return plan, experts
