"""Kernel timing as a serving engine sees it: CUDA/HIP graph replay, L2-rotated operands."""
from __future__ import annotations

import torch

DEV = "cuda"
BF16 = torch.bfloat16


def _fp8_dtype():
    """e4m3 as the GPU's tensor cores take it (ROCm MI300 uses the 'fnuz' variant)."""
    if torch.version.hip and "gfx94" in torch.cuda.get_device_properties(0).gcnArchName:
        return torch.float8_e4m3fnuz
    return torch.float8_e4m3fn


FP8 = _fp8_dtype() if torch.cuda.is_available() else torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)


def l2_bytes() -> int:
    props = torch.cuda.get_device_properties(0)
    return int(getattr(props, "L2_cache_size", 50 * 2**20) or 50 * 2**20)


def rotate_bytes() -> int:
    """Working set that rotation spreads operands over: 10x the L2, at least 512 MiB."""
    return max(512 * 2**20, 10 * l2_bytes())


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
    return max(1, min(16, -(-rotate_bytes() // max(nbytes, 1))))


class Rotor:
    """Cycles through several copies of a tensor set so weights are re-read from HBM."""

    def __init__(self, make, nbytes):
        self.items = [make() for _ in range(copies_for(nbytes))]
        self.i = 0

    def next(self):
        self.i = (self.i + 1) % len(self.items)
        return self.items[self.i]


def gpu_state() -> dict:
    """SM clock (MHz) and board power (W) now, where NVML/amdsmi answers; empty otherwise."""
    out = {}
    for key, fn in (("sm_clock_mhz", "clock_rate"), ("power_w", "power_draw")):
        try:
            value = getattr(torch.cuda, fn)()
            out[key] = round(value / 1000.0, 1) if key == "power_w" else value
        except Exception:  # noqa: BLE001 - telemetry is optional
            pass
    return out
