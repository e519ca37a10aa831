"""The data-parallel front end: which replica serves an arriving request.

Routing policies are functions `choose(router, replicas, req) -> replica` registered in `ROUTERS`;
the config's allowed values come from it, so a new policy is one function and one registration.
"""
from __future__ import annotations

import numpy as np

from simserve.registry import Registry

ROUTERS = Registry("router policy")


@ROUTERS.register("round_robin")
def round_robin(router, reps, req):
    rep = reps[router.next_index % len(reps)]
    router.next_index += 1
    return rep


@ROUTERS.register("least_outstanding")
def least_outstanding(router, reps, req):
    return min(reps, key=lambda r: (r.outstanding, r.index))


@ROUTERS.register("least_kv")
def least_kv(router, reps, req):
    return min(reps, key=lambda r: (r.kv_load, r.outstanding, r.index))


@ROUTERS.register("power_of_two")
def power_of_two(router, reps, req):
    """Two replicas drawn at random; the less loaded one wins."""
    a, b = router.rng.choice(len(reps), size=2, replace=False)
    ra, rb = reps[a], reps[b]
    return ra if (ra.outstanding, ra.index) <= (rb.outstanding, rb.index) else rb


@ROUTERS.register("prefix_affinity")
def prefix_affinity(router, reps, req):
    """SGLang's cache-aware rule (sgl-model-gateway src/policies/cache_aware.rs), reading each
    replica's actual cache (scheduler.prefix_caching) where SGLang keeps an approximate tree of what
    it sent: when the replicas' loads (outstanding requests) are imbalanced (max - min above
    `balance_abs_threshold` and max above `balance_rel_threshold` x min) the least loaded wins;
    otherwise the replica caching most of the prompt's blocks, if that share exceeds
    `cache_threshold`, else the least loaded. (SGLang then picks the worker with the smallest
    approximate tree, which it grows as it routes; a replica's real cache grows only when the
    prompt is scheduled, so the smallest cache would take a whole burst of new prompts.)"""
    loads = [r.outstanding for r in reps]
    most, least = max(loads), min(loads)
    if most - least > router.balance_abs_threshold and most > router.balance_rel_threshold * least:
        return least_outstanding(router, reps, req)
    cached = [r.kv.prefix.cached_blocks(req) for r in reps]
    best = max(range(len(reps)), key=lambda i: (cached[i], -loads[i], -i))
    blocks = -(-req.isl // reps[0].kv.block_size)
    if cached[best] > router.cache_threshold * blocks:
        return reps[best]
    return least_outstanding(router, reps, req)


class Router:
    def __init__(self, policy: str, replicas: list, rng: np.random.Generator, *, cache_threshold: float = 0.3,
                 balance_abs_threshold: int = 64, balance_rel_threshold: float = 1.5):
        self.policy = policy
        # prefix_affinity: SGLang Model Gateway's defaults (docs: --cache-threshold 0.3,
        # --balance-abs-threshold 64, --balance-rel-threshold 1.5)
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold
        self._choose = ROUTERS.get(policy, "router.policy")
        self.replicas = replicas        # the simulation fills this list after wiring arrivals
        self.rng = rng
        self.next_index = 0

    def choose(self, req=None):
        reps = self.replicas
        if len(reps) == 1:
            return reps[0]
        return self._choose(self, reps, req)

    def dispatch(self, req) -> None:
        self.choose(req).submit(req)
