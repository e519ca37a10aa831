"""Operator tables: GEMMs over the catalog models' shapes, flash attention (prefill and split-KV
decode), elementwise kernels and a plain stream (copy) over sizes. Each `*_rows(writer)` writes
one CSV's rows; all times are graph-replayed kernel time with operands rotated out of L2."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from simserve.profile.timing import BF16, DEV, FP8, FP8_MAX, Rotor, gpu_state, timed_graph
from simserve.profile import kernels as K

# (model, tensor-parallel degrees) whose per-GPU GEMM shapes the table covers: the two held-out
# layer models at every TP degree, plus wider and narrower catalog models, so the fit sees the
# N and K range the catalog uses (405B at tp 4/8, Mixtral-8x22B, Qwen3-30B-A3B and its experts).
SHAPE_MODELS = (("llama-3.1-8b", (1, 2, 4, 8)), ("llama-3.1-70b", (1, 2, 4, 8)),
                ("llama-3.1-405b", (8,)), ("mixtral-8x22b", (2, 8)), ("qwen3-30b-a3b", (1, 4)))
MS = (1, 4, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
SHORT = {"qkv_proj": "qkv", "o_proj": "o", "gate_up_proj": "gate_up", "down_proj": "down"}


def gemm_shapes() -> list[tuple[str, int, int]]:
    """(op, K, N) of every weight GEMM of SHAPE_MODELS' layers, and each MoE expert's FFN."""
    from simserve.catalog import get_model
    from simserve.cost.operators import LayerShape
    shapes: dict[tuple[int, int], str] = {}
    for name, tps in SHAPE_MODELS:
        model = get_model(name)
        for tp in tps:
            for op, k, n in LayerShape.of(model, tp).gemms():
                shapes.setdefault((k, n), SHORT[op])
            if model.moe is not None:
                w = model.moe.expert_intermediate // tp
                shapes.setdefault((model.hidden, 2 * w), "expert_gate_up")
                shapes.setdefault((w, model.hidden), "expert_down")
    return sorted((op, k, n) for (k, n), op in shapes.items())


def _gemm_fn(dtype, m, k, n, data="random"):
    """A callable running x[m, k] @ W[k, n] with W rotated; fp8 through torch._scaled_mm (W8A8)."""
    wbytes = k * n * (2 if dtype == "bf16" else 1)
    if dtype == "bf16":
        rot = Rotor(lambda: torch.randn(k, n, device=DEV, dtype=BF16) * 0.02, wbytes)
        x = K.activation(m, k, data)
        return rot, lambda: torch.matmul(x, rot.next())
    rot = Rotor(lambda: (torch.randn(n, k, device=DEV) * 0.02).to(FP8).t(), wbytes)
    one = torch.ones((), device=DEV)
    if data == "random":        # as the first H100 table: N(0, 1) cast to e4m3
        x, scale = torch.randn(m, k, device=DEV).to(FP8), one
    else:                       # quantised like a layer's input: per-tensor scale to the full range
        x, scale = K.quantize_fp8(K.activation(m, k, data))
    return rot, lambda: torch._scaled_mm(x, rot.next(), scale_a=scale, scale_b=one, out_dtype=BF16)


def gemm_rows(writer):
    for dtype in ("bf16", "fp8"):
        for op, k, n in gemm_shapes():
            for m in MS:
                try:
                    rot, fn = _gemm_fn(dtype, m, k, n)
                    us = timed_graph(fn, reps=max(len(rot.items), 8))
                except Exception as exc:  # noqa: BLE001 - record and continue the sweep
                    print("gemm failed", dtype, op, m, k, n, exc, flush=True)
                    continue
                writer.writerow(dict(dtype=dtype, op=op, m=m, k=k, n=n, time_us=round(us, 3)))
                del rot, fn
            torch.cuda.empty_cache()


def gemm_data_rows(writer):
    """The fp8-in-a-layer question: the same GEMM with N(0,1) operands (gemm.csv), with a layer's
    activations quantised to the full e4m3 range, with zeros; in short graph bursts (as gemm.csv)
    and sustained (100 back-to-back calls, as a long prefill keeps the tensor cores busy)."""
    shapes = (("gate_up", 4096, 28672), ("down", 14336, 4096), ("qkv", 8192, 1280), ("down", 3584, 8192))
    for dtype in ("bf16", "fp8"):
        for op, k, n in shapes:
            for m in (1024, 8192):
                for data in ("random", "activations", "zeros"):
                    rot, fn = _gemm_fn(dtype, m, k, n, data)
                    for mode, reps in (("burst", max(len(rot.items), 8)), ("sustained", 100)):
                        if mode == "sustained" and data == "zeros":
                            continue
                        us = timed_graph(fn, reps=reps)
                        writer.writerow(dict(dtype=dtype, op=op, m=m, k=k, n=n, data=data, mode=mode,
                                             time_us=round(us, 3), **gpu_state()))
                    del rot, fn
            torch.cuda.empty_cache()


HEADS = ((32, 8), (64, 8), (8, 1), (16, 2), (4, 1))


def attn_prefill_rows(writer):
    d = 128
    for nq, nkv in HEADS:
        for batch, seq in [(1, s) for s in (128, 256, 512, 1024, 2048, 4096, 8192)] + [(4, 1024), (16, 512)]:
            q = torch.randn(batch, nq, seq, d, device=DEV, dtype=BF16)
            k = torch.randn(batch, nkv, seq, d, device=DEV, dtype=BF16)
            v = torch.randn_like(k)
            fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            us = timed_graph(fn, reps=4)
            writer.writerow(dict(batch=batch, seq=seq, nq=nq, nkv=nkv, d=d, time_us=round(us, 3)))


def attn_decode_rows(writer):
    d = 128
    for nq, nkv in HEADS:
        for batch in (1, 4, 16, 64, 256):
            for ctx in (1024, 2048, 4096, 8192):
                kvbytes = 2 * batch * nkv * ctx * d * 2
                rot = Rotor(lambda: K.kv_cache(batch, nkv, ctx, d), kvbytes)
                q = torch.randn(batch, nq, d, device=DEV, dtype=BF16)

                def fn():
                    kc, vc = rot.next()
                    return K.decode_attention(q, kc, vc)

                us = timed_graph(fn, reps=max(len(rot.items), 8))
                writer.writerow(dict(batch=batch, ctx=ctx, nq=nq, nkv=nkv, d=d,
                                     splits=K.kv_splits(batch, nkv, ctx), time_us=round(us, 3)))
                del rot
                torch.cuda.empty_cache()


def _elementwise_cases(tokens, width):
    """(op, bytes moved, make) for the fused elementwise kernels a layer runs at this width."""
    x = lambda: torch.randn(tokens, width, device=DEV, dtype=BF16)
    w = torch.ones(width, device=DEV, dtype=BF16)
    e = tokens * width
    return [
        ("add_rms_norm", 8 * e, lambda: (x(), x()), lambda a: K.add_rms_norm(a[0], a[1], w)),
        ("silu_mul", 6 * e, lambda: torch.randn(tokens, 2 * width, device=DEV, dtype=BF16),
         lambda a: K.silu_mul(a)),
        ("quantize_fp8", 5 * e, x, lambda a: K.quantize_fp8(a)),
        ("quantize_fp8_compiled", 5 * e, x, lambda a: K.quantize_fp8_compiled(a)),
        ("copy", 4 * e, lambda: (x(), x()), lambda a: a[1].copy_(a[0])),
    ]


def elementwise_rows(writer):
    for width in (2048, 4096, 8192, 14336):
        for tokens in (1, 8, 64, 256, 1024, 4096, 16384):
            for op, nbytes, make, run in _elementwise_cases(tokens, width):
                rot = Rotor(make, nbytes)
                us = timed_graph(lambda: run(rot.next()), reps=max(len(rot.items), 8))
                writer.writerow(dict(op=op, tokens=tokens, width=width, bytes=nbytes, time_us=round(us, 3)))
                del rot
            torch.cuda.empty_cache()


def stream_rows(writer):
    """A copy of n bytes (reads n, writes n) from 64 KiB to 2 GiB: bandwidth against kernel size."""
    n = 64 * 2**10
    while n <= 2 * 2**30:
        rot = Rotor(lambda: (torch.empty(n, device=DEV, dtype=torch.uint8),
                             torch.empty(n, device=DEV, dtype=torch.uint8)), 2 * n)
        us = timed_graph(lambda: (lambda a: a[1].copy_(a[0]))(rot.next()), reps=max(len(rot.items), 8))
        writer.writerow(dict(bytes=2 * n, time_us=round(us, 3)))
        del rot
        torch.cuda.empty_cache()
        n *= 2


__all__ = ["gemm_rows", "gemm_data_rows", "attn_prefill_rows", "attn_decode_rows", "elementwise_rows",
           "stream_rows", "gemm_shapes", "FP8_MAX"]
