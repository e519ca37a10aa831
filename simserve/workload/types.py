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
    # the prompts' identity, for prefix caching: per request, ids of its consecutive
    # `prefix_block_tokens`-token segments (Mooncake hash_ids: 512-token blocks; shared_prefix: its
    # group's whole prefix); tokens past them are the request's own
    prefix_hashes: Optional[tuple[tuple[int, ...], ...]] = None
    prefix_block_tokens: int = 512
    source: str = ""         # human-readable description of where the requests came from

    def __len__(self) -> int:
        return len(self.arrival_s)
