"""Measured operator tables as a correction on the fitted cost of attention and elementwise kernels.

Where a GPU's efficiency sets `measured_ops` (hardware.yaml: the profiled H100 and H200), two kinds
of operator take their time off the profile's operator tables (written by `simserve profile`),
not only off scalar efficiency factors:

- decode attention (attn_decode.csv, bf16 KV cache, per (query heads, KV heads, head dim)): a
  split-KV kernel's time depends on how many (sequence, head, split) blocks fill the SMs, so few
  sequences over long contexts run far below the bandwidth the scalar factor describes (8 query
  heads, 1 KV head, 16 sequences of 8k: 1.1 TB/s of the H200's 4.8; 256 sequences: 4.4 TB/s);
- elementwise kernels with a measured counterpart (elementwise.csv: add + RMSNorm, SiLU-and-mul,
  fp8 quantisation, per call over (tokens, width)): small calls are bound by their reduction or
  launch, not by HBM (one fp8 quantisation of 8 tokens x 14336 takes 15 us).

Each table is used as a correction factor r on the fitted scalar model S of the same operator
(roofline with the fitted efficiencies plus its fixed cost), r = measured / S at the table's points:
time = S x r. Between points r is interpolated; outside the table r is held at its edge, so beyond
the measured range the time follows the fitted model's shape (fixed cost at small sizes, bandwidth
at large ones) and stays continuous. The layer tables are never read here: they stay held out
(simserve.calibration).

Decode attention: r at each measured context is interpolated across measured sequence counts B
linearly in (log B, log r), among the counts that run the same kernel path as B (split-KV or not,
by the profiler's rule `split_kv`: the two paths differ in efficiency by up to 2x, so a count
between a split and an unsplit point takes the nearest point of its own path); across contexts it is piecewise linear in the mean context, with the
same IEEE operations for a float and for a numpy array, so cost.step's `time_of` and
`decode_times` agree bit for bit. Elementwise: the measured time is bilinear in (log tokens,
log width) of log time over the grid, scaled by the fitted model's ratio outside it.
"""
from __future__ import annotations

import bisect
import csv
import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from simserve.catalog import Gpu, resolve_profile
from simserve.cost.operators import FEATURES

# cost.operators elementwise operator (name suffix) -> (the elementwise.csv kernel measuring one
# call, kernels per call): the measured quantisation is the dynamic-scale two-pass one, so a
# static-scale quantisation (one kernel per input) keeps the fitted factors
ELEMENTWISE_KERNELS = {"norms": ("add_rms_norm", 1), "final_norm": ("add_rms_norm", 1),
                       "silu_mul": ("silu_mul", 1), "quantize_activations": ("quantize_fp8", 2)}
_DECODE_TOKENS, _DECODE_KV = FEATURES.index("decode_tokens"), FEATURES.index("decode_kv_tokens")


def split_kv(batch: float, kv_heads: int, sms: int) -> bool:
    """Whether the profiler's decode attention splits the context (profile.kernels.kv_splits):
    only when (sequence, KV head) pairs fill at most a quarter of the SMs."""
    return batch * kv_heads <= sms // 4


@lru_cache(maxsize=None)
def _read(folder: str, table: str) -> tuple[dict, ...]:
    path = Path(folder) / f"{table}.csv"
    if not path.is_file():
        return ()
    with open(path, newline="") as f:
        return tuple(csv.DictReader(f))


@lru_cache(maxsize=None)
def decode_grid(folder: str, nq: int, nkv: int, d: int) -> tuple[tuple[float, ...], tuple[float, ...], dict] | None:
    """(batches, contexts, {(batch, ctx): seconds}) of attn_decode.csv for these heads, or None
    where the table lacks them or is not a full grid."""
    rows = [r for r in _read(folder, "attn_decode")
            if (int(r["nq"]), int(r["nkv"]), int(r["d"])) == (nq, nkv, d)]
    times = {(float(r["batch"]), float(r["ctx"])): float(r["time_us"]) * 1e-6 for r in rows}
    batches, ctxs = sorted({b for b, _ in times}), sorted({c for _, c in times})
    if len(batches) < 2 or len(ctxs) < 2 or len(times) != len(batches) * len(ctxs):
        return None
    return tuple(batches), tuple(ctxs), times


