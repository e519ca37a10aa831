"""Measure Llama-shaped operator and layer timings on a real GPU, as a serving engine runs them.

Why: simserve's roofline efficiency factors for the H100 are fitted to these numbers, and a test
checks that the cost model stays within 15% median error of the measured layer table. The GPU is
not available in CI, so the CSVs this script writes are committed under
``simserve/catalog/profiles/``.

How it measures (as vLLM runs a model):
- bf16 weights, activations and KV; fp8 (e4m3) GEMMs through ``torch._scaled_mm`` for the fp8 table.
- Decode steps and small per-operator timings are captured in a CUDA graph and replayed, so the
  figure is kernel time without Python launch overhead (vLLM replays CUDA graphs for decode).
- Prefill layers are replayed from CUDA graphs too (vLLM V1 captures piecewise graphs for
  prefill as well), so small prefills measure kernels, not Python dispatch.
- Norms, rotary embedding and SiLU-and-mul are fused by torch.compile, as vLLM fuses them.
- Weights and KV are rotated over several copies so that nothing is served from the 50 MB L2 that
  would not be in a real model whose layers each read their own weights.
- Attention uses PyTorch's flash-attention kernel; decode packs the query heads of a KV group
  into the query length (GQA packing) and splits the context across thread blocks (split-KV,
  FlashDecoding), as production decode kernels do, so each KV head is read once and small
  batches still fill the GPU.

Run: python experiments/profile_h100.py OUT_DIR [TABLE,...]   (about 2 minutes on an H100)
"""
from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

DEV = "cuda"
BF16 = torch.bfloat16
L2_BYTES = 50 * 2**20
ROTATE_BYTES = 512 * 2**20  # rotate buffers until the working set is 10x the L2

MODELS = {
    # name: hidden, intermediate, heads, kv heads, head dim  (Llama 3.1 model cards)
    "llama-3.1-8b": (4096, 14336, 32, 8, 128),
    "llama-3.1-70b": (8192, 28672, 64, 8, 128),
}


def timed_graph(fn, reps: int = 20, warmup: int = 3) -> float:
    """Median microseconds of one call of fn, replayed from a CUDA graph of `reps` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    g.replay()
    torch.cuda.synchronize()
    samples = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b) * 1e3 / reps)
    del g
    return sorted(samples)[len(samples) // 2]


def timed_eager(fn, reps: int = 10, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b) * 1e3)
    return sorted(samples)[len(samples) // 2]


def copies_for(nbytes: int) -> int:
    return max(1, min(16, -(-ROTATE_BYTES // max(nbytes, 1))))


class Rotor:
    """Cycles through several copies of a tensor set so weights are re-read from HBM."""

    def __init__(self, make, nbytes):
        self.items = [make() for _ in range(copies_for(nbytes))]
        self.i = 0

    def next(self):
        self.i = (self.i + 1) % len(self.items)
        return self.items[self.i]


def gemm_rows(writer):
    shapes = set()
    for name, (h, inter, nq, nkv, d) in MODELS.items():
        for tp in (1, 2, 4, 8):
            kv_shard = max(nkv // tp, 1)
            shapes.add(("qkv", h, (nq // tp + 2 * kv_shard) * d))
            shapes.add(("o", nq // tp * d, h))
            shapes.add(("gate_up", h, 2 * inter // tp))
            shapes.add(("down", inter // tp, h))
    ms = [1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
    for dtype in ("bf16", "fp8"):
        for op, k, n in sorted(shapes):
            wbytes = k * n * (2 if dtype == "bf16" else 1)
            if dtype == "bf16":
                rot = Rotor(lambda: torch.randn(k, n, device=DEV, dtype=BF16) * 0.02, wbytes)
            else:
                rot = Rotor(lambda: (torch.randn(n, k, device=DEV) * 0.02).to(torch.float8_e4m3fn).t(), wbytes)
            one = torch.ones((), device=DEV)
            for m in ms:
                if dtype == "bf16":
                    x = torch.randn(m, k, device=DEV, dtype=BF16)
                    fn = lambda: torch.matmul(x, rot.next())
                else:
                    x = torch.randn(m, k, device=DEV).to(torch.float8_e4m3fn)
                    fn = lambda: torch._scaled_mm(x, rot.next(), scale_a=one, scale_b=one, out_dtype=BF16)
                reps = max(len(rot.items), 8)
                try:
                    us = timed_graph(fn, reps=reps)
                except Exception as exc:  # noqa: BLE001 - record and continue the sweep
                    print("gemm failed", dtype, op, m, k, n, exc)
                    continue
                writer.writerow(dict(dtype=dtype, op=op, m=m, k=k, n=n, time_us=round(us, 3)))
            del rot
            torch.cuda.empty_cache()


def attn_prefill_rows(writer):
    d = 128
    for nq, nkv in ((32, 8), (64, 8), (8, 1), (16, 2)):
        for batch, seq in [(1, s) for s in (128, 256, 512, 1024, 2048, 4096, 8192)] + [(4, 1024), (16, 512)]:
            q = torch.randn(batch, nq, seq, d, device=DEV, dtype=BF16)
            k = torch.randn(batch, nkv, seq, d, device=DEV, dtype=BF16)
            v = torch.randn_like(k)
            fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            us = timed_eager(fn)
            writer.writerow(dict(batch=batch, seq=seq, nq=nq, nkv=nkv, d=d, time_us=round(us, 3)))


def kv_splits(batch: int, nkv: int, ctx: int, sms: int = 132) -> int:
    """Split-KV factor of FlashDecoding: enough (sequence, head, split) blocks for two waves of
    SMs, each split at least 256 tokens long, a power of two that divides the context. Only used
    when (sequence, head) pairs fill under a quarter of the SMs: above that, the first profile
    run showed the unsplit kernel faster (the merge costs more than the parallelism gains)."""
    splits = 1
    if batch * nkv > sms // 4:
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


def attn_decode_rows(writer):
    d = 128
    for nq, nkv in ((32, 8), (64, 8), (8, 1), (16, 2)):
        for batch in (1, 4, 16, 64, 256):
            for ctx in (1024, 2048, 4096, 8192):
                kvbytes = 2 * batch * nkv * ctx * d * 2
                rot = Rotor(lambda: kv_cache(batch, nkv, ctx, d), kvbytes)
                q = torch.randn(batch, nq, d, device=DEV, dtype=BF16)

                def fn():
                    kc, vc = rot.next()
                    return decode_attention(q, kc, vc)

                us = timed_graph(fn, reps=max(len(rot.items), 8))
                writer.writerow(dict(batch=batch, ctx=ctx, nq=nq, nkv=nkv, d=d,
                                     splits=kv_splits(batch, nkv, ctx), time_us=round(us, 3)))
                del rot
                torch.cuda.empty_cache()


def rms_norm(x, w, eps=1e-5):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def silu_mul(gu):
    g, u = gu.chunk(2, dim=-1)
    return F.silu(g) * u


# Serving engines run norms, rotary embedding and the gated activation as fused kernels (vLLM's
# custom ops, or torch.compile in vLLM V1). torch.compile fuses ours the same way, so the layer
# table measures a production-like kernel count, not PyTorch's unfused eager elementwise chain.
try:
    rms_norm = torch.compile(rms_norm, dynamic=True)
    rope = torch.compile(rope, dynamic=True)
    silu_mul = torch.compile(silu_mul, dynamic=True)
    FUSED = True
except Exception as exc:  # noqa: BLE001 - fall back to eager, and say so in meta.json
    print("torch.compile unavailable, eager elementwise:", exc)
    FUSED = False


def quantize_fp8(x):
    """Dynamic per-tensor fp8 (e4m3) quantisation of activations, as vLLM's fp8 linear layers do."""
    scale = (x.abs().amax().float() / 448.0).clamp(min=1e-12)
    return (x.float() / scale).to(torch.float8_e4m3fn), scale


