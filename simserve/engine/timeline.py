"""What each stage of each replica did, and when: the data behind plots and Perfetto traces.

One row per iteration (per stage, with pipelines), per coalesced decode run (`steps` > 1), per
pipeline transfer, and per stretch of exposed host (CPU) time (kind `host`); appending a tuple per
event keeps it cheap, but its rows grow with the run (~1 KB each as a list of tuples): a run of
more than AUTO_MAX_REQUESTS requests per pipeline stage records none unless asked (`engine.timeline`), and
`engine.timeline_window_s` keeps only the rows that start inside a span of simulated time.
"""
from __future__ import annotations

import math

import pandas as pd

from simserve.errors import ConfigError

COLUMNS = ("replica", "stage", "kind", "start_s", "end_s", "steps", "prefill_tokens", "decode_seqs",
           "compute_s", "allreduce_s", "allgather_s", "p2p_bytes", "kv_used_blocks", "kv_total_blocks",
           "running", "waiting", "alltoall_s")


# requests x pipeline stages up to which a run records its timeline unless told: the bundled hour
# (19,366 requests) at pp=1 keeps it; at pp=4 it would hold ~13M rows (~10 GB), so it does not
AUTO_MAX_REQUESTS = 20_000


class Timeline:
    def __init__(self, enabled: bool = True, window: tuple[float, float] | None = None):
        self.rows: list[tuple] = []
        self.enabled = enabled
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
        on = engine.timeline if engine.timeline is not None else (
            window is not None or num_requests * stages <= AUTO_MAX_REQUESTS)
        return cls(on, tuple(window) if window is not None else None)

    def _keep(self, start_s: float) -> bool:
        return self.enabled and self.start_s <= start_s < self.end_s

    def iteration(self, replica, stage: int, start_s: float, end_s: float, steps: int, prefill_tokens: int,
                  decode_seqs: int, split: tuple[float, ...]) -> None:
        """split: (compute, all-reduce, all-gather[, all-to-all]) seconds."""
        if not self._keep(start_s):
            return
        sched = [s for s in replica.schedulers]
        self.rows.append((replica.index, stage, "iteration" if steps == 1 else "decode_run", start_s, end_s,
                          steps, prefill_tokens, decode_seqs, split[0], split[1], split[2], 0.0,
                          replica.kv.used, replica.kv.num_blocks, sum(len(s.running) for s in sched),
                          sum(len(s.waiting) for s in sched), split[3] if len(split) > 3 else 0.0))

    def transfer(self, replica, stage: int, start_s: float, end_s: float, nbytes: float, kind: str = "p2p") -> None:
        """A pipeline send (`p2p`), or a request's KV leaving a prefill replica (`kv_transfer`)."""
        if not self._keep(start_s):
            return
        self.rows.append((replica.index, stage, kind, start_s, end_s, 1, 0, 0, 0.0, 0.0, 0.0, nbytes,
                          replica.kv.used, replica.kv.num_blocks, 0, 0, 0.0))

    def host(self, replica, stage: int, start_s: float, end_s: float) -> None:
        """CPU time the replica's GPUs waited for (scheduling, input preparation, sampling)."""
        if not self._keep(start_s):
            return
        self.rows.append((replica.index, stage, "host", start_s, end_s, 1, 0, 0, 0.0, 0.0, 0.0, 0.0,
                          replica.kv.used, replica.kv.num_blocks, 0, 0, 0.0))

    def frame(self) -> pd.DataFrame | None:
        """Rows in time order (a closed-form pipeline records a micro-batch's stages when it starts);
        None when not recorded."""
        if not self.enabled:
            return None
        return pd.DataFrame(self.rows, columns=list(COLUMNS)).sort_values("start_s", kind="stable",
                                                                          ignore_index=True)
