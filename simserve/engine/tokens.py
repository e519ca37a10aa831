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

Memory stays bounded: once a log holds more than EXACT_MAX_BYTES of gaps it folds them into a
QuantileSketch (simserve.sketch: every percentile within 0.05% of the exact one) and keeps folding
as entries arrive, so a run whose logs ever folded reports its ITL from the merged sketches (the
summary's `itl_estimate` says so) and any shorter run stays exact.
"""
from __future__ import annotations

import math
from array import array

import numpy as np

from simserve.sketch import QuantileSketch

EXACT_MAX_GAPS = 2_000_000       # 16 MB as one float64 array (the bundled hour's 4.07M gaps: an ItlSample)
# bytes of gaps a replica's log keeps before it folds them into a sketch (8 per single or shared gap,
# 16 per run): the bundled hour at pp=1 logs 5.3 MB (4.07M gaps as 0.44M entries), so it stays
# exact; a fold reads FOLD_CHUNK entries at a time, so its temporaries stay a few MB
EXACT_MAX_BYTES = 8_000_000
FOLD_CHUNK = 1 << 17


class TokenLog:
    """Inter-token gaps: single gaps, and the gaps of decode runs, each shared by the run's sequences
    (one typed array of every run's gaps, one of where each run ends and one of its weight)."""

    def __init__(self):
        self.single = array("d")
        self.sketch: QuantileSketch | None = None    # what was folded, once the log outgrew EXACT_MAX_BYTES
        self._run_gaps = array("d")
        self._run_ends = array("q")
        self._run_weights = array("q")
        self._same, self._count = math.nan, 0      # the latest gap, and how many times in a row

    def gap(self, gap: float) -> None:
        """One sequence's gap. Sequences that stepped together emit equal gaps one after another
        (the first gap of a decode run, a mixed iteration's decodes): kept once, with a count."""
        if gap == self._same:
            self._count += 1
            return
        self._flush()
        self._same, self._count = gap, 1

    def gaps(self, gap: float, count: int) -> None:
        """`count` sequences' equal gap (not NaN), one after another: as `count` calls of gap()."""
        if not count:
            return
        if gap == self._same:
            self._count += count
            return
        self._flush()
        self._same, self._count = gap, count

    def _flush(self) -> None:
        if self._count == 1:
            self.single.append(self._same)
        elif self._count:
            self._repeat(self._same, self._count)
        self._count = 0

    def run(self, gaps: np.ndarray, weight: int) -> None:
        """The k - 1 step gaps of a decode run, shared by its `weight` sequences."""
        self._run_gaps.frombytes(np.ascontiguousarray(gaps, dtype=np.float64).tobytes())
        self._run_ends.append(len(self._run_gaps))
        self._run_weights.append(weight)
        self.bound()

    def _repeat(self, gap: float, count: int) -> None:
        """One gap that `count` sequences had (a decode run's first gap, for those whose previous
        token came at the same time): kept once with its weight."""
        self._run_gaps.append(gap)
        self._run_ends.append(len(self._run_gaps))
        self._run_weights.append(count)

    def bound(self) -> None:
        """Fold the gaps into the sketch once they take more than EXACT_MAX_BYTES (cheap to call)."""
        if 8 * (len(self.single) + len(self._run_gaps)) + 16 * len(self._run_ends) > EXACT_MAX_BYTES:
            if self.sketch is None:
                self.sketch = QuantileSketch()
            values, weights = self.weighted()
            for i in range(0, len(values), FOLD_CHUNK):
                self.sketch.add(values[i:i + FOLD_CHUNK], weights[i:i + FOLD_CHUNK])
            self.single, self._run_gaps, self._run_ends, self._run_weights = \
                array("d"), array("d"), array("q"), array("q")

    def _run_gap_weights(self) -> np.ndarray:
        """The weight of each run gap (its run's)."""
        ends = np.array(self._run_ends, dtype=np.int64)
        return np.repeat(np.array(self._run_weights, dtype=np.int64), np.diff(ends, prepend=0))

    def count(self) -> int:
        self._flush()
        return len(self.single) + int(self._run_gap_weights().sum())

    def all_gaps(self) -> np.ndarray:
        self._flush()
        run_gaps = np.asarray(self._run_gaps, dtype=float)
        return np.sort(np.concatenate((np.asarray(self.single, dtype=float),
                                       np.repeat(run_gaps, self._run_gap_weights()))))

    def weighted(self) -> tuple[np.ndarray, np.ndarray]:
        self._flush()
        values = np.concatenate((np.asarray(self.single, dtype=float), np.asarray(self._run_gaps, dtype=float)))
        weights = np.concatenate((np.ones(len(self.single), dtype=np.int64), self._run_gap_weights()))
        return values, weights


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
    above, an ItlSample of the same gaps; a QuantileSketch of them all if any log was folded."""
    if any(log.sketch is not None for log in logs):
        merged = QuantileSketch()
        for log in logs:
            merged.add(*log.weighted())
            if log.sketch is not None:
                merged.merge(log.sketch)
        return merged
    limit = EXACT_MAX_GAPS if exact_max is None else exact_max
    if sum(log.count() for log in logs) <= limit:
        return np.sort(np.concatenate([log.all_gaps() for log in logs]))
    pairs = [log.weighted() for log in logs]
    return ItlSample(np.concatenate([v for v, _ in pairs]), np.concatenate([w for _, w in pairs]))
