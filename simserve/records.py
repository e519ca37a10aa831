"""Every request of a run as numpy columns: its workload (arrival, lengths) and what became of it.

Why columns: a request is a Python object (simserve.request.Request) only while it is inside a
replica, where the scheduler, the KV cache and the engine update its fields; the book makes it when
the arrival process sends it (`make`) and copies its outcome into the columns when it leaves
(`record`: completed or rejected), after which nothing holds it. A run therefore keeps ~100 bytes
per request (RECORD_BYTES: eight-byte columns, small integer codes for the status and the
rejection reason) instead of the ~10 KB that live Request objects, per-request rows and their
boxed floats took, and the requests frame is built from the columns without a Python row each.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from simserve.request import Request

STATUSES = ("unfinished", "completed", "rejected")
UNFINISHED, COMPLETED, REJECTED = range(3)

# bytes per request: arrival, isl, osl, scheduled, first token, finish, worst gap, replica, preemptions
# (8 B each), reason (4 B), status (1 B); tests/test_memory.py checks a run stays near it
RECORD_BYTES = 9 * 8 + 4 + 1

REQUEST_COLUMNS = ["request_id", "replica", "status", "arrival_s", "isl", "osl", "scheduled_s",
                   "first_token_s", "finish_s", "ttft_s", "tpot_s", "e2e_s", "queue_delay_s",
                   "itl_max_s", "preemptions", "reject_reason"]


class RequestBook:
    """The workload's requests by id (sorted by arrival time) and the outcome of each."""

    def __init__(self, arrival_s, isl, osl, prefix_hashes=None):
        n = len(arrival_s)
        self.arrival_s = np.array(arrival_s, dtype=np.float64)   # a closed loop writes its send times here
        self.isl = np.asarray(isl, dtype=np.int64)
        self.osl = np.asarray(osl, dtype=np.int64)
        self.prefix_hashes = prefix_hashes         # prefix caching: one list of block hashes per request
        self.accept_prob: np.ndarray | None = None  # speculative decoding (engine/speculative.py)
        self.replica = np.full(n, -1, dtype=np.int64)
        self.scheduled_s = np.full(n, math.nan)
        self.first_token_s = np.full(n, math.nan)
        self.finish_s = np.full(n, math.nan)
        self.itl_max_s = np.zeros(n)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.status = np.zeros(n, dtype=np.int8)
        self.reason = np.zeros(n, dtype=np.int32)   # index into self.reasons
        self.reasons: list[str] = [""]
        self._reason_index = {"": 0}
        self.recorded = 0                           # requests that left (completed or rejected)

    def __len__(self) -> int:
        return len(self.arrival_s)

    def make(self, i: int) -> Request:
        """Request i as the replicas see it (its own object while it is in flight)."""
        prefix = self.prefix_hashes[i] if self.prefix_hashes is not None else None
        req = Request(i, float(self.arrival_s[i]), int(self.isl[i]), int(self.osl[i]), prefix)
        if self.accept_prob is not None:
            req.accept_prob = float(self.accept_prob[i])
        return req

    def record(self, req: Request) -> None:
        """Copy what became of a request that completed or was rejected into the columns."""
        i = req.id
        self.arrival_s[i] = req.arrival_s
        self.replica[i] = req.replica
        self.scheduled_s[i] = req.scheduled_s
        self.first_token_s[i] = req.first_token_s
        self.finish_s[i] = req.finish_s
        self.itl_max_s[i] = req.itl_max_s
        self.preemptions[i] = req.preemptions
        if req.reject_reason:
            self.status[i] = REJECTED
            code = self._reason_index.get(req.reject_reason)
            if code is None:
                code = self._reason_index[req.reject_reason] = len(self.reasons)
                self.reasons.append(req.reject_reason)
            self.reason[i] = code
        else:
            self.status[i] = COMPLETED if not math.isnan(req.finish_s) else UNFINISHED
        self.recorded += 1

    def frame(self) -> pd.DataFrame:
        """One row per request (requests.csv): the columns themselves (not copied), and the
        latencies made of them."""
        completed = self.status == COMPLETED
        first, finish, arrival = self.first_token_s, self.finish_s, self.arrival_s
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(completed & (self.osl > 1), (finish - first) / (self.osl - 1), math.nan)
        return pd.DataFrame({
            "request_id": np.arange(len(self), dtype=np.int64), "replica": self.replica,
            "status": np.array(STATUSES, dtype=object)[self.status], "arrival_s": arrival,
            "isl": self.isl, "osl": self.osl, "scheduled_s": self.scheduled_s, "first_token_s": first,
            "finish_s": finish, "ttft_s": first - arrival, "tpot_s": tpot, "e2e_s": finish - arrival,
            "queue_delay_s": self.scheduled_s - arrival,
            "itl_max_s": np.where(completed, self.itl_max_s, math.nan),
            "preemptions": self.preemptions,
            "reject_reason": np.array(self.reasons, dtype=object)[self.reason]}, columns=REQUEST_COLUMNS, copy=False)
