"""Inter-token gaps as a replica emits them: one per token, or one array shared by a decode run."""
from __future__ import annotations

import numpy as np


class TokenLog:
    """Inter-token gaps: single gaps, and gaps shared by every sequence of a decode run."""

    def __init__(self):
        self.single: list[float] = []
        self.shared: list[tuple[np.ndarray, int]] = []

    def all_gaps(self) -> np.ndarray:
        parts = [np.asarray(self.single, dtype=float)]
        parts += [np.repeat(gaps, weight) for gaps, weight in self.shared]
        return np.sort(np.concatenate(parts))
