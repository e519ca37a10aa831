"""How long one iteration of a replica takes, and where that time went.

An iteration's time is the sum of its phases: compute (cost.StepCost of the replica's shard) and,
for tensor parallelism, the collectives between layers. With tp = 1 there is no communication.
"""
from __future__ import annotations

import math

import numpy as np

from simserve.cost.operators import BatchStats
from simserve.cost.step import StepCost


class IterationModel:
    def __init__(self, step_cost: StepCost):
        self.step_cost = step_cost
        self._compute: list = []     # floats and arrays of iteration compute times

    def time(self, stats: BatchStats) -> float:
        return self.step_cost.time(stats)

    def decode_times(self, num_seqs: int, kv_tokens_start: float, steps: int) -> np.ndarray:
        return self.step_cost.decode_times(num_seqs, kv_tokens_start, steps)

    def account(self, durations) -> None:
        self._compute.append(durations)

    def busy_s(self) -> dict[str, float]:
        """Seconds each GPU of the replica spent per activity (exactly rounded sums)."""
        parts = [np.atleast_1d(np.asarray(x, dtype=float)) for x in self._compute]
        compute = math.fsum(np.concatenate(parts)) if parts else 0.0
        return {"compute": compute}
