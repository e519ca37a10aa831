"""Arrival processes in the simulation: open loop (requests at their stamped times) and closed loop.

Both make each request from the run's RequestBook (simserve.records) when it is sent, hand it to
the router, and tell the replicas when no request is left to arrive. The replica asks
`next_time()` (the earliest time a request may still arrive, to bound a coalesced decode run),
`pending()` (is an arrival scheduled, for a static batch waiting to fill) and calls `done(req)`
when a request finished or was rejected: its outcome goes into the book, each of `watchers` is
told (a probe of `simserve plan` that ends its run once its SLO verdict is decided,
simserve/plan/stop.py), and the request object is let go.
"""
from __future__ import annotations

import heapq
import math

from simserve.engine.env import SimEnvironment
from simserve.records import RequestBook


class Arrivals:
    """Open loop: request i arrives at its `arrival_s`."""

    def __init__(self, env: SimEnvironment, book: RequestBook, router):
        self.env = env
        self.book = book                # sorted by arrival_s
        self.count = len(book)
        self.router = router
        self.index = 0
        self.watchers: list = []        # callables of the request, told of every completion or rejection
        self.process = env.process(self.run())

    def next_time(self) -> float:
        return float(self.book.arrival_s[self.index]) if self.index < self.count else math.inf

    def pending(self) -> bool:
        return self.index < self.count

    def done(self, req) -> None:
        """A request finished or was rejected (open loop: nothing else follows from it)."""
        self.book.record(req)
        for watch in self.watchers:
            watch(req)

    def ended(self) -> None:
        for replica in self.router.replicas:   # a lane holding out for a full static batch runs what it has
            replica.arrivals_ended()

    def run(self):
        env, book = self.env, self.book
        for i in range(self.count):
            req = book.make(i)
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

    def __init__(self, env: SimEnvironment, book: RequestBook, router, concurrency: int, think_time_s: float = 0.0):
        self.concurrency = concurrency
        self.think_time_s = think_time_s
        self._sends: list[float] = []      # scheduled send times (heap)
        self._due = 0                      # sends owed now (think time 0), drained in order
        self._draining = False
        super().__init__(env, book, router)

    def next_time(self) -> float:
        if self.index >= self.count:
            return math.inf
        soonest = self._sends[0] if self._sends else math.inf
        if len(self.router.replicas) > 1:
            return min(soonest, self.env.now + self.think_time_s)
        return soonest

    def pending(self) -> bool:
        return bool(self._sends) and self.index < self.count

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
        while self._due and self.index < self.count:
            self._due -= 1
            req = self.book.make(self.index)
            self.index += 1
            req.arrival_s = self.env.now
            self.router.dispatch(req)
            if self.index == self.count:
                self.ended()
        if self.index >= self.count:
            self._due = 0
        self._draining = False
