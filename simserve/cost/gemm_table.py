"""Shape-aware GEMM time from a measured GEMM table (a profile's gemm.csv).

A GEMM y[M, N] = x[M, K] @ W[K, N] takes rho(M; K, N) times its ideal roofline time
max(FLOPs / peak, bytes / HBM bandwidth) (bytes as cost.operators counts them: weights once,
activations in and out). rho >= 1 holds everything a roofline leaves out, and all of it depends on
the shape: tile and wave quantisation (a tp-sharded GEMM of few output tiles cannot fill 132 SMs),
the knee where neither limit binds alone, the ramp of small kernels that never reach full HBM
bandwidth, and the fixed cost per kernel. rho is read off the table:

- for a measured (K, N): piecewise linear in log M between the measured M (clamped outside);
- for another (K, N): the inverse-square-distance blend, in log rho, of the curves of the three
  nearest measured shapes in (log2 K, log2 N).

`curve` compiles one GEMM's rho(M) once (StepCost calls it per operator at construction); the
returned callable is a bisect and a lerp, memoised per M, so an iteration stays cheap. The table is
measured data, not a fit to the layer tables: those stay held out (simserve.calibration).
"""
from __future__ import annotations

import bisect
import csv
import math
from functools import lru_cache
from pathlib import Path

from simserve.catalog import DTYPE_BYTES, Gpu, resolve_profile
from simserve.errors import CatalogError

NEAREST = 3


@lru_cache(maxsize=None)
def _rows(folder: str) -> dict[str, dict[tuple[int, int], list[tuple[int, float]]]]:
    """{dtype: {(K, N): [(M, seconds), ...] sorted by M}} from folder/gemm.csv."""
    path = Path(folder) / "gemm.csv"
    if not path.is_file():
        raise CatalogError(f"profile {folder}: no gemm.csv (needed for shape-aware GEMM efficiency)")
    table: dict[str, dict[tuple[int, int], list[tuple[int, float]]]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            shape = (int(r["k"]), int(r["n"]))
            table.setdefault(r["dtype"], {}).setdefault(shape, []).append((int(r["m"]), float(r["time_us"]) * 1e-6))
    for shapes in table.values():
        for points in shapes.values():
            points.sort()
    return table


def roofline_s(m: float, k: int, n: int, dtype: str, peak: float, bw: float) -> float:
    """max(FLOPs / peak, bytes / bandwidth) with cost.operators' byte count (bf16 activations in
    and out; weights in the GEMM dtype for fp8/fp4, else bf16)."""
    wb = DTYPE_BYTES[dtype] if dtype in ("fp8", "fp4") else 2.0
    return max(2.0 * m * k * n / peak, (k * n * wb + m * (k + n) * 2.0) / bw)


def _measured_curve(points, k, n, dtype, peak, bw) -> tuple[list[float], list[float]]:
    return ([math.log(m) for m, _ in points],
            [math.log(t / roofline_s(m, k, n, dtype, peak, bw)) for m, t in points])


def _lerp(xs: list[float], ys: list[float], x: float) -> float:
    i = bisect.bisect_left(xs, x)
    if i <= 0:
        return ys[0]
    if i >= len(xs):
        return ys[-1]
    x0, x1 = xs[i - 1], xs[i]
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (x1 - x0)


@lru_cache(maxsize=None)
def log_rho_curve(folder: str, dtype: str, k: int, n: int, peak: float, bw: float
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(log M grid, log rho) of a (K, N) GEMM, measured or blended from the nearest shapes."""
    shapes = _rows(folder).get(dtype) or _rows(folder).get("bf16")
    if not shapes:
        raise CatalogError(f"profile {folder}: gemm.csv has no {dtype} or bf16 rows")
    if (k, n) in shapes:
        xs, ys = _measured_curve(shapes[(k, n)], k, n, dtype, peak, bw)
        return tuple(xs), tuple(ys)
    dist = sorted(((math.log2(k / sk) ** 2 + math.log2(n / sn) ** 2, (sk, sn)) for sk, sn in shapes))[:NEAREST]
    curves = [(1.0 / d, _measured_curve(shapes[s], s[0], s[1], dtype, peak, bw)) for d, s in dist]
    grid = sorted({x for _, (xs, _) in curves for x in xs})
    total = sum(w for w, _ in curves)
    blended = [sum(w * _lerp(xs, ys, x) for w, (xs, ys) in curves) / total for x in grid]
    return tuple(grid), tuple(blended)


class RhoCurve:
    """rho(M) of one GEMM: the factor on its ideal roofline time (memoised per M)."""

    __slots__ = ("xs", "ys", "memo")

    def __init__(self, xs, ys):
        self.xs, self.ys, self.memo = list(xs), list(ys), {}

    def __call__(self, m: float) -> float:
        r = self.memo.get(m)
        if r is None:
            r = self.memo[m] = math.exp(_lerp(self.xs, self.ys, math.log(m))) if m > 0 else 1.0
        return r


def curve(gpu: Gpu, dtype: str, k: int, n: int) -> RhoCurve | None:
    """rho(M) for this GPU's measured GEMM table, or None where it has none (plain roofline)."""
    eff = gpu.efficiency
    if not eff.shape_aware_gemm or eff.profile is None:
        return None
    folder = str(resolve_profile(eff.profile))
    return RhoCurve(*log_rho_curve(folder, dtype, int(k), int(n), gpu.flops(dtype), gpu.hbm_bw_Bps))
