"""Ending a probe as soon as its SLO verdict is decided: a failing probe need not simulate the rest
of the trace (issue 16: every probe of the 70B plan simulated the whole hour).

Only a failing verdict can be decided early, and only as the final summary would decide it:
- a percentile limit (ttft/tpot/e2e at p50 or p99) is over the final percentile of the completed
  requests (simserve.metrics.distribution: numpy's linear rule, sorted sample a of n values,
  f = floor((n - 1) q / 100), value a[f] + gamma (a[f+1] - a[f]) >= a[f]). If at least
  `decisive(n) = n - f` completed values exceed the limit, a[f] does, and so does the percentile.
  `decisive` does not decrease with n, and the final n is at most the requests of that sample not
  rejected so far (all requests complete or are rejected by the run's end), so once
  decisive(that bound) completed values are over the limit the final percentile is too: later
  completions only add values, later rejections only lower the bound;
- `rejected`: the refused fraction only grows.
TTFT, TPOT and E2E are computed per request as records.RequestBook.frame does; TPOT's sample is the
completed requests with more than one output token (a one-token output's TPOT is NaN, dropped).

A probe stopped this way has status ok, `stopped_s` (the simulated time it ended at) and, for each
decided metric, a lower bound of the full run's value in that metric's column (the decisive-th
largest value over the limit so far; the full run's percentile is at least that); its other
metrics are NaN. A meeting probe always runs to the end.
"""
from __future__ import annotations

import math

import numpy as np

from simserve.sweep import METRICS

QUANTILES = {"p50": 50, "p99": 99}


def lower_index(n: int, q: float) -> int:
    """numpy.percentile's (method linear) lower neighbour index of the q-th percentile of n values."""
    return min(n - 1, int(np.floor((n - 1) * (np.float64(q) / 100))))


def decisive(n: int, q: float) -> int:
    """Completed values above a limit that put the q-th percentile of n values above it."""
    return n - lower_index(n, q) if n > 0 else 1


def _value(kind: str, req) -> float:
    """The request's TTFT / TPOT / E2E as records.RequestBook.frame computes it."""
    if kind == "ttft":
        return req.first_token_s - req.arrival_s
    if kind == "tpot":
        return (req.finish_s - req.first_token_s) / (req.osl - 1)
    return req.finish_s - req.arrival_s


class _Limit:
    """One percentile limit: its sample's size bound and the completed values over the limit."""

    def __init__(self, metric: str, limit: float, book):
        self.metric, self.limit = metric, limit
        self.kind, stat = metric.split("_")
        self.q = QUANTILES[stat]
        self.bound = int((book.osl > 1).sum()) if self.kind == "tpot" else len(book)   # see counts()
        self.over: list[float] = []

    def counts(self, req) -> bool:
        return self.kind != "tpot" or req.osl > 1

    def seen(self, req) -> None:
        if not self.counts(req):
            return
        if req.reject_reason:
            self.bound -= 1
            return
        value = _value(self.kind, req)
        if value > self.limit:
            self.over.append(value)

    def decided(self) -> float | None:
        """A lower bound of the final percentile once it is decided over the limit, else None."""
        need = decisive(self.bound, self.q)
        if len(self.over) < need:
            return None
        return sorted(self.over, reverse=True)[need - 1]


class SloWatch:
    """Watches a world's completions and rejections; triggers `stop` once a limit is decided broken."""

    def __init__(self, world, slo: dict):
        self.world = world
        self.stop = world.env.event()
        self.total = len(world.requests)
        self.rejected = 0
        self.rejected_limit = slo.get("rejected")
        self.limits = [_Limit(m, v, world.requests) for m, v in slo.items() if m != "rejected"]
        self.decided: dict[str, float] = {}

    def __call__(self, req) -> None:
        if self.decided:
            return
        self.rejected += bool(req.reject_reason)
        for lim in self.limits:
            lim.seen(req)
            bound = lim.decided()
            if bound is not None:
                self.decided[lim.metric] = bound
        if self.rejected_limit is not None and self.total:
            share = self.rejected / self.total
            if not share <= self.rejected_limit:
                self.decided["rejected"] = share
        if self.decided:
            self.stop.succeed()

    def row(self) -> dict:
        """The probe's metrics when stopped (see the module docstring)."""
        row = {k: math.nan for k in METRICS}
        row.update(num_gpus=self.world.placement.num_gpus, num_requests=self.total, num_rejected=self.rejected,
                   num_completed=self.world.requests.recorded - self.rejected, sim_time_s=self.world.env.now,
                   stopped_s=self.world.env.now)
        for metric, bound in self.decided.items():
            if metric != "rejected":
                row[f"{metric}_s"] = bound
        return row


def measure(slo: dict):
    """sweep.run_point's `measure`: simulate, ending the run once the SLO verdict is decided."""
    def run(config, overrides) -> dict:
        from simserve.results import summarize
        from simserve.sweep import summary_row
        from simserve.world import build_world

        world = build_world(config, overrides)
        watch = SloWatch(world, slo)
        world.replicas[0].arrivals.watchers.append(watch)
        world.run(stop=watch.stop)
        if watch.decided:
            return watch.row()
        return {**summary_row(summarize(world).summary), "stopped_s": math.nan}
    return run
