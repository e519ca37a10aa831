"""The rate search of one layout: bracketing, then bisection, on a fixed geometric grid of rates.

Rates are r_k = min_rate x (1 + step)^k requests per second, k = 0, 1, ... Every probe is one
simulation at one grid rate; the answer is the largest k whose probe meets the SLO with the probe
at k + 1 failing (both simulated), so "the next rate step up does not meet the SLO" holds by
construction. The search assumes that meeting the SLO is monotone in rate (it is for a queue
whose latencies grow with load; an exhaustive grid scan checks it in tests/test_plan.py); under
that assumption any order of probes finds the same answer, and the order below is chosen for cost.

Cost: a failing probe ends once it is decided (simserve.plan.stop), the sooner the further the
rate is above the layout's answer; a meeting probe always simulates the whole trace, and for a
pipeline it costs more the lower the rate (a longer span of small micro-batches). So the search
approaches the answer from above (the start, simserve.plan.space, is meant to be above it):
- bracketing: from the start index down by `down` steps (about x1.33 in rate) while probes fail,
  the distance from the start doubling once it is two jumps (about x4; after one, the 70B tp1 pp8
  dp2 on 16 H100s went from 69 failing to 60, below its answer 66-67, where meeting probes of
  that pipeline cost 92-135 CPU-s against 31-46 for its failing ones); up by `jump` while they meet;
- bisection on k between the highest meeting and the lowest failing index;
- a layout that fails at k = 0 cannot meet the SLO at any grid rate (what an exhaustive scan
  says); the binding metric is the one furthest over its limit there;
- a layout that meets the SLO at max_rate is reported at that rate ("unbounded");
- with a `floor` (branch and bound, simserve.plan.run): the lowest index whose rate per GPU
  reaches the best goodput per GPU already found for the model. No probe goes below it (a
  proposal below is moved up to it), and once a probe at or below it fails the search ends
  "bounded": its answer is below the floor, so its goodput per GPU (at most its rate per GPU) is
  below the best one. Above the floor the search is the one without it.

Deterministic: the probes depend only on earlier outcomes, never on timing or worker count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


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
    down: int = 3
    ok: dict[int, bool] = field(default_factory=dict)
    over: dict[int, dict] = field(default_factory=dict)   # failing probes' violations
    floor: int = 0           # no probe below this index (branch and bound; 0: none)
    floor_per_gpu: float = 0.0   # the best goodput per GPU that set the floor
    verdict: str = ""        # '', 'ok', 'unbounded', 'infeasible', 'bounded'

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

    def propose(self) -> int | None:
        """The next grid index to probe, or None when the search is over (see `verdict`)."""
        if self.verdict:
            return None
        if self.floor and (self.floor > self.grid.top or (self.hi is not None and self.hi <= self.floor)):
            self.verdict = "bounded"
            return None
        k = self._propose()
        return k if k is None else max(k, self.floor)

    def _propose(self) -> int | None:
        lo, hi = self.lo, self.hi
        if lo is None and hi is None:
            return self.start
        if hi is None:                       # everything so far meets the SLO: go up
            if lo >= self.grid.top:
                self.verdict = "unbounded"
                return None
            return min(self.grid.top, lo + self.jump)
        if lo is None:                       # everything so far fails: go down
            if hi == 0:
                self.verdict = "infeasible"
                return None
            gone = self.start - hi
            return max(0, hi - (self.down if gone < 2 * self.jump else gone))
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
