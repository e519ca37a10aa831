"""The data-parallel front end: which replica serves an arriving request."""
from __future__ import annotations


import numpy as np

POLICIES = ("round_robin", "least_outstanding", "least_kv", "power_of_two")


class Router:
    def __init__(self, policy: str, replicas: list, rng: np.random.Generator):
        if policy not in POLICIES:
            raise ValueError(f"unknown router policy {policy!r}")
        self.policy = policy
        self.replicas = replicas        # the simulation fills this list after wiring arrivals
        self.rng = rng
        self.next_index = 0

    def choose(self):
        reps = self.replicas
        if len(reps) == 1:
            return reps[0]
        if self.policy == "round_robin":
            rep = reps[self.next_index % len(reps)]
            self.next_index += 1
            return rep
        if self.policy == "least_outstanding":
            return min(reps, key=lambda r: (r.outstanding, r.index))
        if self.policy == "least_kv":
            return min(reps, key=lambda r: (r.kv_load, r.outstanding, r.index))
        a, b = self.rng.choice(len(reps), size=2, replace=False)   # power of two choices
        ra, rb = reps[a], reps[b]
        return ra if (ra.outstanding, ra.index) <= (rb.outstanding, rb.index) else rb

    def dispatch(self, req) -> None:
        self.choose().submit(req)
