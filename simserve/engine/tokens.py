"""Inter-token gaps as a replica emits them: one per token, or one array shared by a decode run.

A decode run of k steps over n sequences shares its k - 1 step gaps among the n sequences, so the
log keeps them once with weight n instead of n times (`shared`), and single gaps in a typed array
(8 bytes each, not a Python float). The run's ITL sample (`itl_sample`) is every gap, sorted, up to
EXACT_MAX_GAPS gaps; above, the same sample as (value, weight) pairs, `ItlSample`, whose memory
grows with the entries the replicas logged (about one per iteration and sequence-run), not with
the tokens. Its statistics are exact: order statistics are looked up in the cumulative weights and
interpolated with numpy's `linear` rule, the mean is the correctly rounded weighted sum (each
value split into two 26-bit halves, so every product with its weight is exact, then math.fsum),
so they equal the expanded sample's (tests/test_tokens.py, on the bundled trace).
"""
from __future__ import annotations

import math
from array import array

import numpy as np

EXACT_MAX_GAPS = 20_000_000      # 160 MB as one float64 array: the bundled hour (~4M gaps) stays below


class TokenLog:
    """Inter-token gaps: single gaps, and gaps shared by every sequence of a decode run."""

    def __init__(self):
        self.single = array("d")
        self.shared: list[tuple[np.ndarray, int]] = []

    def count(self) -> int:
        return len(self.single) + sum(len(gaps) * weight for gaps, weight in self.shared)

    def all_gaps(self) -> np.ndarray:
        parts = [np.asarray(self.single, dtype=float)]
        parts += [np.repeat(gaps, weight) for gaps, weight in self.shared]
        return np.sort(np.concatenate(parts))

    def weighted(self) -> tuple[np.ndarray, np.ndarray]:
        values = [np.asarray(self.single, dtype=float)] + [gaps for gaps, _ in self.shared]
        weights = [np.ones(len(self.single), dtype=np.int64)]
        weights += [np.full(len(gaps), weight, dtype=np.int64) for gaps, weight in self.shared]
        return np.concatenate(values), np.concatenate(weights)


class ItlSample:
    """Every inter-token gap of a run as its sorted distinct values with integer weights."""

    def __init__(self, values: np.ndarray, weights: np.ndarray):
        keep = ~np.isnan(values)
        self.values, inverse = np.unique(values[keep], return_inverse=True)      # sorted, distinct
        self.weights = np.bincount(inverse, weights=weights[keep]).astype(np.int64)
        self._cum = np.cumsum(self.weights)
        self.size = int(self._cum[-1]) if len(self._cum) else 0

    def at(self, rank: int) -> float:
        """The rank-th smallest gap of the expanded sample (0-based)."""
        return float(self.values[int(np.searchsorted(self._cum, rank, side="right"))])

    def percentile(self, q: float) -> float:
        """np.percentile(expanded, q) (method `linear`), with numpy's arithmetic."""
        qq = np.true_divide(q, 100)
        h = float(self.size * qq + (1 - qq) - 1)
        lo = math.floor(h)
        t = h - lo
        a, b = self.at(lo), self.at(min(lo + 1, self.size - 1))
        diff = b - a
        return float(b - diff * (1 - t)) if t >= 0.5 else float(a + diff * t)

    def median(self) -> float:
        """np.median(expanded): the middle gap, or the mean of the two middle ones."""
        n = self.size
        return self.at(n // 2) if n % 2 else float(np.mean([self.at(n // 2 - 1), self.at(n // 2)]))

    def sum(self) -> float:
        """math.fsum(expanded): the correctly rounded sum of every gap."""
        big = self.values * 134217729.0               # Veltkamp split: values = hi + lo, 26 bits each
        hi = big - (big - self.values)
        lo = self.values - hi
        return math.fsum(np.concatenate((hi * self.weights, lo * self.weights)).tolist())

    def std(self) -> float:
        """np.std(expanded) up to float rounding (a weighted sum of squared deviations)."""
        mean = self.sum() / self.size
        return math.sqrt(math.fsum((self.weights * (self.values - mean) ** 2).tolist()) / self.size)

    def distribution(self) -> dict[str, float]:
        """metrics.distribution of the expanded sample."""
        if self.size == 0:
            return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
        return {"mean": self.sum() / self.size, "p50": self.percentile(50), "p90": self.percentile(90),
                "p99": self.percentile(99), "max": float(self.values[-1])}


def itl_sample(logs: list[TokenLog], exact_max: int | None = None):
    """Every gap of the replicas' logs, sorted (np.ndarray) up to `exact_max` (EXACT_MAX_GAPS) gaps;
    above, an ItlSample of the same gaps."""
    limit = EXACT_MAX_GAPS if exact_max is None else exact_max
    if sum(log.count() for log in logs) <= limit:
        return np.sort(np.concatenate([log.all_gaps() for log in logs]))
    pairs = [log.weighted() for log in logs]
    return ItlSample(np.concatenate([v for v, _ in pairs]), np.concatenate([w for _, w in pairs]))
