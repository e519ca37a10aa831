"""The arrival-process registry (the config validates `workload.arrivals.process` against it).

Kept apart from simserve.workload.arrivals so the config can import it without a cycle. A
process's `draw(arrivals, n, rng)` gets the `workload.arrivals` section and returns n sorted
times starting at 0; `None` means the trace's own clock.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from simserve.registry import Registry


@dataclass(frozen=True)
class Process:
    draw: Optional[Callable[..., np.ndarray]]    # (arrivals section, n, rng) -> times; None: the trace's clock
    needs_rate: bool = False
    closed: bool = False       # clients send when their previous request finishes (times set at run time)


ARRIVAL_PROCESSES: Registry[Process] = Registry("arrival process")


def gaps_s(arrivals, n: int, rng: np.random.Generator) -> np.ndarray:
    mean_gap_s = 1.0 / arrivals.rate
    if arrivals.process == "poisson":
        return rng.exponential(mean_gap_s, n)
    shape = 1.0 / arrivals.cv ** 2
    return rng.gamma(shape, mean_gap_s / shape, n)


def _renewal(arrivals, n: int, rng: np.random.Generator) -> np.ndarray:
    if n == 0:
        return np.zeros(0)
    return np.concatenate(([0.0], np.cumsum(gaps_s(arrivals, n - 1, rng))))


def _at_zero(arrivals, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.zeros(n)


ARRIVAL_PROCESSES.register("trace", Process(draw=None))
ARRIVAL_PROCESSES.register("poisson", Process(draw=_renewal, needs_rate=True))
ARRIVAL_PROCESSES.register("gamma", Process(draw=_renewal, needs_rate=True))
ARRIVAL_PROCESSES.register("batch", Process(draw=_at_zero))
# closed loop: placeholders at 0; each request's send time is set when a client sends it
# (simserve.engine.arrivals.ClosedLoop)
ARRIVAL_PROCESSES.register("closed", Process(draw=_at_zero, closed=True))
