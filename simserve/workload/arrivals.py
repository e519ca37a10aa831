"""Arrival processes: synthetic (Poisson, gamma, batch), closed loop, and a trace's own clock re-timed.

Synthetic arrivals start at t = 0 (the first request needs no warm-up gap) and the following
gaps are i.i.d. with mean 1/rate: exponential for Poisson, gamma with shape 1/cv^2 for gamma,
whose coefficient of variation is then exactly `cv` (cv > 1 is burstier than Poisson).

Processes are registered in `ARRIVAL_PROCESSES` (the config's allowed values come from it): a
`Process` (simserve.workload.processes) says whether it needs a rate, whether it is closed-loop
(send times decided while the simulation runs, simserve.engine.arrivals.ClosedLoop) and how to
draw n open-loop times.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from simserve.errors import WorkloadError
from simserve.workload.config import ArrivalsConfig
from simserve.workload.processes import ARRIVAL_PROCESSES, Process, gaps_s

__all__ = ["ARRIVAL_PROCESSES", "Process", "arrivals_until", "retime_trace", "synthetic_arrivals"]


def synthetic_arrivals(arrivals: ArrivalsConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """n arrival times in seconds, sorted, the first at 0."""
    process = ARRIVAL_PROCESSES.get(arrivals.process, "workload.arrivals.process")
    if process.draw is None:
        raise WorkloadError(f"arrivals.process {arrivals.process} has no synthetic times")
    return process.draw(arrivals, n, rng)


def arrivals_until(arrivals: ArrivalsConfig, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times in [0, duration_s): as many as the process produces in that window.

    Gaps are drawn in blocks sized from the expected count, so the result equals drawing one gap
    at a time (the Generator's stream is consumed in order), only faster.
    """
    if not ARRIVAL_PROCESSES.get(arrivals.process).needs_rate:
        raise WorkloadError(f"arrivals.process {arrivals.process} has no rate to fill a window: give "
                            "workload.num_requests, not only duration_s")
    times = [np.zeros(1)]
    last_s = 0.0
    block = int(duration_s * arrivals.rate * 1.1) + 16
    while last_s < duration_s:
        t = last_s + np.cumsum(gaps_s(arrivals, block, rng))
        times.append(t)
        last_s = float(t[-1])
    out = np.concatenate(times)
    return out[out < duration_s]


def retime_trace(arrival_s: np.ndarray, arrivals: ArrivalsConfig, rng: np.random.Generator,
                 trace_rate_per_s: Optional[float] = None) -> np.ndarray:
    """A trace's own (re-based) times, scaled to `rate` or by `rate_scale`, plus optional jitter.

    Jitter (uniform in [0, jitter_s)) spreads requests that share a quantised stamp, such as
    Mooncake's ~3 s steps; the result is re-sorted by the caller together with the lengths.
    """
    scale = arrivals.rate_scale
    if arrivals.rate is not None:
        if not trace_rate_per_s:
            raise WorkloadError("arrivals.rate for a trace needs at least two distinct timestamps to "
                                "know the trace's own rate")
        scale = arrivals.rate / trace_rate_per_s
    t = arrival_s / scale
    if arrivals.jitter_s:
        t = t + rng.uniform(0.0, arrivals.jitter_s, len(t))
    return t
