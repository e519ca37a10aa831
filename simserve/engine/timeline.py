"""What each stage of each replica did, and when: the data behind plots and Perfetto traces.

One row per iteration (per stage, with pipelines), per coalesced decode run (`steps` > 1), per
pipeline transfer, and per stretch of exposed host (CPU) time (kind `host`); appending a tuple per event keeps it cheap enough to record always.
"""
from __future__ import annotations

import pandas as pd

COLUMNS = ("replica", "stage", "kind", "start_s", "end_s", "steps", "prefill_tokens", "decode_seqs",
           "compute_s", "allreduce_s", "allgather_s", "p2p_bytes", "kv_used_blocks", "kv_total_blocks",
           "running", "waiting", "alltoall_s")


class Timeline:
    def __init__(self):
        self.rows: list[tuple] = []

    def iteration(self, replica, stage: int, start_s: float, end_s: float, steps: int, prefill_tokens: int,
                  decode_seqs: int, split: tuple[float, ...]) -> None:
        """split: (compute, all-reduce, all-gather[, all-to-all]) seconds."""
        sched = [s for s in replica.schedulers]
        self.rows.append((replica.index, stage, "iteration" if steps == 1 else "decode_run", start_s, end_s,
                          steps, prefill_tokens, decode_seqs, split[0], split[1], split[2], 0.0,
                          replica.kv.used, replica.kv.num_blocks, sum(len(s.running) for s in sched),
                          sum(len(s.waiting) for s in sched), split[3] if len(split) > 3 else 0.0))

    def transfer(self, replica, stage: int, start_s: float, end_s: float, nbytes: float, kind: str = "p2p") -> None:
        """A pipeline send (`p2p`), or a request's KV leaving a prefill replica (`kv_transfer`)."""
        self.rows.append((replica.index, stage, kind, start_s, end_s, 1, 0, 0, 0.0, 0.0, 0.0, nbytes,
                          replica.kv.used, replica.kv.num_blocks, 0, 0, 0.0))

    def host(self, replica, stage: int, start_s: float, end_s: float) -> None:
        """CPU time the replica's GPUs waited for (scheduling, input preparation, sampling)."""
        self.rows.append((replica.index, stage, "host", start_s, end_s, 1, 0, 0, 0.0, 0.0, 0.0, 0.0,
                          replica.kv.used, replica.kv.num_blocks, 0, 0, 0.0))

    def frame(self) -> pd.DataFrame:
        """Rows in time order (a closed-form pipeline records a micro-batch's stages when it starts)."""
        return pd.DataFrame(self.rows, columns=list(COLUMNS)).sort_values("start_s", kind="stable",
                                                                          ignore_index=True)
