"""The arrival process: hands each request to the router at its arrival time."""
from __future__ import annotations

import math

from simserve.engine.env import SimEnvironment


class Arrivals:
    def __init__(self, env: SimEnvironment, requests: list, router):
        self.env = env
        self.requests = requests        # sorted by arrival_s
        self.router = router
        self.index = 0
        self.process = env.process(self.run())

    def next_time(self) -> float:
        return self.requests[self.index].arrival_s if self.index < len(self.requests) else math.inf

    def pending(self) -> bool:
        return self.index < len(self.requests)

    def run(self):
        env = self.env
        for req in self.requests:
            if req.arrival_s > env.now:
                yield env.at(req.arrival_s)
            self.index += 1
            self.router.dispatch(req)
        for replica in self.router.replicas:   # a lane holding out for a full static batch runs what it has
            replica.arrivals_ended()
