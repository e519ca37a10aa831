"""Host (CPU) time of a replica's iterations: how much of it the GPUs wait for, and its booking.

The formulas are simserve.runtime's (pure); this object only remembers when the replica's first
stage last finished a GPU step and how long that step was, since a runtime that overlaps CPU and
GPU hides step n+1's CPU work under GPU step n only when step n ran right before.
"""
from __future__ import annotations

import math

import numpy as np

from simserve.cost.operators import BatchStats
from simserve.runtime import Runtime, exposed_host_s, host_s


class HostClock:
    def __init__(self, env, runtime: Runtime | None, timeline, replica):
        self.env, self.runtime, self.timeline, self.replica = env, runtime, timeline, replica
        self.exposed_s = 0.0            # host seconds the GPUs waited for
        h = runtime.host if runtime is not None else None
        self.active = h is not None and (h.fixed_s > 0 or h.per_seq_s > 0 or h.per_token_s > 0)
        self._gpu_end = -math.inf       # end of the first stage's last GPU step, and its length
        self._gpu_last_s = 0.0
        self._run_host: dict[int, float] = {}   # decode-run sequences -> one step's host seconds

    def _prev(self, now: float) -> float | None:
        return self._gpu_last_s if self._gpu_end == now else None

    def exposed(self, stats: BatchStats, now: float) -> float:
        """The part of the host time of an iteration starting at `now` the GPU waits for (0 without
        a runtime)."""
        if self.runtime is None:
            return 0.0
        return self.exposed_of(host_s(self.runtime, stats), now)

    def exposed_of(self, host: float, now: float) -> float:
        """The exposed part of `host` CPU seconds of an iteration starting at `now` (with a runtime)."""
        return exposed_host_s(self.runtime, host, self._prev(now))

    def take(self, stats: BatchStats, start: float) -> float:
        """The exposed host time of an iteration starting at `start` (now, or a time a coalesced
        pipeline run computes), booked; the GPU work follows it."""
        rt = self.runtime
        if rt is None:
            return 0.0
        host = host_s(rt, stats)
        exposed = self.exposed_of(host, start) if rt.host.overlap else host    # exposed_host_s without overlap
        if exposed > 0:
            self.book(0, start, exposed)
        return exposed

    def decode_run(self, n: int, gpu: np.ndarray):
        """(durations, exposed host per step) of a run of decode steps of n sequences with
        these GPU times: every step after the first follows the previous one back to back."""
        if self.runtime is None:
            return gpu, np.zeros(len(gpu))
        rt = self.runtime
        host = self._run_host.get(n)
        if host is None:
            host = self._run_host[n] = host_s(rt, BatchStats(decode_tokens=n, logits_tokens=n))
        if rt.host.overlap:
            first = exposed_host_s(rt, host, self._prev(self.env.now))
            exposed = np.maximum(host - np.concatenate(([host - first], gpu[:-1])), 0.0)
        else:
            exposed = np.full(len(gpu), host)
        return exposed + gpu, exposed

    def book(self, stage: int, start: float, exposed: float) -> None:
        if exposed > 0:
            self.exposed_s += exposed
            self.timeline.host(self.replica, stage, start, start + exposed)

    def ran(self, start: float, end: float, host: float, last_gpu_s: float) -> float:
        """A decode run from start to end with `host` exposed seconds in all: booked as one stretch at
        its start (then its GPU steps); returns `host`."""
        self.book(0, start, host)
        self.gpu_step(end, last_gpu_s)
        return host

    def gpu_step(self, end: float, duration: float) -> None:
        """The first stage finished a GPU step of `duration` seconds at `end`."""
        self._gpu_end, self._gpu_last_s = end, duration
