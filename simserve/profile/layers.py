"""The held-out layer tables: whole Llama decoder layers (one tensor-parallel shard, no
all-reduce) as a serving engine runs them, and a per-kernel breakdown of a few of them."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from simserve.profile import kernels as K
from simserve.profile.timing import BF16, DEV, FP8, gpu_state, rotate_bytes, timed_graph

MODELS = {
    # name: hidden, intermediate, heads, kv heads, head dim  (Llama 3.1 model cards)
    "llama-3.1-8b": (4096, 14336, 32, 8, 128),
    "llama-3.1-70b": (8192, 28672, 64, 8, 128),
}
CONFIGS = (("llama-3.1-8b", 1), ("llama-3.1-70b", 1), ("llama-3.1-70b", 4), ("llama-3.1-70b", 8))
PREFILLS = [(1, s) for s in (128, 256, 512, 1024, 2048, 4096, 8192)] + [(4, 1024), (16, 512)]


class Layer:
    """One Llama decoder layer's weights for a tensor-parallel shard (no all-reduce: compute only).
    fp8=True: W8A8 linear layers (fp8 weights, activations quantised per tensor on the fly,
    torch._scaled_mm), attention and norms in bf16: vLLM's fp8 checkpoint path on Hopper."""

    ONE = None

    def __init__(self, h, inter, nq, nkv, d, fp8=False, quantize=None):
        self.h, self.nq, self.nkv, self.d, self.inter, self.fp8 = h, nq, nkv, d, inter, fp8
        self.quantize = quantize or K.quantize_fp8
        self.wqkv = self._weight(h, (nq + 2 * nkv) * d)
        self.wo = self._weight(nq * d, h)
        self.wgu = self._weight(h, 2 * inter)
        self.wd = self._weight(inter, h)
        self.n1 = torch.ones(h, device=DEV, dtype=BF16)
        self.n2 = torch.ones(h, device=DEV, dtype=BF16)

    def _weight(self, k, n):
        if self.fp8:   # _scaled_mm wants the weight column-major
            return (torch.randn(n, k, device=DEV) * 0.02).to(FP8).t()
        return torch.randn(k, n, device=DEV, dtype=BF16) * 0.02

    def linear(self, x, w):
        if not self.fp8:
            return x @ w
        if Layer.ONE is None:
            Layer.ONE = torch.ones((), device=DEV)
        xq, scale = self.quantize(x)
        return torch._scaled_mm(xq, w, scale_a=scale, scale_b=Layer.ONE, out_dtype=BF16)

    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in (self.wqkv, self.wo, self.wgu, self.wd))

    def mlp(self, x):
        h = K.rms_norm(x, self.n2)
        return x + self.linear(K.silu_mul(self.linear(h, self.wgu)), self.wd)

    def qkv(self, x):
        h = K.rms_norm(x, self.n1)
        return self.linear(h, self.wqkv).split([self.nq * self.d, self.nkv * self.d, self.nkv * self.d], -1)

    def prefill(self, x, batch, seq, cos, sin):
        t = x.shape[0]
        q, k, v = self.qkv(x)
        q = K.rope(q.view(batch, seq, self.nq, self.d), cos, sin).transpose(1, 2)
        k = K.rope(k.view(batch, seq, self.nkv, self.d), cos, sin).transpose(1, 2)
        v = v.view(batch, seq, self.nkv, self.d).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.linear(a.transpose(1, 2).reshape(t, self.nq * self.d).contiguous(), self.wo)
        return self.mlp(x)

    def decode(self, x, kc, vc, cos, sin):
        b = x.shape[0]
        q, k, v = self.qkv(x)
        q = K.rope(q.view(b, self.nq, self.d), cos, sin)
        k = K.rope(k.view(b, self.nkv, self.d), cos, sin)
        last = kc.shape[0] // b - 1  # this step's key/value go to the last slot of each last split
        kc[last::last + 1, :, -1] = k
        vc[last::last + 1, :, -1] = v.view(b, self.nkv, self.d)
        x = x + self.linear(K.decode_attention(q, kc, vc), self.wo)
        return self.mlp(x)


