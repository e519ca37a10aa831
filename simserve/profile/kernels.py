"""The kernels a serving engine runs in a Llama layer, written in PyTorch: fused elementwise
(torch.compile fuses them, as vLLM's custom ops / torch.compile do), fp8 activation quantisation,
and split-KV decode attention (FlashDecoding)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from simserve.cost.op_tables import split_kv
from simserve.profile.timing import BF16, DEV, FP8, FP8_MAX


def activation(m: int, k: int, data: str = "random"):
    """A GEMM input: N(0, 1) values ('random', 'activations') or zeros."""
    if data == "zeros":
        return torch.zeros(m, k, device=DEV, dtype=BF16)
    return torch.randn(m, k, device=DEV, dtype=BF16)


def rms_norm(x, w, eps=1e-5):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def add_rms_norm(x, res, w, eps=1e-5):
    """Residual add then RMSNorm; returns (normed, new residual) as vLLM's fused kernel does."""
    s = x + res
    sf = s.float()
    return (sf * torch.rsqrt(sf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w, s


def rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def silu_mul(gu):
    g, u = gu.chunk(2, dim=-1)
    return F.silu(g) * u


def quantize_fp8_compiled(x):
    """Per-tensor fp8 quantisation as one torch.compile'd function: the first H100 profile's
    (2026-11-25) implementation. With dynamic shapes Inductor's abs-amax reduction runs at about
    6% of HBM bandwidth on an H200 (breakdown.csv), far slower than a serving engine's kernel."""
    scale = (x.abs().amax().float() / FP8_MAX).clamp(min=1e-12)
    return (x.float() / scale).to(FP8), scale


def _scale_and_cast(x, amax):
    scale = (amax / FP8_MAX).clamp(min=1e-12)
    return (x.float() / scale).to(FP8), scale


def quantize_fp8(x):
    """Dynamic per-tensor fp8 (e4m3) quantisation as vLLM's scaled_fp8_quant does it: one
    bandwidth-bound pass for max |x| (a single-kernel inf-norm reduction), one fused pass that
    reads x again and writes the fp8 copy."""
    amax = torch.linalg.vector_norm(x, float("inf"), dtype=torch.float32)
    return _scale_and_cast(x, amax)


FUSED = True
try:
    rms_norm = torch.compile(rms_norm, dynamic=True)
    add_rms_norm = torch.compile(add_rms_norm, dynamic=True)
    rope = torch.compile(rope, dynamic=True)
    silu_mul = torch.compile(silu_mul, dynamic=True)
    quantize_fp8_compiled = torch.compile(quantize_fp8_compiled, dynamic=True)
    _scale_and_cast = torch.compile(_scale_and_cast, dynamic=True)
except Exception as exc:  # noqa: BLE001 - fall back to eager, and say so in meta.json
    print("torch.compile unavailable, eager elementwise:", exc)
    FUSED = False


def kv_splits(batch: int, nkv: int, ctx: int, sms: int | None = None) -> int:
    """Split-KV factor of FlashDecoding: enough (sequence, head, split) blocks for two waves of
    SMs, each split at least 256 tokens long, a power of two that divides the context. Only used
    when (sequence, head) pairs fill under a quarter of the SMs: above that, the first H100 run
    showed the unsplit kernel faster (the merge costs more than the parallelism gains)."""
    sms = sms or torch.cuda.get_device_properties(0).multi_processor_count
    splits = 1
    if not split_kv(batch, nkv, sms):   # the rule cost.op_tables reads the table by
        return splits
    while batch * nkv * splits < 2 * sms and ctx // (splits * 2) >= 256 and ctx % (splits * 2) == 0:
        splits *= 2
    return splits


def kv_cache(batch, nkv, ctx, d):
    """KV cache laid out [batch * splits, kv heads, ctx / splits, d]: each split is contiguous,
    as pages of a paged cache are, so the split-KV kernel reads it without a copy."""
    s = kv_splits(batch, nkv, ctx)
    shape = (batch * s, nkv, ctx // s, d)
    return torch.randn(shape, device=DEV, dtype=BF16), torch.randn(shape, device=DEV, dtype=BF16)


def decode_attention(q, kc, vc):
    """FlashDecoding: q [B, nq, d]; caches from kv_cache(). The query heads of one KV group are
    packed as the query length (GQA packing), the context is split across thread blocks and the
    partial results are merged by their log-sum-exp, as FlashInfer and FlashAttention's split-KV
    decode kernels do."""
    b, nq, d = q.shape
    splits, nkv = kc.shape[0] // b, kc.shape[1]
    g = nq // nkv
    if splits == 1:  # PyTorch's SDPA dispatcher: faster than the raw flash op here (measured)
        return F.scaled_dot_product_attention(q.view(b, nkv, g, d), kc, vc).reshape(b, nq * d)
    qg = q.view(b, 1, nkv, g, d).expand(b, splits, nkv, g, d).reshape(b * splits, nkv, g, d)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention(qg, kc, vc)[:2]
    w = torch.softmax(lse.view(b, splits, nkv, g), dim=1).unsqueeze(-1).to(out.dtype)
    return (out.view(b, splits, nkv, g, d) * w).sum(1).reshape(b, nq * d)