try:
    quantize_fp8 = torch.compile(quantize_fp8, dynamic=True)
except Exception:  # noqa: BLE001 - eager fallback
    pass

ONE = None


class Layer:
    """One Llama decoder layer's weights for a tensor-parallel shard (no all-reduce: compute only).
    fp8=True: W8A8 linear layers (fp8 weights, activations quantised per tensor on the fly,
    torch._scaled_mm), attention and norms in bf16: vLLM's fp8 checkpoint path on Hopper."""

    def __init__(self, h, inter, nq, nkv, d, fp8=False):
        self.h, self.nq, self.nkv, self.d, self.inter, self.fp8 = h, nq, nkv, d, inter, fp8
        self.wqkv = self._weight(h, (nq + 2 * nkv) * d)
        self.wo = self._weight(nq * d, h)
        self.wgu = self._weight(h, 2 * inter)
        self.wd = self._weight(inter, h)
        self.n1 = torch.ones(h, device=DEV, dtype=BF16)
        self.n2 = torch.ones(h, device=DEV, dtype=BF16)

    def _weight(self, k, n):
        if self.fp8:   # _scaled_mm wants the weight column-major
            return (torch.randn(n, k, device=DEV) * 0.02).to(torch.float8_e4m3fn).t()
        return torch.randn(k, n, device=DEV, dtype=BF16) * 0.02

    def linear(self, x, w):
        if not self.fp8:
            return x @ w
        global ONE
        if ONE is None:
            ONE = torch.ones((), device=DEV)
        xq, scale = quantize_fp8(x)
        return torch._scaled_mm(xq, w, scale_a=scale, scale_b=ONE, out_dtype=BF16)

    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in (self.wqkv, self.wo, self.wgu, self.wd))

    def mlp(self, x):
        h = rms_norm(x, self.n2)
        return x + self.linear(silu_mul(self.linear(h, self.wgu)), self.wd)

    def prefill(self, x, batch, seq, cos, sin):
        t = x.shape[0]
        h = rms_norm(x, self.n1)
        q, k, v = self.linear(h, self.wqkv).split([self.nq * self.d, self.nkv * self.d, self.nkv * self.d], -1)
        q = rope(q.view(batch, seq, self.nq, self.d), cos, sin).transpose(1, 2)
        k = rope(k.view(batch, seq, self.nkv, self.d), cos, sin).transpose(1, 2)
        v = v.view(batch, seq, self.nkv, self.d).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.linear(a.transpose(1, 2).reshape(t, self.nq * self.d).contiguous(), self.wo)
        return self.mlp(x)

    def decode(self, x, kc, vc, cos, sin):
        b = x.shape[0]
        h = rms_norm(x, self.n1)
        q, k, v = self.linear(h, self.wqkv).split([self.nq * self.d, self.nkv * self.d, self.nkv * self.d], -1)
        q = rope(q.view(b, self.nq, self.d), cos, sin)
        k = rope(k.view(b, self.nkv, self.d), cos, sin)
        last = kc.shape[0] // b - 1  # this step's key/value go to the last slot of each last split
        kc[last::last + 1, :, -1] = k
        vc[last::last + 1, :, -1] = v.view(b, self.nkv, self.d)
        x = x + self.linear(decode_attention(q, kc, vc), self.wo)
        return self.mlp(x)


