"""What each stage of each replica did, and when: the data behind plots and Perfetto traces.

One row per iteration (per stage, with pipelines), per coalesced decode run (`steps` > 1), per
pipeline transfer, and per stretch of exposed host (CPU) time (kind `host`). Appending a tuple per
event keeps recording cheap; every CHUNK_ROWS rows the tuples become numpy columns (~140 bytes a
row instead of ~370 as tuples of boxed numbers). The rows still grow with the run: a run of more
than AUTO_MAX_REQUESTS requests per pipeline stage records none unless asked (`engine.timeline`),
and `engine.timeline_window_s` keeps only the rows that start inside a span of simulated time.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from simserve.errors import ConfigError

COLUMNS = ("replica", "stage", "kind", "start_s", "end_s", "steps", "prefill_tokens", "decode_seqs",
           "compute_s", "allreduce_s", "allgather_s", "p2p_bytes", "kv_used_blocks", "kv_total_blocks",
           "running", "waiting", "alltoall_s")


# requests x pipeline stages up to which a run records its timeline unless told: the bundled hour
# (19,366 requests) at pp=1 keeps it; at pp=4 it would hold ~13M rows (~10 GB), so it does not
AUTO_MAX_REQUESTS = 20_000
# rows a timeline kept by that rule (not asked for) may reach before it is dropped: the bundled hour
# at pp=1 writes ~170k rows; a played multi-node pipeline ~900 per request (tp4 x pp2 x dp2 on two
# DGX H100, 1,000 requests: 0.9M rows, peak RSS 585 MB with the timeline, 118 MB without); 250k rows
# are ~35 MB of columns, ~3x that while the frame is built
AUTO_MAX_ROWS = 250_000
CHUNK_ROWS = 8192


class Timeline:
    def __init__(self, enabled: bool = True, window: tuple[float, float] | None = None,
                 max_rows: int | None = None):
        self.rows: list[tuple] = []                  # the latest rows, as tuples
        self._chunks: list[list[np.ndarray]] = []    # earlier rows, CHUNK_ROWS at a time, by column
        self.enabled = enabled
        self.max_rows = max_rows                     # past it (checked per chunk) it is dropped: auto rule only
        self.dropped_at_s: float | None = None       # when it was dropped
        self.start_s, self.end_s = window if window is not None else (-math.inf, math.inf)

    @classmethod
    def for_run(cls, engine, num_requests: int, stages: int) -> "Timeline":
        """The timeline engine.timeline and engine.timeline_window_s ask for (EngineConfig)."""
        window = engine.timeline_window_s
        if window is not None and not 0 <= window[0] < window[1]:
            raise ConfigError(f"engine.timeline_window_s must be [start, end] with 0 <= start < end "
                              f"(got {list(window)})")
        if window is not None and engine.timeline is False:
            raise ConfigError("engine.timeline_window_s records a timeline: drop it or engine.timeline=false")
        asked = engine.timeline is not None or window is not None
        on = engine.timeline if engine.timeline is not None else (
            window is not None or num_requests * stages <= AUTO_MAX_REQUESTS)
        return cls(on, tuple(window) if window is not None else None, None if asked else AUTO_MAX_ROWS)

    def _keep(self, start_s: float) -> bool:
        return self.enabled and self.start_s <= start_s < self.end_s

    def iteration(self, replica, stage: int, start_s: float, end_s: float, steps: int, prefill_tokens: int,
                  decode_seqs: int, split: tuple[float, ...]) -> None:
        """split: (compute, all-reduce, all-gather[, all-to-all]) seconds."""
        if not (self.enabled and self.start_s <= start_s < self.end_s):    # _keep, inlined (per iteration)
            return
        sched = replica.schedulers
        if len(sched) == 1:
            running, waiting = len(sched[0].running), len(sched[0].waiting)
        else:
            running, waiting = sum([len(s.running) for s in sched]), sum([len(s.waiting) for s in sched])
        kv = replica.kv
        self._add((replica.index, stage, "iteration" if steps == 1 else "decode_run", start_s, end_s,
                   steps, prefill_tokens, decode_seqs, split[0], split[1], split[2], 0.0,
                   kv.used, kv.num_blocks, running, waiting, split[3] if len(split) > 3 else 0.0))

    def transfer(self, replica, stage: int, start_s: float, end_s: float, nbytes: float, kind: str = "p2p") -> None:
        """A pipeline send (`p2p`), or a request's KV leaving a prefill replica (`kv_transfer`)."""
        if not self._keep(start_s):
            return
        self._add((replica.index, stage, kind, start_s, end_s, 1, 0, 0, 0.0, 0.0, 0.0, nbytes,
                          replica.kv.used, replica.kv.num_blocks, 0, 0, 0.0))

    def host(self, replica, stage: int, start_s: float, end_s: float) -> None:
        """CPU time the replica's GPUs waited for (scheduling, input preparation, sampling)."""
        if not (self.enabled and self.start_s <= start_s < self.end_s):    # _keep, inlined
            return
        self._add((replica.index, stage, "host", start_s, end_s, 1, 0, 0, 0.0, 0.0, 0.0, 0.0,
                          replica.kv.used, replica.kv.num_blocks, 0, 0, 0.0))

    def _add(self, row: tuple) -> None:
        self.rows.append(row)
        if len(self.rows) >= CHUNK_ROWS:
            self._chunks.append(_columns(self.rows))
            self.rows = []
            if self.max_rows is not None and len(self._chunks) * CHUNK_ROWS > self.max_rows:
                self.enabled, self._chunks, self.dropped_at_s = False, [], row[3]

    def dropped(self) -> dict:
        """The summary's `timeline_dropped` key when the auto rule's timeline outgrew AUTO_MAX_ROWS."""
        if self.dropped_at_s is None:
            return {}
        return {"timeline_dropped": {"rows_over": self.max_rows, "at_s": self.dropped_at_s,
                                     "keep_with": "engine.timeline=true"}}

    def frame(self) -> pd.DataFrame | None:
        """Rows in time order (a closed-form pipeline records a micro-batch's stages when it starts);
        None when not recorded."""
        if not self.enabled:
            return None
        chunks = self._chunks + ([_columns(self.rows)] if self.rows else [])
        if not chunks:
            return pd.DataFrame(columns=list(COLUMNS))
        columns = {name: np.concatenate([chunk[i] for chunk in chunks]) for i, name in enumerate(COLUMNS)}
        return pd.DataFrame(columns).sort_values("start_s", kind="stable", ignore_index=True)


def _columns(rows: list[tuple]) -> list[np.ndarray]:
    """Rows as one array per column (numbers typed as pandas would infer them; `kind` as objects:
    its few strings are shared, 8 bytes a row)."""
    return [np.array(column, dtype=object if name == "kind" else None) for name, column in zip(COLUMNS, zip(*rows))]