def shard_of(name, tp, d=128):
    h, inter, nq, nkv, _ = MODELS[name]
    return (h, inter // tp, nq // tp, max(nkv // tp, 1), d)


def layer_stack(shard, fp8, quantize=None):
    probe = Layer(*shard, fp8=fp8, quantize=quantize)
    nlayers = max(2, min(8, -(-rotate_bytes() // probe.nbytes())))
    return [probe] + [Layer(*shard, fp8=fp8, quantize=quantize) for _ in range(nlayers - 1)]


def prefill_inputs(batch, seq, h, d):
    x = torch.randn(batch * seq, h, device=DEV, dtype=BF16)
    cos = torch.randn(1, seq, 1, d // 2, device=DEV, dtype=BF16)
    return x, cos, torch.randn_like(cos)


def layer_rows(writer, fp8=False, quantize=None):
    for name, tp in CONFIGS:
        shard = shard_of(name, tp)
        h, d, nkv = shard[0], shard[4], shard[3]
        layers = layer_stack(shard, fp8, quantize)
        for batch, seq in PREFILLS:   # replayed from a CUDA graph: kernel time, not Python launch time
            x, cos, sin = prefill_inputs(batch, seq, h, d)

            def run_prefill():
                y = x
                for layer in layers:
                    y = layer.prefill(y, batch, seq, cos, sin)
                return y

            us = timed_graph(run_prefill, reps=2) / len(layers)
            writer.writerow(dict(model=name, tp=tp, phase="prefill", batch=batch, seq=seq, ctx=seq,
                                 time_us=round(us, 3)))
        torch.cuda.empty_cache()
        for batch in (1, 4, 16, 64, 256):
            for ctx in (1024, 2048, 4096, 8192):
                if 2 * batch * nkv * ctx * d * 2 * len(layers) > 40e9:
                    continue
                caches = [K.kv_cache(batch, nkv, ctx, d) for _ in layers]
                x = torch.randn(batch, h, device=DEV, dtype=BF16)
                cos = torch.randn(batch, 1, d // 2, device=DEV, dtype=BF16)
                sin = torch.randn_like(cos)

                def run_decode():
                    y = x
                    for layer, (kc, vc) in zip(layers, caches):
                        y = layer.decode(y, kc, vc, cos, sin)
                    return y

                us = timed_graph(run_decode, reps=3) / len(layers)
                writer.writerow(dict(model=name, tp=tp, phase="decode", batch=batch, seq=1, ctx=ctx,
                                     time_us=round(us, 3)))
                del caches
                torch.cuda.empty_cache()
        del layers
        torch.cuda.empty_cache()


def _kernel_times(prof) -> dict[str, tuple[int, float]]:
    """{kernel name: (launches, summed microseconds)} of the GPU kernels a profile recorded."""
    out: dict[str, tuple[int, float]] = {}
    for e in prof.events():
        if "CUDA" not in str(getattr(e, "device_type", "")) and "HIP" not in str(getattr(e, "device_type", "")):
            continue
        n, t = out.get(e.name, (0, 0.0))
        out[e.name] = (n + 1, t + (e.time_range.end - e.time_range.start))
    return out


def breakdown_rows(writer):
    """Per-kernel times of prefill layers (bf16 and fp8) under the PyTorch profiler, beside the
    same GEMMs run alone: shows where an fp8 layer's time goes that gemm.csv does not see."""
    from torch.profiler import ProfilerActivity, profile
    from simserve.profile.optables import _gemm_fn
    reps = 3
    for name, tp in (("llama-3.1-8b", 1), ("llama-3.1-70b", 8)):
        shard = shard_of(name, tp)
        h, d = shard[0], shard[4]
        for dtype in ("bf16", "fp8"):
            layers = layer_stack(shard, dtype == "fp8")
            for batch, seq in ((1, 1024), (1, 8192)):
                x, cos, sin = prefill_inputs(batch, seq, h, d)
                for layer in layers:
                    layer.prefill(x, batch, seq, cos, sin)
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(reps):
                        for layer in layers:
                            layer.prefill(x, batch, seq, cos, sin)
                    torch.cuda.synchronize()
                state = gpu_state()
                case = f"{name}/tp{tp}/prefill{batch}x{seq}"
                for kernel, (n, us) in sorted(_kernel_times(prof).items(), key=lambda kv: -kv[1][1]):
                    per = reps * len(layers)
                    writer.writerow(dict(case=case, dtype=dtype, context="layer", op="", kernel=kernel[:160],
                                         calls=round(n / per, 2), time_us=round(us / per, 3), **state))
                gemms = (("qkv", h, (shard[2] + 2 * shard[3]) * d), ("o", shard[2] * d, h),
                         ("gate_up", h, 2 * shard[1]), ("down", shard[1], h))
                for data in ("random", "activations"):
                    for op, k, n in gemms:
                        rot, fn = _gemm_fn(dtype, batch * seq, k, n, data)
                        for _ in range(3):
                            fn()
                        torch.cuda.synchronize()
                        with profile(activities=[ProfilerActivity.CUDA]) as prof:
                            for _ in range(reps):
                                fn()
                            torch.cuda.synchronize()
                        for kernel, (c, us) in _kernel_times(prof).items():
                            writer.writerow(dict(case=case, dtype=dtype, context=f"isolated_{data}", op=op,
                                                 kernel=kernel[:160], calls=round(c / reps, 2),
                                                 time_us=round(us / reps, 3), **gpu_state()))
                        del rot, fn
            del layers
            torch.cuda.empty_cache()