def layer_rows(writer, fp8=False):
    d = 128
    configs = [("llama-3.1-8b", 1), ("llama-3.1-70b", 1), ("llama-3.1-70b", 4), ("llama-3.1-70b", 8)]
    for name, tp in configs:
        h, inter, nq, nkv, _ = MODELS[name]
        shard = (h, inter // tp, nq // tp, max(nkv // tp, 1), d)
        probe = Layer(*shard, fp8=fp8)
        nlayers = max(2, min(8, -(-ROTATE_BYTES // probe.nbytes())))
        layers = [probe] + [Layer(*shard, fp8=fp8) for _ in range(nlayers - 1)]
        # prefill, replayed from a CUDA graph like decode: kernel time, not Python launch time
        for batch, seq in [(1, s) for s in (128, 256, 512, 1024, 2048, 4096, 8192)] + [(4, 1024), (16, 512)]:
            t = batch * seq
            x = torch.randn(t, h, device=DEV, dtype=BF16)
            cos = torch.randn(1, seq, 1, d // 2, device=DEV, dtype=BF16)
            sin = torch.randn_like(cos)

            def run_prefill():
                y = x
                for layer in layers:
                    y = layer.prefill(y, batch, seq, cos, sin)
                return y

            us = timed_graph(run_prefill, reps=2) / nlayers
            writer.writerow(dict(model=name, tp=tp, phase="prefill", batch=batch, seq=seq, ctx=seq,
                                 time_us=round(us, 3)))
        torch.cuda.empty_cache()
        # decode, CUDA graph
        for batch in (1, 4, 16, 64, 256):
            for ctx in (1024, 2048, 4096, 8192):
                kvbytes = 2 * batch * shard[3] * ctx * d * 2
                if kvbytes * nlayers > 40e9:
                    continue
                caches = [kv_cache(batch, shard[3], ctx, d) for _ in layers]
                x = torch.randn(batch, h, device=DEV, dtype=BF16)
                cos = torch.randn(batch, 1, d // 2, device=DEV, dtype=BF16)
                sin = torch.randn_like(cos)

                def run_decode():
                    y = x
                    for layer, (kc, vc) in zip(layers, caches):
                        y = layer.decode(y, kc, vc, cos, sin)
                    return y

                us = timed_graph(run_decode, reps=3) / nlayers
                writer.writerow(dict(model=name, tp=tp, phase="decode", batch=batch, seq=1, ctx=ctx,
                                     time_us=round(us, 3)))
                del caches
                torch.cuda.empty_cache()
        del layers, probe
        torch.cuda.empty_cache()


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    props = torch.cuda.get_device_properties(0)
    meta = dict(gpu=props.name, sms=props.multi_processor_count, torch=torch.__version__,
                cuda=torch.version.cuda, date=time.strftime("%Y-%m-%d"), fused_elementwise=FUSED)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(meta, flush=True)
    tables = [("layers", ["model", "tp", "phase", "batch", "seq", "ctx", "time_us"], layer_rows),
              ("layers_fp8", ["model", "tp", "phase", "batch", "seq", "ctx", "time_us"],
               lambda w: layer_rows(w, fp8=True)),
              ("attn_prefill", ["batch", "seq", "nq", "nkv", "d", "time_us"], attn_prefill_rows),
              ("attn_decode", ["batch", "ctx", "nq", "nkv", "d", "splits", "time_us"], attn_decode_rows),
              ("gemm", ["dtype", "op", "m", "k", "n", "time_us"], gemm_rows)]
    only = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else None
    for name, fields, fn in tables:
        if only and name not in only:
            continue
        t0 = time.time()
        with open(out / f"{name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            fn(w)
        print(f"{name}: {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "profile_out")
