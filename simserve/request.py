"""A request's state as it moves through a replica, with the timestamps metrics are made of.

Its own module (layer 1, no SimPy): the scheduler, the KV cache, the engine and the metrics all
import it, and none of them import each other through it."""
from __future__ import annotations

import math


class Request:
    __slots__ = ("id", "arrival_s", "isl", "osl", "prefix_hashes", "replica", "lane", "prefilled", "generated",
                 "blocks", "prefill_target", "scheduled_s", "first_token_s", "last_token_s", "finish_s", "itl_max_s",
                 "preemptions", "reject_reason", "block_keys", "cached_keys",
                 "cached_upto", "accept_prob")

    def __init__(self, rid: int, arrival_s: float, isl: int, osl: int, prefix_hashes=None):
        self.id = rid
        self.arrival_s = arrival_s
        self.isl = isl
        self.osl = osl
        self.prefix_hashes = prefix_hashes
        self.replica = -1
        self.lane = 0               # which of the replica's schedulers (pipeline lanes) holds it
        self.prefilled = 0          # tokens whose KV is computed (prompt, plus generated ones after a preemption)
        self.generated = 0          # output tokens emitted
        self.blocks = 0             # KV blocks held
        self.prefill_target = isl   # tokens to prefill before the next token is sampled
        self.scheduled_s = math.nan  # first admission into a running batch
        self.first_token_s = math.nan
        self.last_token_s = math.nan
        self.finish_s = math.nan
        self.itl_max_s = 0.0
        self.preemptions = 0
        self.reject_reason = ""
        self.block_keys = None      # prefix caching: keys of the prompt's shareable blocks (kvcache.prefix)
        self.cached_keys = ()       # prefix caching: keys of the cached blocks it holds
        self.cached_upto = 0        # prefix caching: leading blocks hit or offered to the cache
        self.accept_prob = 0.0      # speculative decoding: probability a draft token is accepted

    def preempt(self) -> None:
        """Recompute preemption (vLLM): the KV is dropped; on readmission the prompt and every token
        generated so far are prefilled again, and that prefill samples the next token."""
        self.prefilled = 0
        self.blocks = 0
        self.prefill_target = self.isl + self.generated
        self.preemptions += 1

    @property
    def remaining_prefill(self) -> int:
        return self.prefill_target - self.prefilled

    @property
    def in_decode(self) -> bool:
        return self.prefilled >= self.prefill_target

    @property
    def context(self) -> int:
        """Tokens in the KV cache once this iteration's token is appended."""
        return self.prefilled + 1

    @property
    def done(self) -> bool:
        return self.generated >= self.osl
