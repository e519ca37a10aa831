"""A mergeable quantile sketch of positive durations with a relative error bound (DDSketch).

Why: a long run emits tens of millions of inter-token gaps; keeping each one grows with the run.
The sketch keeps counts in logarithmic buckets (Masson, Rim and Lee, "DDSketch: a fast and fully-
mergeable quantile sketch with relative-error guarantees", VLDB 2019): with gamma = (1 + a) / (1 - a),
bucket i holds the values in (gamma**(i-1), gamma**i] and stands for 2 gamma**i / (gamma + 1), which
is within a relative `a` (ALPHA) of every value in it. An order statistic read from the sketch is
therefore within ALPHA of the true one, and a percentile interpolated between two of them with
numpy's `linear` rule is within ALPHA of np.percentile of the values, whatever their distribution.
Values at or below MIN_VALUE (zero gaps: tokens a speculative step emits together) are counted
apart and read as 0, within MIN_VALUE of the truth. Count and maximum are exact; the mean and the
standard deviation come from weighted float sums of the values and their squares (exact up to
float rounding). Memory is fixed: one count per bucket
between MIN_VALUE and MAX_VALUE (~39k buckets, 310 KB), whatever the number of values.
"""
from __future__ import annotations

import math

import numpy as np

ALPHA = 5e-4                  # relative error of every quantile (0.05%)
MIN_VALUE = 1e-9              # seconds: at or below counts as zero
MAX_VALUE = 1e8               # seconds: above is an error (a gap of three years)
_GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LOG_GAMMA = math.log(_GAMMA)
_OFFSET = math.ceil(math.log(MIN_VALUE) / _LOG_GAMMA)
_BUCKETS = math.ceil(math.log(MAX_VALUE) / _LOG_GAMMA) - _OFFSET + 1


class QuantileSketch:
    """Weighted values in, order statistics, percentiles, mean and max out (see the module)."""

    def __init__(self):
        self.counts = np.zeros(_BUCKETS, dtype=np.int64)
        self.zeros = 0
        self.size = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.max = -math.inf

    def add(self, values: np.ndarray, weights: np.ndarray | None = None) -> None:
        values = np.asarray(values, dtype=np.float64)
        weights = np.ones(len(values), dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
        keep = ~np.isnan(values)
        values, weights = values[keep], weights[keep]
        if not len(values):
            return
        if values.max() > MAX_VALUE or values.min() < -MIN_VALUE:
            raise ValueError(f"a sketched value outside [0, {MAX_VALUE:g}] s: {values.min():g} .. {values.max():g}")
        small = values <= MIN_VALUE
        self.zeros += int(weights[small].sum())
        index = np.ceil(np.log(values[~small]) / _LOG_GAMMA).astype(np.int64) - _OFFSET
        self.counts += np.bincount(index, weights=weights[~small], minlength=_BUCKETS).astype(np.int64)
        self.size += int(weights.sum())
        self.total += float(np.dot(values, weights.astype(np.float64)))
        self.total_sq += float(np.dot(values * values, weights.astype(np.float64)))
        self.max = max(self.max, float(values.max()))

    def merge(self, other: "QuantileSketch") -> None:
        self.counts += other.counts
        self.zeros += other.zeros
        self.size += other.size
        self.total += other.total
        self.total_sq += other.total_sq
        self.max = max(self.max, other.max)

    def at(self, rank: int) -> float:
        """The rank-th smallest value (0-based), within ALPHA."""
        if rank < self.zeros:
            return 0.0
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, rank - self.zeros, side="right"))
        return min(2 * _GAMMA ** (i + _OFFSET) / (_GAMMA + 1), self.max)

    def percentile(self, q: float) -> float:
        """np.percentile(values, q) (method `linear`) within ALPHA."""
        h = (self.size - 1) * q / 100
        lo = math.floor(h)
        a, b = self.at(lo), self.at(min(lo + 1, self.size - 1))
        return a + (b - a) * (h - lo)

    def median(self) -> float:
        return self.percentile(50)

    def sum(self) -> float:
        return self.total

    def std(self) -> float:
        mean = self.total / self.size
        return math.sqrt(max(self.total_sq / self.size - mean * mean, 0.0))

    def distribution(self) -> dict[str, float]:
        """metrics.distribution of the values, within the bounds above."""
        if self.size == 0:
            return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
        return {"mean": self.total / self.size, "p50": self.percentile(50), "p90": self.percentile(90),
                "p99": self.percentile(99), "max": self.max}
