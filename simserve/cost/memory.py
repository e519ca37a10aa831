"""Memory of one GPU: weights, KV cache bytes per token, activation workspace, KV capacity.

Follows vLLM's accounting: of `gpu_memory_utilization` x HBM, what the weights, the peak
activations of a max-size forward pass and the runtime's own buffers leave is the KV cache.
"""
from __future__ import annotations

from dataclasses import dataclass

from simserve.catalog import DTYPE_BYTES, Gpu, ModelCard
from simserve.cost.operators import LayerShape, Precision, Shard

GiB = 2**30


@dataclass(frozen=True)
class MemoryPlan:
    hbm_bytes: float
    usable_bytes: float          # gpu_memory_utilization x HBM
    weights_bytes: float
    activation_bytes: float      # peak workspace of a forward pass at the token and sequence caps
    reserved_bytes: float        # CUDA context, communication buffers, CUDA graph pools
    kv_bytes_per_token: float    # on this GPU, all its layers
    kv_capacity_bytes: float

    @property
    def kv_capacity_tokens(self) -> int:
        return int(self.kv_capacity_bytes // self.kv_bytes_per_token) if self.kv_bytes_per_token else 0

    @property
    def fits(self) -> bool:
        return self.kv_capacity_bytes > 0

    @property
    def shortfall_bytes(self) -> float:
        return max(0.0, -self.kv_capacity_bytes)

    def as_dict(self) -> dict:
        return {"hbm_GiB": self.hbm_bytes / GiB, "usable_GiB": self.usable_bytes / GiB,
                "weights_GiB": self.weights_bytes / GiB, "activation_GiB": self.activation_bytes / GiB,
                "reserved_GiB": self.reserved_bytes / GiB, "kv_bytes_per_token": self.kv_bytes_per_token,
                "kv_capacity_GiB": max(self.kv_capacity_bytes, 0.0) / GiB,
                "kv_capacity_tokens": self.kv_capacity_tokens}


def layer_weight_params(model: ModelCard, tp: int) -> float:
    if model.mla is not None:     # latent attention + the gated FFN
        return attention_params(model, tp) + 3 * model.hidden * (model.intermediate // tp)
    s = LayerShape.of(model, tp)
    return sum(k * n for _, k, n in s.gemms()) + 2 * s.hidden   # + two RMSNorm weight vectors


def attention_params(model: ModelCard, tp: int) -> float:
    h = model.hidden
    if model.mla is not None:
        mla, heads = model.mla, model.num_heads // tp
        qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        return (h * mla.q_lora_rank + mla.q_lora_rank * heads * qk + h * (mla.kv_lora_rank + mla.qk_rope_head_dim)
                + mla.kv_lora_rank * heads * (mla.qk_nope_head_dim + mla.v_head_dim) + heads * mla.v_head_dim * h
                + mla.q_lora_rank + mla.kv_lora_rank + 2 * h)
    s = LayerShape.of(model, tp)
    return h * s.qkv_width + s.q_heads * s.head_dim * h + 2 * h


def weights_bytes(model: ModelCard, shard: Shard, precision: Precision) -> float:
    """Linear layers in the weight dtype; embedding and LM head (vocab-parallel) in the activation
    dtype, as vLLM leaves them unquantised."""
    layers = shard.num_layers if shard.num_layers is not None else model.num_layers
    total = layers * layer_weight_params(model, shard.tp) * DTYPE_BYTES[precision.weights]
    vocab_shard = -(-model.vocab // shard.tp)
    table = vocab_shard * model.hidden * DTYPE_BYTES[precision.activations]
    if shard.first_stage:
        total += table
    if shard.last_stage and not (model.tied_embeddings and shard.first_stage):
        total += table
    return total


def kv_bytes_per_token(model: ModelCard, shard: Shard, precision: Precision) -> float:
    layers = shard.num_layers if shard.num_layers is not None else model.num_layers
    if model.mla is not None:     # the compressed latent and the rotary key, not split by TP
        return layers * (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim) * DTYPE_BYTES[precision.kv]
    s = LayerShape.of(model, shard.tp)
    return layers * 2 * s.kv_heads * s.head_dim * DTYPE_BYTES[precision.kv]


def activation_bytes(model: ModelCard, shard: Shard, precision: Precision, max_tokens: int,
                     max_seqs: int) -> float:
    """Peak live activations of one forward pass: the residual stream and norm output, the QKV and
    attention outputs, the gate/up output and its activation; plus fp32 logits of every sequence."""
    s = LayerShape.of(model, shard.tp)
    ab = DTYPE_BYTES[precision.activations]
    per_token = (3 * s.hidden + s.qkv_width + s.q_heads * s.head_dim + 3 * s.intermediate) * ab
    logits = max_seqs * (-(-model.vocab // shard.tp)) * 4.0 if shard.last_stage else 0.0
    return max_tokens * per_token + logits


def memory_plan(model: ModelCard, shard: Shard, precision: Precision, gpu: Gpu, *,
                gpu_memory_utilization: float = 0.9, reserved_bytes: float = 1.5 * GiB,
                max_tokens: int = 8192, max_seqs: int = 256) -> MemoryPlan:
    usable = gpu.hbm_bytes * gpu_memory_utilization
    weights = weights_bytes(model, shard, precision)
    act = activation_bytes(model, shard, precision, max_tokens, max_seqs)
    return MemoryPlan(hbm_bytes=gpu.hbm_bytes, usable_bytes=usable, weights_bytes=weights,
                      activation_bytes=act, reserved_bytes=reserved_bytes,
                      kv_bytes_per_token=kv_bytes_per_token(model, shard, precision),
                      kv_capacity_bytes=usable - weights - act - reserved_bytes)
