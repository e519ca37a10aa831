"""Speculative decoding's pure parts: the drafter's cost and memory, the acceptance model (layer 1).

A speculating sequence's step: the drafter proposes k tokens (k passes, one token a sequence
each), then the target verifies k + 1 positions in one forward pass (the last sampled token and
the k drafts: a chunk of k + 1 query tokens over the sequence's cached context, logits at every
position), and keeps the drafts up to the first rejected one plus one token of its own
(Leviathan et al., "Fast Inference from Transformers via Speculative Decoding", ICML 2023,
arXiv:2211.17192: with each draft accepted with probability alpha independently, a step yields
(1 - alpha^(k+1)) / (1 - alpha) tokens on average). The drafters, as data:

- ``draft``: a smaller model of the same vocabulary (a catalog model), run with the target's TP
  (vLLM's default draft_tensor_parallel_size); its weights and its own KV cache share the GPU.
- ``eagle``: EAGLE's auto-regression head (Li et al., "EAGLE: Speculative Sampling Requires
  Rethinking Feature Uncertainty", ICML 2024, arXiv:2401.15077, section 4): an FC layer from
  [feature; token embedding] (2h) to h and one decoder layer of the target's shape, reusing the
  target's embedding and LM head (0.99B parameters for a 70B target, its Table 5); one decoder
  layer of KV.
- ``mtp``: DeepSeek-V3's multi-token prediction module (arXiv:2412.19437, section 2.2): a
  projection M (2h -> h) and one Transformer block between the shared embedding and output head,
  applied k times in sequence at inference (vLLM's DeepSeek MTP reuses its one module). The same
  shape as EAGLE's head for a dense target; an MoE target's MoE block is not modelled.
- ``ideal``: a drafter that costs nothing (the ceiling of speculation; a what-if).

Each draft pass also prefills: the drafter builds its own KV over every prompt token the target
prefills (a draft model over its layers, EAGLE/MTP over their one layer).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from simserve.catalog import DTYPE_BYTES, Gpu, ModelCard
from simserve.cost.memory import MemoryPlan, kv_bytes_per_token, layer_weight_params, weights_bytes
from simserve.cost.operators import (BatchStats, Precision, Shard, gemm_model, head_op_models,
                                     layer_op_models)
from simserve.cost.step import StepCost

METHODS = ("draft", "eagle", "mtp", "ideal")


@dataclass(frozen=True)
class SpecBatchStats(BatchStats):
    """A batch whose decodes speculate. The verify chunks are in the prefill fields, beside the
    prompt chunks (`prompt_*`: what the drafter prefills too); `draft_seqs` sequences draft k
    tokens each over a summed context (the last sampled token included) of `draft_kv_tokens`."""
    prompt_tokens: int = 0
    prompt_attn_pairs: float = 0.0
    prompt_kv_tokens: float = 0.0
    draft_seqs: int = 0
    draft_kv_tokens: float = 0.0


class Drafter:
    """The drafter of one pipeline stage's GPU group: its compute per iteration and the TP
    all-reduces its layers add (`allreduces_per_pass` of `hidden` activations per token)."""

    def __init__(self, method: str, target: ModelCard, draft: ModelCard | None, tp: int, precision: Precision,
                 gpu: Gpu, tokens: int):
        self.method, self.tokens, self.tp = method, tokens, tp
        self.hidden = target.hidden if draft is None else draft.hidden
        self.act_bytes = DTYPE_BYTES[precision.activations]
        if method == "ideal":
            self.cost, self.layers = None, 0
        elif method == "draft":
            self.layers = draft.num_layers
            self.cost = StepCost(draft, Shard(tp=tp, num_layers=draft.num_layers), precision, gpu)
        else:
            self.layers = 1
            h = target.hidden
            one = Shard(tp=tp, num_layers=1)
            ops = [(m, 1.0) for m in layer_op_models(target, one, precision)]
            ops += [(gemm_model("draft_fc", 2 * h, h // tp, precision), 1.0)]   # [feature; embedding] -> h, TP-split
            ops += [(m, 1.0) for m in head_op_models(target, one, precision)]
            self.cost = StepCost.of_ops(ops, gpu)
        # per pass: two per layer (attention and FFN outputs), one more after a draft model's embedding
        self.allreduces_per_pass = 0 if tp == 1 or self.cost is None else \
            2 * self.layers + (1 if method == "draft" else 0)

    def passes(self, stats: BatchStats) -> list[tuple[float, int, int]]:
        """(compute seconds, tokens a pass, passes) of this iteration's draft passes: the first also
        prefills the prompt tokens the target prefills (the drafter's own KV); when decodes
        speculate, the other k - 1 passes are decode steps of the same sequences, their context one
        token longer each (evaluated as a run: `StepCost.decode_times`, bit-identical to one by one)."""
        if not isinstance(stats, SpecBatchStats):      # no speculating decode: the prompts only
            stats = SpecBatchStats(prompt_tokens=stats.prefill_tokens, prompt_attn_pairs=stats.prefill_attn_pairs,
                                   prompt_kv_tokens=stats.prefill_kv_tokens)
        seqs = stats.draft_seqs
        if self.cost is None or not (seqs or stats.prompt_tokens):
            return []
        first = BatchStats(prefill_tokens=stats.prompt_tokens, decode_tokens=seqs,
                           prefill_attn_pairs=stats.prompt_attn_pairs, prefill_kv_tokens=stats.prompt_kv_tokens,
                           decode_kv_tokens=stats.draft_kv_tokens, logits_tokens=seqs)
        out = [(self.cost.time(first), first.tokens, 1)]
        if seqs and self.tokens > 1:
            rest = self.cost.decode_times(seqs, stats.draft_kv_tokens + seqs, self.tokens - 1)
            out.append((float(np.sum(rest)), seqs, self.tokens - 1))
        return out

    def weights_bytes(self, draft: ModelCard | None, target: ModelCard, precision: Precision) -> float:
        if self.cost is None:
            return 0.0
        if self.method == "draft":
            return weights_bytes(draft, Shard(tp=self.tp, num_layers=draft.num_layers), precision)
        h = target.hidden
        return (layer_weight_params(target, self.tp) + 2 * h * h / self.tp) * DTYPE_BYTES[precision.weights]

    def kv_bytes_per_token(self, draft: ModelCard | None, target: ModelCard, precision: Precision) -> float:
        if self.cost is None:
            return 0.0
        model = draft if self.method == "draft" else target
        return kv_bytes_per_token(model, Shard(tp=self.tp, num_layers=self.layers), precision)


def with_drafter(plan: MemoryPlan, weights: float, kv_per_token: float) -> MemoryPlan:
    """The memory plan once the drafter's weights and per-token KV share the GPU."""
    return replace(plan, weights_bytes=plan.weights_bytes + weights,
                   kv_bytes_per_token=plan.kv_bytes_per_token + kv_per_token,
                   kv_capacity_bytes=plan.kv_capacity_bytes - weights)


def accepted_drafts(rng: np.random.Generator, alphas: np.ndarray, k: int) -> np.ndarray:
    """Drafts accepted per sequence in one step: each of the k drafts is accepted with its
    sequence's probability alpha, up to the first rejection (Leviathan et al.'s i.i.d. model)."""
    if k == 0 or len(alphas) == 0:
        return np.zeros(len(alphas), dtype=np.int64)
    ok = rng.random((len(alphas), k)) < alphas[:, None]
    return np.cumprod(ok, axis=1).sum(axis=1)


def expected_tokens_per_step(alpha: float, k: int) -> float:
    """(1 - alpha^(k+1)) / (1 - alpha): tokens a verify step yields on average (k + 1 at alpha 1)."""
    return float(k + 1) if alpha >= 1.0 else (1.0 - alpha ** (k + 1)) / (1.0 - alpha)
