"""What one iteration runs: prefill chunks and decoding sequences, and its batch statistics."""
from __future__ import annotations

from dataclasses import dataclass, field

from simserve.cost.operators import BatchStats
from simserve.request import Request
from simserve.scheduler.speculative import spec_stats


@dataclass(slots=True)
class Batch:
    prefills: list[tuple[Request, int]] = field(default_factory=list)   # (request, chunk tokens)
    decodes: list[Request] = field(default_factory=list)
    spec_tokens: int = 0                     # speculative decoding: drafts each decode verifies
    accepted: list[int] | None = None        # speculative decoding: drafts accepted per decode
    # swap preemption (scheduler.swap): (request, blocks) copied to host memory / back before the forward
    swap_out: list[tuple[Request, int]] = field(default_factory=list)
    swap_in: list[tuple[Request, int]] = field(default_factory=list)
    preempted: bool = False                  # a sequence was preempted while this batch was built

    def __bool__(self) -> bool:
        return bool(self.prefills or self.decodes)

    @property
    def swaps(self) -> bool:
        return bool(self.swap_out or self.swap_in)

    @property
    def decode_only(self) -> bool:
        return not self.prefills and bool(self.decodes)

    def stats(self) -> BatchStats:
        if self.spec_tokens and self.decodes:
            return spec_stats(self, self.spec_tokens)
        pairs = 0.0
        pf_kv = 0.0
        pf_tokens = 0
        logits = 0
        for req, chunk in self.prefills:
            cached = req.prefilled
            pairs += chunk * (cached + (chunk + 1) / 2)
            pf_kv += cached + chunk
            pf_tokens += chunk
            if cached + chunk >= req.prefill_target:
                logits += 1
        dec_kv = sum([req.prefilled for req in self.decodes]) + len(self.decodes)   # of prefilled + 1
        return BatchStats(prefill_tokens=pf_tokens, decode_tokens=len(self.decodes),
                          prefill_attn_pairs=pairs, prefill_kv_tokens=pf_kv,
                          decode_kv_tokens=float(dec_kv), logits_tokens=logits + len(self.decodes))
