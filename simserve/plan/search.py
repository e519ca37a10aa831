"""The rate search of one layout: bracketing, then bisection, on a fixed geometric grid of rates.

Rates are r_k = min_rate x (1 + step)^k requests per second, k = 0, 1, ... Every probe is one
simulation at one grid rate; the answer is the largest k whose probe meets the SLO with the probe
at k + 1 failing (both simulated), so "the next rate step up does not meet the SLO" holds by
construction. The search assumes that meeting the SLO is monotone in rate (it is for a queue
whose latencies grow with load; an exhaustive grid scan checks it in tests/test_plan.py).

- bracketing: from the start index, up by `jump` steps (about x2 in rate) while probes meet the
  SLO, or down by `jump` while they fail;
- bisection on k between the highest meeting and the lowest failing index;
- a layout that fails at k = 0, or whose violated metrics improve by less than 5% when the rate
  halves (latency at zero load: lower rates cannot help), cannot meet the SLO at any rate; the
  binding metric is the one furthest over its limit at the lowest rate probed;
- a layout that meets the SLO at max_rate is reported at that rate ("unbounded");
- a failing probe may have been stopped once its verdict was decided (simserve.plan.stop): it
  counts as failing like any other, and where the zero-load test needs how far over the limits a
  probe ends, a stopped one is re-run to its end first (`needs_full`).

Deterministic: the probes depend only on earlier outcomes, never on timing or worker count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

FLOOR_IMPROVEMENT = 0.05     # a halved rate must cut the worst violation by 5% to keep descending


@dataclass(frozen=True)
class RateGrid:
    min_rate: float
    step: float
    max_rate: float

    def rate(self, k: int) -> float:
        return self.min_rate * (1.0 + self.step) ** k

    def index(self, rate: float) -> int:
        """The grid index at or just below `rate` (clamped to the grid)."""
        k = int(math.floor(math.log(max(rate, self.min_rate) / self.min_rate) / math.log1p(self.step) + 1e-9))
        return max(0, min(k, self.top))

    @property
    def top(self) -> int:
        return int(math.floor(math.log(self.max_rate / self.min_rate) / math.log1p(self.step) + 1e-9))

    def steps_for(self, factor: float) -> int:
        return max(1, round(math.log(factor) / math.log1p(self.step)))


def stopped(row: dict) -> bool:
    """Was the probe ended once its verdict was decided (simserve.plan.stop)?"""
    value = row.get("stopped_s")
    return value not in (None, "") and not (isinstance(value, float) and math.isnan(value))


def slo_violations(row: dict, slo: dict) -> dict[str, tuple[float, float]]:
    """metric -> (value, limit) for each SLO limit a probe's summary row breaks. A stopped probe
    breaks the limits it was stopped for (their values lower bounds); it measured no other."""
    out = {}
    for metric, limit in slo.items():
        if metric == "rejected":
            n = float(row.get("num_requests") or 0)
            value = float(row.get("num_rejected") or 0) / n if n else 0.0
        else:
            value = float(row[f"{metric}_s"])
        if math.isnan(value) and stopped(row):
            continue
        if not value <= limit:
            out[metric] = (value, limit)
    return out


def worst(violations: dict[str, tuple[float, float]]) -> tuple[str, float]:
    """(binding metric, value / limit); rejections count as infinitely over when the limit is 0."""
    def ratio(v):
        value, limit = v
        return value / limit if limit > 0 else math.inf
    metric = max(violations, key=lambda m: ratio(violations[m]))
    return metric, ratio(violations[metric])


@dataclass
class RateSearch:
    grid: RateGrid
    start: int
    jump: int
    ok: dict[int, bool] = field(default_factory=dict)
    over: dict[int, dict] = field(default_factory=dict)   # failing probes' violations
    partial: set[int] = field(default_factory=set)        # probes stopped once they failed
    verdict: str = ""        # '', 'ok', 'unbounded', 'infeasible'

    @property
    def lo(self) -> int | None:
        good = [k for k, v in self.ok.items() if v]
        return max(good) if good else None

    @property
    def hi(self) -> int | None:
        bad = [k for k, v in self.ok.items() if not v]
        return min(bad) if bad else None

    def record(self, k: int, row: dict, slo: dict) -> None:
        over = slo_violations(row, slo) if row.get("status") == "ok" else {"error": (math.inf, 0.0)}
        self.ok[k] = not over
        if over:
            self.over[k] = over
        if stopped(row):
            self.partial.add(k)
        else:
            self.partial.discard(k)

    def needs_full(self, k: int) -> bool:
        """Is the probe at k wanted run to its end? Only to re-run a stopped one (see propose)."""
        return k in self.partial

    def _floor_probe(self, k: int) -> int | None:
        """A stopped probe that the zero-load test at k compares, to be re-run in full: the test
        compares how far over its limits each probe ends, which a stopped probe did not measure."""
        above = sorted(j for j in self.over if j > k)
        if not above or "error" in self.over[k]:
            return None
        return next((j for j in (k, above[0]) if j in self.partial), None)

    def _at_floor(self, k: int) -> bool:
        """Did halving the rate (or more) from the next failing probe above k fail to help?"""
        above = sorted(j for j in self.over if j > k)
        if not above or "error" in self.over[k]:
            return "error" in self.over.get(k, {})
        _, now = worst(self.over[k])
        _, before = worst(self.over[above[0]])
        return now > (1.0 - FLOOR_IMPROVEMENT) * before

    def propose(self) -> int | None:
        """The next grid index to probe, or None when the search is over (see `verdict`)."""
        if self.verdict:
            return None
        lo, hi = self.lo, self.hi
        if lo is None and hi is None:
            return self.start
        if hi is None:                       # everything so far meets the SLO: go up
            if lo >= self.grid.top:
                self.verdict = "unbounded"
                return None
            return min(self.grid.top, lo + self.jump)
        if lo is None:                       # everything so far fails: go down
            if hi > 0 and (full := self._floor_probe(hi)) is not None:
                return full
            if hi == 0 or self._at_floor(hi):
                self.verdict = "infeasible"
                return None
            return max(0, hi - self.jump)
        if hi - lo <= 1:
            self.verdict = "ok"
            return None
        return (lo + hi) // 2

    def binding(self) -> tuple[str, float, float, int]:
        """(metric, value, limit, k) at the lowest failing probe."""
        k = min(self.over)
        metric, _ = worst(self.over[k])
        value, limit = self.over[k][metric]
        return metric, value, limit, k