@lru_cache(maxsize=None)
def elementwise_grid(folder: str, kernel: str) -> tuple[tuple[float, ...], tuple[float, ...], dict] | None:
    """(log tokens, log widths, {(log tokens, log width): log seconds}) of one elementwise.csv
    kernel, or None where the profile has no such full grid (the H100 profile has no table)."""
    rows = [r for r in _read(folder, "elementwise") if r["op"] == kernel]
    times = {(math.log(float(r["tokens"])), math.log(float(r["width"]))): math.log(float(r["time_us"]) * 1e-6)
             for r in rows}
    tokens, widths = sorted({t for t, _ in times}), sorted({w for _, w in times})
    if len(tokens) < 2 or len(widths) < 2 or len(times) != len(tokens) * len(widths):
        return None
    return tuple(tokens), tuple(widths), times


def _segment(xs, x: float) -> tuple[int, float]:
    """(i, t): x clamped to [xs[0], xs[-1]] lies t of the way from xs[i] to xs[i + 1]."""
    x = min(max(x, xs[0]), xs[-1])
    i = min(bisect.bisect_right(xs, x) - 1, len(xs) - 2)
    return i, (x - xs[i]) / (xs[i + 1] - xs[i])


def bilinear(xs, ys, values: dict, x: float, y: float) -> float:
    """values[(x, y)] on a full grid, bilinear at (x, y) clamped into the grid."""
    i, tx = _segment(xs, x)
    j, ty = _segment(ys, y)
    lo = values[(xs[i], ys[j])] * (1 - ty) + values[(xs[i], ys[j + 1])] * ty
    hi = values[(xs[i + 1], ys[j])] * (1 - ty) + values[(xs[i + 1], ys[j + 1])] * ty
    return lo * (1 - tx) + hi * tx


class DecodeAttentionRatio:
    """r(B, mean context) of a decode-attention operator; called on a feature vector whose
    decode_kv_tokens may be a numpy array (a run of decode steps)."""

    def __init__(self, grid, scalar, path=None):
        self.batches, self.ctxs, self.times = grid
        self.scalar = scalar            # (decode sequences, KV tokens) -> the fitted model's seconds
        self.path = path or (lambda b: True)   # sequence count -> its kernel path (split-KV or not)
        self.memo: dict[float, tuple] = {}

    def neighbours(self, b: float) -> tuple[float, float, float]:
        """(lo, hi, t): b lies t of the way from count lo to hi in log B, among the measured counts
        of b's own kernel path (all counts where none runs it); clamped at the ends."""
        same = [m for m in self.batches if self.path(m) == self.path(b)] or list(self.batches)
        if len(same) == 1:
            return same[0], same[0], 0.0
        i, t = _segment([math.log(m) for m in same], math.log(b))
        return same[i], same[i + 1], t

    def knots(self, b: float) -> tuple:
        """(contexts, r, slopes, the same as arrays) for b sequences: log r linear in log B between
        measured counts."""
        out = self.memo.get(b)
        if out is None:
            lo, hi, t = self.neighbours(b)
            r = [math.exp(math.log(self.times[(lo, c)] / self.scalar(lo, lo * c)) * (1 - t)
                          + math.log(self.times[(hi, c)] / self.scalar(hi, hi * c)) * t) for c in self.ctxs]
            slopes = [(r[k + 1] - r[k]) / (self.ctxs[k + 1] - self.ctxs[k]) for k in range(len(r) - 1)]
            # as arrays for a run of decode steps: each segment's (left context, slope, r) and
            # the inner knots, whose right bisection is min(bisect_right(xs, c) - 1, len - 2)
            knots_a = np.array([self.ctxs[:-1], slopes, r[:-1]])
            out = self.memo[b] = (self.ctxs, tuple(r), tuple(slopes), knots_a, np.array(self.ctxs[1:-1]))
        return out

    def __call__(self, x) -> float:
        b = x[_DECODE_TOKENS]
        xs, r, slopes, knots_a, inner_a = self.knots(b)
        c = x[_DECODE_KV] / b
        if isinstance(c, np.ndarray):
            return self._run(c, xs, r, slopes, knots_a, inner_a)
        c = min(max(c, xs[0]), xs[-1])
        j = min(bisect.bisect_right(xs, c) - 1, len(xs) - 2)
        return r[j] + slopes[j] * (c - xs[j])

    @staticmethod
    def _run(c: np.ndarray, xs, r, slopes, knots_a, inner_a):
        """The float branch's operations on each element of c, a run's non-decreasing mean
        contexts (an array of its own; cost.step's decode runs grow by a step's tokens): the
        clamps only where an end lies outside the knots, and where both ends share a segment
        (then every context between does) its knots as floats, no search; where every context
        clamps to one end, that end's r as a float (each element's value)."""
        first, last = float(c[0]), float(c[-1])
        if last <= xs[0] or first >= xs[-1]:
            edge = xs[0] if last <= xs[0] else xs[-1]
            j = min(bisect.bisect_right(xs, edge) - 1, len(xs) - 2)
            return r[j] + slopes[j] * (edge - xs[j])
        if first < xs[0]:
            np.maximum(c, xs[0], out=c)
            first = xs[0]
        if last > xs[-1]:
            np.minimum(c, xs[-1], out=c)
            last = xs[-1]
        j = min(bisect.bisect_right(xs, first) - 1, len(xs) - 2)
        if j == min(bisect.bisect_right(xs, last) - 1, len(xs) - 2):
            c -= xs[j]
            c *= slopes[j]
            c += r[j]
            return c
        j = inner_a.searchsorted(c, side="right")     # = min(bisect_right(xs, c) - 1, len - 2)
        xs_j, slopes_j, r_j = knots_a[:, j]           # one gather of the segments' knots
        c -= xs_j
        c *= slopes_j
        c += r_j                                      # r[j] + slope * (c - xs[j]): commutative
        return c


