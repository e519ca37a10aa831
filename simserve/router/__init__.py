"""The data-parallel front end: which replica serves an arriving request.

Routing policies are functions `choose(router, replicas) -> replica` registered in `ROUTERS`; the
config's allowed values come from it, so a new policy is one function and one registration.
"""
from __future__ import annotations

import numpy as np

from simserve.registry import Registry

ROUTERS = Registry("router policy")


@ROUTERS.register("round_robin")
def round_robin(router, reps):
    rep = reps[router.next_index % len(reps)]
    router.next_index += 1
    return rep


@ROUTERS.register("least_outstanding")
def least_outstanding(router, reps):
    return min(reps, key=lambda r: (r.outstanding, r.index))


@ROUTERS.register("least_kv")
def least_kv(router, reps):
    return min(reps, key=lambda r: (r.kv_load, r.outstanding, r.index))


@ROUTERS.register("power_of_two")
def power_of_two(router, reps):
    """Two replicas drawn at random; the less loaded one wins."""
    a, b = router.rng.choice(len(reps), size=2, replace=False)
    ra, rb = reps[a], reps[b]
    return ra if (ra.outstanding, ra.index) <= (rb.outstanding, rb.index) else rb


class Router:
    def __init__(self, policy: str, replicas: list, rng: np.random.Generator):
        self.policy = policy
        self._choose = ROUTERS.get(policy, "router.policy")
        self.replicas = replicas        # the simulation fills this list after wiring arrivals
        self.rng = rng
        self.next_index = 0

    def choose(self):
        reps = self.replicas
        if len(reps) == 1:
            return reps[0]
        return self._choose(self, reps)

    def dispatch(self, req) -> None:
        self.choose().submit(req)
