"""The operators of a dense decoder block and of the model's head, with FLOPs and bytes.

FLOPs count a multiply-add as 2. Bytes are HBM traffic of the kernel as a serving engine runs it:
weights read once per step, activations read and written once, the KV cache read once per
attention call (flash attention keeps scores on chip). Attention FLOPs: QK^T and PV are each
2 * head_dim FLOPs per (query, key) pair per head; a causal prefill chunk of c new tokens after p
cached ones has c * p + c * (c + 1) / 2 such pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from simserve.catalog import DTYPE_BYTES, ModelCard


@dataclass(frozen=True)
class Precision:
    weights: str = "bf16"
    kv: str = "bf16"
    activations: str = "bf16"
    activation_scale: str = "dynamic"   # fp8/fp4 GEMM inputs: dynamic (computed per step) or static (calibrated)
    fused_quant: bool = False           # the runtime fuses quantisation into the producing kernel

    @property
    def gemm_dtype(self) -> str:
        """fp8 weights run W8A8 GEMMs (activations quantised on the fly, as vLLM's fp8 path does);
        fp4 weights run at the GPU's fp4 rate where it has one (Gpu.flops falls back otherwise)."""
        return self.weights if self.weights in ("fp8", "fp4") else self.activations


@dataclass(frozen=True)
class Shard:
    """The part of the model one GPU holds: tensor-parallel degree and the layers of its stage."""
    tp: int = 1
    num_layers: int | None = None   # layers on this pipeline stage (None: all)
    first_stage: bool = True        # holds the embedding
    last_stage: bool = True         # holds the final norm and LM head


@dataclass(frozen=True)
class BatchStats:
    """What one iteration computes, aggregated over its sequences (all the cost model needs).

    prefill_tokens: new tokens of prefill chunks; decode_tokens: sequences decoding one token;
    prefill_attn_pairs: sum over chunks of c * (p + (c + 1) / 2), causal (query, key) pairs;
    prefill_kv_tokens: sum over chunks of p + c, the KV tokens a chunk's attention reads;
    decode_kv_tokens: sum over decoding sequences of their context including the new token;
    logits_tokens: sequences that sample a token this iteration (decodes + finishing prefills).
    """
    prefill_tokens: int = 0
    decode_tokens: int = 0
    prefill_attn_pairs: float = 0.0
    prefill_kv_tokens: float = 0.0
    decode_kv_tokens: float = 0.0
    logits_tokens: int = 0

    def __init__(self, prefill_tokens: int = 0, decode_tokens: int = 0, prefill_attn_pairs: float = 0.0,
                 prefill_kv_tokens: float = 0.0, decode_kv_tokens: float = 0.0, logits_tokens: int = 0):
        # the frozen dataclass's generated __init__ sets each field through object.__setattr__
        # (~2 us); one is built per iteration, so the fields go into the instance dict at once
        # (the same fields and defaults: tests/test_cost.py holds them equal)
        d = self.__dict__
        d["prefill_tokens"], d["decode_tokens"] = prefill_tokens, decode_tokens
        d["prefill_attn_pairs"], d["prefill_kv_tokens"] = prefill_attn_pairs, prefill_kv_tokens
        d["decode_kv_tokens"], d["logits_tokens"] = decode_kv_tokens, logits_tokens

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens

    @staticmethod
    def of(prefill_chunks=(), decode_contexts=(), logits_tokens: int | None = None) -> "BatchStats":
        """From (chunk_tokens, cached_tokens) pairs and decode contexts (the new token included)."""
        pairs = sum(c * (p + (c + 1) / 2) for c, p in prefill_chunks)
        return BatchStats(
            prefill_tokens=sum(c for c, _ in prefill_chunks),
            decode_tokens=len(decode_contexts),
            prefill_attn_pairs=float(pairs),
            prefill_kv_tokens=float(sum(c + p for c, p in prefill_chunks)),
            decode_kv_tokens=float(sum(decode_contexts)),
            logits_tokens=len(prefill_chunks) + len(decode_contexts) if logits_tokens is None else logits_tokens,
        )


FEATURES = ("const", "tokens", "prefill_tokens", "decode_tokens", "prefill_attn_pairs",
            "prefill_kv_tokens", "decode_kv_tokens", "logits_tokens")


def features(batch: BatchStats) -> dict[str, float]:
    return {"const": 1.0, "tokens": float(batch.tokens), "prefill_tokens": float(batch.prefill_tokens),
            "decode_tokens": float(batch.decode_tokens), "prefill_attn_pairs": batch.prefill_attn_pairs,
            "prefill_kv_tokens": batch.prefill_kv_tokens, "decode_kv_tokens": batch.decode_kv_tokens,
            "logits_tokens": float(batch.logits_tokens)}


@dataclass(frozen=True)
class Op:
    name: str
    kind: str          # gemm | attention_prefill | attention_decode | elementwise | embedding
    flops: float
    bytes: float
    dtype: str         # compute dtype (for the peak FLOP/s)
    kernels: int = 1   # kernel launches (each pays the fixed overhead)
    shape: tuple[int, ...] | None = None   # see OpModel.shape
    # the operator model and feature vector (FEATURES order) it was evaluated at: a GPU with
    # measured operator tables (cost.op_tables) corrects its time from them
    model: "OpModel | None" = field(default=None, compare=False, repr=False)
    x: tuple[float, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class OpModel:
    """An operator whose FLOPs and bytes are linear in the batch features (FEATURES).

    It runs only when its `gate` feature is positive (no decode tokens: no decode attention).
    Being linear, one OpModel serves both a single iteration and, as a matrix, a whole run of
    decode steps at once (cost.step.StepCost).
    """
    name: str
    kind: str
    dtype: str
    gate: str
    flops: dict[str, float]
    bytes: dict[str, float]
    kernels: int = 1
    # weight GEMM: (K, N) (cost.gemm_table); GQA attention: (query heads, KV heads, head dim);
    # elementwise: the width of each call (cost.op_tables); None: no measured lookup
    shape: tuple[int, ...] | None = None

    def at(self, feats: dict[str, float]) -> Op | None:
        if feats[self.gate] <= 0:
            return None
        return Op(self.name, self.kind,
                  flops=sum(c * feats[f] for f, c in self.flops.items()),
                  bytes=sum(c * feats[f] for f, c in self.bytes.items()),
                  dtype=self.dtype, kernels=self.kernels, shape=self.shape,
                  model=self, x=tuple(feats[f] for f in FEATURES))


@dataclass(frozen=True)
class LayerShape:
    """Per-GPU widths of one decoder layer under tensor parallelism."""
    hidden: int
    q_heads: int
    kv_heads: int
    head_dim: int
    intermediate: int

    @staticmethod
    def of(model: ModelCard, tp: int) -> "LayerShape":
        # KV heads are split across TP ranks; when tp exceeds them each rank keeps a replica of one
        # (vLLM replicates KV heads in that case), so the cache per GPU never drops below one head.
        return LayerShape(hidden=model.hidden, q_heads=model.num_heads // tp,
                          kv_heads=max(1, model.num_kv_heads // tp), head_dim=model.head_dim,
                          intermediate=model.intermediate // tp)

    @property
    def qkv_width(self) -> int:
        return (self.q_heads + 2 * self.kv_heads) * self.head_dim

    def gemms(self) -> list[tuple[str, int, int]]:
        """(name, K, N) of the layer's weight GEMMs, y[T, N] = x[T, K] @ W[K, N]."""
        h = self.hidden
        return [("qkv_proj", h, self.qkv_width), ("o_proj", self.q_heads * self.head_dim, h),
                ("gate_up_proj", h, 2 * self.intermediate), ("down_proj", self.intermediate, h)]


def gemm_model(name: str, k: int, n: int, precision: Precision, tokens: str = "tokens") -> OpModel:
    """y[T, N] = x[T, K] @ W[K, N]: 2TKN FLOPs; weights read once, activations in and out."""
    wb = DTYPE_BYTES[precision.weights]
    ab = DTYPE_BYTES[precision.activations]
    return OpModel(name, "gemm", precision.gemm_dtype, gate=tokens, flops={tokens: 2.0 * k * n},
                   bytes={"const": k * n * wb, tokens: (k + n) * ab}, shape=(k, n))


def quant_per_token(input_widths: list[int], precision: Precision) -> tuple[float, float, int]:
    """(FLOPs per token, HBM bytes per token, kernels) of quantising the inputs of W8A8 / W4A8
    GEMMs of these input widths; (0, 0, 0) for bf16 GEMMs or when the runtime fuses quantisation.

    - dynamic scale, separate kernels (vLLM's scaled_fp8_quant): one pass for the absolute maximum,
      one that reads the input again and writes the low-precision copy: two kernels per input;
    - static scale (calibrated, stored in the checkpoint), separate kernel: one pass that reads the
      input and writes the low-precision copy;
    - fused (vLLM's RMSNorm + quant and SiLU-and-mul + quant fusions, TensorRT-LLM's fused norm and
      activation kernels): the producing kernel writes the low-precision copy itself, so no extra
      kernel and no extra pass (its write is smaller, which this model does not credit).
    """
    if precision.gemm_dtype == precision.activations or not input_widths or precision.fused_quant:
        return 0.0, 0.0, 0
    inputs = float(sum(input_widths))
    ab, qb = DTYPE_BYTES[precision.activations], DTYPE_BYTES[precision.gemm_dtype]
    if precision.activation_scale == "static":
        return 2.0 * inputs, inputs * (ab + qb), len(input_widths)
    return 3.0 * inputs, inputs * (2 * ab + qb), 2 * len(input_widths)


def activation_quant_models(input_widths: list[int], precision: Precision, prefix: str = "") -> list[OpModel]:
    """The quantisation of GEMM inputs as one elementwise operator (see quant_per_token)."""
    flops, nbytes, kernels = quant_per_token(input_widths, precision)
    if not kernels:
        return []
    return [OpModel(f"{prefix}quantize_activations", "elementwise", "fp32", gate="tokens",
                    flops={"tokens": flops}, bytes={"tokens": nbytes}, kernels=kernels,
                    shape=tuple(input_widths))]


def attention_op_models(model: ModelCard, shard: Shard, precision: Precision) -> list[OpModel]:
    """The attention half of a decoder layer on one GPU: QKV and output projections, GQA
    attention for prefill chunks and decodes, fused norms, rotary embedding and the cache write."""
    s = LayerShape.of(model, shard.tp)
    ab = DTYPE_BYTES[precision.activations]
    kv_bytes_per_token = 2 * s.kv_heads * s.head_dim * DTYPE_BYTES[precision.kv]
    qo_bytes_per_token = 2 * s.q_heads * s.head_dim * ab
    attn_flops_per_pair = 4.0 * s.q_heads * s.head_dim
    h, qk_width = s.hidden, (s.q_heads + s.kv_heads) * s.head_dim
    projections = [("qkv_proj", h, s.qkv_width), ("o_proj", s.q_heads * s.head_dim, h)]
    ops = [gemm_model(name, k, n, precision) for name, k, n in projections]
    ops += [
        OpModel("attention_prefill", "attention_prefill", precision.activations, gate="prefill_tokens",
                flops={"prefill_attn_pairs": attn_flops_per_pair},
                bytes={"prefill_kv_tokens": kv_bytes_per_token, "prefill_tokens": qo_bytes_per_token}),
        OpModel("attention_decode", "attention_decode", precision.activations, gate="decode_tokens",
                flops={"decode_kv_tokens": attn_flops_per_pair},
                bytes={"decode_kv_tokens": kv_bytes_per_token, "decode_tokens": qo_bytes_per_token},
                shape=(s.q_heads, s.kv_heads, s.head_dim)),
        # fused residual-add + RMSNorm, twice a layer: read x and residual, write both
        OpModel("norms", "elementwise", "fp32", gate="tokens", flops={"tokens": 10.0 * h},
                bytes={"tokens": 8.0 * h * ab}, kernels=2, shape=(h, h)),
        # rotary embedding of q and k, and this step's k, v written into the paged cache
        OpModel("rope_kv_write", "elementwise", "fp32", gate="tokens", flops={"tokens": 6.0 * qk_width},
                bytes={"tokens": 2.0 * qk_width * ab + kv_bytes_per_token}, kernels=2),
    ]
    return ops + activation_quant_models([k for _, k, _ in projections], precision, "attention_")


def mla_op_models(model: ModelCard, tp: int, precision: Precision) -> list[OpModel]:
    """DeepSeek-V3 multi-head latent attention on one GPU of a TP group (vLLM's MLA backend).
    The latent projections (q_a, kv_a) are replicated; q_b, kv_b, o are split by heads. Prefill
    attends over decompressed keys and values (qk_nope + rope per key, v); decode absorbs kv_b into
    the query and output, attending over the latent (kv_lora + rope) read from the cache. The
    cache holds kv_lora_rank + qk_rope_head_dim values per token and layer on every TP rank."""
    mla, h = model.mla, model.hidden
    heads = model.num_heads // tp
    qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    latent = mla.kv_lora_rank + mla.qk_rope_head_dim
    ab, kvb = DTYPE_BYTES[precision.activations], DTYPE_BYTES[precision.kv]
    ops = [gemm_model("q_a_proj", h, mla.q_lora_rank, precision),
           gemm_model("q_b_proj", mla.q_lora_rank, heads * qk, precision),
           gemm_model("kv_a_proj", h, latent, precision),
           gemm_model("kv_b_proj", mla.kv_lora_rank, heads * (mla.qk_nope_head_dim + mla.v_head_dim), precision),
           gemm_model("o_proj", heads * mla.v_head_dim, h, precision)]
    ops += [
        OpModel("attention_prefill", "attention_prefill", precision.activations, gate="prefill_tokens",
                flops={"prefill_attn_pairs": 2.0 * heads * (qk + mla.v_head_dim)},
                bytes={"prefill_kv_tokens": latent * kvb + heads * (qk + mla.v_head_dim) * ab,
                       "prefill_tokens": heads * (qk + mla.v_head_dim) * ab}),
        OpModel("attention_decode", "attention_decode", precision.activations, gate="decode_tokens",
                flops={"decode_kv_tokens": 2.0 * heads * (latent + mla.kv_lora_rank)},
                bytes={"decode_kv_tokens": latent * kvb, "decode_tokens": heads * (latent + mla.kv_lora_rank) * ab}),
        OpModel("norms", "elementwise", "fp32", gate="tokens", flops={"tokens": 10.0 * h},
                bytes={"tokens": 8.0 * h * ab + 2.0 * (mla.q_lora_rank + mla.kv_lora_rank) * ab}, kernels=4),
        OpModel("rope_kv_write", "elementwise", "fp32", gate="tokens",
                flops={"tokens": 6.0 * (heads + 1) * mla.qk_rope_head_dim},
                bytes={"tokens": 2.0 * heads * qk * ab + latent * kvb}, kernels=2),
    ]
    return ops + activation_quant_models([h, mla.q_lora_rank, h, mla.kv_lora_rank, heads * mla.v_head_dim],
                                         precision, "attention_")


def ffn_op_models(hidden: int, width: int, precision: Precision, prefix: str = "") -> list[OpModel]:
    """A gated FFN of `width` on one GPU: gate/up and down projections, SiLU(gate) * up (reads 2
    x width, writes width), and the quantisation of both GEMM inputs for W8A8."""
    ab = DTYPE_BYTES[precision.activations]
    return [gemm_model(f"{prefix}gate_up_proj", hidden, 2 * width, precision),
            gemm_model(f"{prefix}down_proj", width, hidden, precision),
            OpModel(f"{prefix}silu_mul", "elementwise", "fp32", gate="tokens", flops={"tokens": 5.0 * width},
                    bytes={"tokens": 3.0 * width * ab}, shape=(width,))] + \
        activation_quant_models([hidden, width], precision, f"{prefix}ffn_")


def layer_op_models(model: ModelCard, shard: Shard, precision: Precision) -> list[OpModel]:
    """One dense decoder layer's operators on one GPU: attention (GQA, or latent attention when the
    card has `mla`), then the gated FFN."""
    attention = mla_op_models(model, shard.tp, precision) if model.mla is not None else \
        attention_op_models(model, shard, precision)
    return attention + ffn_op_models(model.hidden, model.intermediate // shard.tp, precision)


def head_op_models(model: ModelCard, shard: Shard, precision: Precision) -> list[OpModel]:
    """Embedding lookup (first stage); final norm and vocab-parallel LM head (last stage)."""
    ab = DTYPE_BYTES[precision.activations]
    h = model.hidden
    ops = []
    if shard.first_stage:
        ops.append(OpModel("embedding", "embedding", precision.activations, gate="tokens", flops={},
                           bytes={"tokens": 2.0 * h * ab}))
    if shard.last_stage:
        vocab_shard = -(-model.vocab // shard.tp)
        ops.append(OpModel("final_norm", "elementwise", "fp32", gate="logits_tokens",
                           flops={"logits_tokens": 5.0 * h}, bytes={"logits_tokens": 2.0 * h * ab}, shape=(h,)))
        # the LM head stays in the activation dtype (vLLM keeps lm_head unquantised); fp32 logits
        ops.append(OpModel("lm_head", "gemm", precision.activations, gate="logits_tokens",
                           flops={"logits_tokens": 2.0 * h * vocab_shard},
                           bytes={"const": h * vocab_shard * ab, "logits_tokens": h * ab + vocab_shard * 4.0},
                           shape=(h, vocab_shard)))
    return ops


def _evaluate(models: list[OpModel], batch: BatchStats) -> list[Op]:
    feats = features(batch)
    return [op for op in (m.at(feats) for m in models) if op is not None]


def layer_ops(model: ModelCard, shard: Shard, precision: Precision, batch: BatchStats) -> list[Op]:
    return _evaluate(layer_op_models(model, shard, precision), batch)


def head_ops(model: ModelCard, shard: Shard, precision: Precision, batch: BatchStats) -> list[Op]:
    return _evaluate(head_op_models(model, shard, precision), batch)
