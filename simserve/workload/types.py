"""The `Workload` the engine replays: parallel arrays, one entry per request, in arrival order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Workload:
    arrival_s: np.ndarray    # float64 seconds, sorted; the first arrival may be > 0
    isl: np.ndarray          # int64 input (prompt) tokens, >= 1
    osl: np.ndarray          # int64 output tokens, >= 1
    # Mooncake hash_ids per request: ids of the prompt's 512-token prefix blocks, for prefix caching.
    prefix_hashes: Optional[tuple[tuple[int, ...], ...]] = None
    source: str = ""         # human-readable description of where the requests came from

    def __len__(self) -> int:
        return len(self.arrival_s)
