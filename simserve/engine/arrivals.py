"""Arrival processes in the simulation: open loop (requests at their stamped times) and closed loop.

Both hand each request to the router and tell the replicas when no request is left to arrive. The
replica asks `next_time()` (the earliest time a request may still arrive, to bound a coalesced
decode run), `pending()` (is an arrival scheduled, for a static batch waiting to fill) and calls
`done(req)` when a request finished or was rejected; `done` also tells each of `watchers` (a
probe of `simserve plan` that ends its run once its SLO verdict is decided, simserve/plan/stop.py).
"""
from __future__ import annotations

import heapq
import math

from simserve.engine.env import SimEnvironment


class Arrivals:
    """Open loop: request i arrives at its `arrival_s`."""

    def __init__(self, env: SimEnvironment, requests: list, router):
        self.env = env
        self.requests = requests        # sorted by arrival_s
        self.router = router
        self.index = 0
        self.watchers: list = []        # callables of the request, told of every completion or rejection
        self.process = env.process(self.run())

    def next_time(self) -> float:
        return self.requests[self.index].arrival_s if self.index < len(self.requests) else math.inf

    def pending(self) -> bool:
        return self.index < len(self.requests)

    def done(self, req) -> None:
        """A request finished or was rejected (open loop: nothing else follows from it)."""
        for watch in self.watchers:
            watch(req)

    def ended(self) -> None:
        for replica in self.router.replicas:   # a lane holding out for a full static batch runs what it has
            replica.arrivals_ended()

    def run(self):
        env = self.env
        for req in self.requests:
            if req.arrival_s > env.now:
                yield env.at(req.arrival_s)
            self.index += 1
            self.router.dispatch(req)
        self.ended()


class ClosedLoop(Arrivals):
    """`concurrency` clients (vLLM benchmark_serving --max-concurrency, genai-perf --concurrency):
    each sends a request at t = 0, then its next one `think_time_s` after the previous one finished
    or was refused. Requests are sent in list order; a request's `arrival_s` becomes its send time,
    so TTFT and E2E count from the send, as those clients measure them.

    `next_time()` is exact with one replica: a send can only follow a completion there, which ends
    any coalesced decode run. With several replicas a completion elsewhere may send at any moment,
    so it answers now + think_time_s (no run is coalesced past a possible send)."""

    def __init__(self, env: SimEnvironment, requests: list, router, concurrency: int, think_time_s: float = 0.0):
        self.concurrency = concurrency
        self.think_time_s = think_time_s
        self._sends: list[float] = []      # scheduled send times (heap)
        self._due = 0                      # sends owed now (think time 0), drained in order
        self._draining = False
        super().__init__(env, requests, router)

    def next_time(self) -> float:
        if self.index >= len(self.requests):
            return math.inf
        soonest = self._sends[0] if self._sends else math.inf
        if len(self.router.replicas) > 1:
            return min(soonest, self.env.now + self.think_time_s)
        return soonest

    def pending(self) -> bool:
        return bool(self._sends) and self.index < len(self.requests)

    def run(self):
        self._due += self.concurrency
        self._drain()
        yield from ()

    def done(self, req) -> None:
        super().done(req)
        if self.think_time_s > 0:
            t = self.env.now + self.think_time_s
            heapq.heappush(self._sends, t)
            self.env.at(t).callbacks.append(self._send_scheduled)
            return
        self._due += 1
        self._drain()

    def _send_scheduled(self, _event) -> None:
        heapq.heappop(self._sends)
        self._due += 1
        self._drain()

    def _drain(self) -> None:
        """Send what is owed; a refused request frees its client at once, so loop, not recurse."""
        if self._draining:
            return
        self._draining = True
        while self._due and self.index < len(self.requests):
            self._due -= 1
            req = self.requests[self.index]
            self.index += 1
            req.arrival_s = self.env.now
            self.router.dispatch(req)
            if self.index == len(self.requests):
                self.ended()
        if self.index >= len(self.requests):
            self._due = 0
        self._draining = False