class ElementwiseRatio:
    """r(tokens) of an elementwise operator made of measured calls, one per width in its shape:
    sum over calls of the measured time (outside the grid: its edge time x the fitted model's
    ratio between the call and the edge) over the operator's fitted time."""
    context_free = True         # reads only its gate (tokens): cost.step memoises it per batch shape

    def __init__(self, grid, gate: int, widths, per_element_s: float, call_fixed_s: float, scalar):
        self.grid, self.gate, self.widths = grid, gate, tuple(widths)
        self.per_element_s, self.call_fixed_s, self.scalar = per_element_s, call_fixed_s, scalar
        self.memo: dict[float, float] = {}

    def call_s(self, tokens: float, width: float) -> float:
        lt, lw = self.grid[0], self.grid[1]
        t = min(max(tokens, math.exp(lt[0])), math.exp(lt[-1]))
        w = min(max(width, math.exp(lw[0])), math.exp(lw[-1]))
        measured = math.exp(bilinear(lt, lw, self.grid[2], math.log(t), math.log(w)))
        fitted = lambda tk, wd: tk * wd * self.per_element_s + self.call_fixed_s
        return measured * fitted(tokens, width) / fitted(t, w)

    def __call__(self, x) -> float:
        tokens = x[self.gate]
        r = self.memo.get(tokens)
        if r is None:
            r = self.memo[tokens] = sum(self.call_s(tokens, w) for w in self.widths) / self.scalar(tokens)
        return r


def profile_folder(gpu: Gpu) -> str | None:
    eff = gpu.efficiency
    return str(resolve_profile(eff.profile)) if eff.measured_ops and eff.profile else None


def decode_attention_ratio(op, gpu: Gpu, scalar) -> DecodeAttentionRatio | None:
    """The correction of a decode-attention OpModel with shape (query heads, KV heads, head dim)
    and a bf16 KV cache (as the table was measured), else None (fitted factors only)."""
    folder = profile_folder(gpu)
    if folder is None or op.shape is None or len(op.shape) != 3:
        return None
    nq, nkv, d = op.shape
    if op.bytes.get("decode_kv_tokens") != 2 * nkv * d * 2.0:
        return None
    grid = decode_grid(folder, nq, nkv, d)
    if grid is None:
        return None
    sms = profile_sms(folder)
    return DecodeAttentionRatio(grid, scalar, (lambda b: split_kv(b, nkv, sms)) if sms else None)


@lru_cache(maxsize=None)
def profile_sms(folder: str) -> int | None:
    """The profiled GPU's SM count (meta.json `sms`), which the split-KV rule reads."""
    path = Path(folder) / "meta.json"
    return json.loads(path.read_text()).get("sms") if path.is_file() else None


def elementwise_ratio(op, gpu: Gpu, gate: int, scalar, memory_Bps: float) -> ElementwiseRatio | None:
    """The correction of an elementwise OpModel whose name ends with a measured kernel and whose
    shape lists the width of each call, else None."""
    folder = profile_folder(gpu)
    kernel, per_call = next((k for suffix, k in ELEMENTWISE_KERNELS.items() if op.name.endswith(suffix)), (None, 0))
    if folder is None or kernel is None or not op.shape or op.kernels != per_call * len(op.shape):
        return None
    grid = elementwise_grid(folder, kernel)
    if grid is None:
        return None
    per_token_bytes = sum(op.bytes.values())
    per_element_s = per_token_bytes / sum(op.shape) / memory_Bps
    return ElementwiseRatio(grid, gate, op.shape, per_element_s,
                            op.kernels * gpu.efficiency.kernel_overhead_s / len(op.shape), scalar)
