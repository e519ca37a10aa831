"""The built-in scheduler policies (docs/architecture.md (contracts)), each one registered class.

- ``vllm``: prefill-first (vLLM V0 without chunking): an iteration either prefills newly admitted
  prompts whole, or decodes every running sequence.
- ``orca``: iteration-level batching: running decodes and whole prompts of new requests share an
  iteration, within the token budget.
- ``sarathi``: chunked prefill (Sarathi-Serve, vLLM's chunked prefill): decodes first, then prompt
  chunks fill the rest of a token budget of ``chunk_size`` tokens (capped by max_batched_tokens).
- ``static``: a fixed batch of ``batch_size`` requests is admitted together, prefilled, and decoded
  until all of them finish before the next batch starts, as analytical studies assume.

A new policy is a module with a `Scheduler` subclass registered the same way
(tests/test_registries.py registers one from a test module).
"""
from __future__ import annotations

from simserve.scheduler.base import POLICIES, Scheduler
from simserve.scheduler.batch import Batch


@POLICIES.register("vllm")
class PrefillFirst(Scheduler):
    def schedule(self) -> Batch:
        batch = Batch()
        if not self.swapped:          # vLLM V0 _schedule_default: no new prompt while any is swapped out
            self._admit(batch, budget=self.token_budget)
        if not batch.prefills:
            self._add_decodes(batch)
            self._swap_in(batch, self.token_budget - len(batch.decodes))
        return batch


@POLICIES.register("orca")
class Orca(Scheduler):
    """Decodes and whole new prompts mixed in one iteration."""

    def schedule(self) -> Batch:
        batch = Batch()
        self._add_decodes(batch)
        budget = self._continue_prefills(batch, self.token_budget - len(batch.decodes))
        budget = self._swap_in(batch, budget)     # vLLM V0 chunked: running, then swapped, then waiting
        self._admit(batch, budget=budget)
        return batch


@POLICIES.register("sarathi")
class Sarathi(Orca):
    chunked = True

    def budget(self, max_batched_tokens: int, chunk_size: int) -> int:
        return min(chunk_size, max_batched_tokens)


@POLICIES.register("static")
class Static(Scheduler):
    chunked = True

    def admits_new_arrivals(self) -> bool:
        return False          # a static batch runs to completion before the next one starts

    def schedule(self) -> Batch:
        batch = Batch()
        if not self.running:
            if len(self.waiting) < self.batch_size and self.arrivals_pending():
                return batch           # wait until a full batch has arrived
            self._admit_static()
        self._continue_prefills(batch, self.token_budget)
        if not batch.prefills:
            self._add_decodes(batch)
        return batch

    def _admit_static(self) -> None:
        """Admit the next batch_size requests (as many as the KV cache holds)."""
        while self.waiting and len(self.running) < self.batch_size:
            req = self.waiting[0]
            need, hit, taken = self._need(req)
            if not self.admission.can_admit(req, taken, self.running):
                break
            self._take(req, need, hit)
