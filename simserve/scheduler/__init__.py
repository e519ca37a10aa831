"""Which requests run in the next iteration: continuous-batching policies over a paged KV cache.

Policies (DESIGN.md section 3):
- ``vllm``: prefill-first (vLLM V0 without chunking): an iteration either prefills newly admitted
  prompts whole, or decodes every running sequence.
- ``orca``: iteration-level batching: running decodes and whole prompts of new requests share an
  iteration, within the token budget.
- ``sarathi``: chunked prefill (Sarathi-Serve, vLLM's chunked prefill): decodes first, then prompt
  chunks fill the rest of a token budget of ``chunk_size`` tokens (capped by max_batched_tokens).
- ``static``: a fixed batch of ``batch_size`` requests is admitted together, prefilled, and decoded
  until all of them finish before the next batch starts, as analytical studies assume.

KV blocks for a prompt are allocated in full when it is admitted (so a prefill never stalls half
way), and one block at a time as decodes cross block boundaries. When a decode cannot get a block,
the most recently admitted request is preempted by recompute (vLLM's default).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from simserve.cost.operators import BatchStats
from simserve.engine.request import Request
from simserve.kvcache import BlockManager, blocks_for

POLICIES = ("vllm", "sarathi", "orca", "static")


@dataclass
class Batch:
    prefills: list[tuple[Request, int]] = field(default_factory=list)   # (request, chunk tokens)
    decodes: list[Request] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.prefills or self.decodes)

    @property
    def decode_only(self) -> bool:
        return not self.prefills and bool(self.decodes)

    def stats(self) -> BatchStats:
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
        dec_kv = 0
        for req in self.decodes:
            dec_kv += req.prefilled + 1
        return BatchStats(prefill_tokens=pf_tokens, decode_tokens=len(self.decodes),
                          prefill_attn_pairs=pairs, prefill_kv_tokens=pf_kv,
                          decode_kv_tokens=float(dec_kv), logits_tokens=logits + len(self.decodes))


class Scheduler:
    def __init__(self, policy: str, kv: BlockManager, *, max_batch_size: int, max_batched_tokens: int,
                 chunk_size: int, batch_size: int, arrivals_pending: Callable[[], bool] = lambda: False):
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        self.policy = policy
        self.kv = kv
        self.max_batch_size = max_batch_size
        self.token_budget = min(chunk_size, max_batched_tokens) if policy == "sarathi" else max_batched_tokens
        self.batch_size = batch_size
        self.arrivals_pending = arrivals_pending
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.preemptions = 0

    # -- queue ---------------------------------------------------------------------------------
    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def never_fits(self, req: Request) -> str:
        """A reason if the request can never be served here (its full context exceeds the cache)."""
        need = blocks_for(req.isl + req.osl - 1, self.kv.block_size)
        if need > self.kv.num_blocks - self.kv.watermark_blocks:
            return (f"needs {req.isl + req.osl - 1} KV tokens ({need} blocks), more than the "
                    f"replica's cache of {self.kv.capacity_tokens} tokens")
        return ""

    def admits_new_arrivals(self) -> bool:
        """Could a request arriving now join the next iteration? Not while a static batch runs,
        nor while others wait ahead of it (FCFS) or the batch is at its size cap."""
        return self.policy != "static" and not self.waiting and len(self.running) < self.max_batch_size

    # -- one iteration -------------------------------------------------------------------------
    def schedule(self) -> Batch:
        batch = Batch()
        if self.policy == "static":
            if not self.running:
                if len(self.waiting) < self.batch_size and self.arrivals_pending():
                    return batch           # wait until a full batch has arrived
                self._admit_static()
            self._continue_prefills(batch, self.token_budget)
            if not batch.prefills:
                self._add_decodes(batch)
            return batch
        if self.policy == "vllm":
            self._admit(batch, budget=self.token_budget)
            if not batch.prefills:
                self._add_decodes(batch)
            return batch
        # orca and sarathi: decodes and prefills mixed in one iteration
        self._add_decodes(batch)
        budget = self._continue_prefills(batch, self.token_budget - len(batch.decodes))
        self._admit(batch, budget=budget)
        return batch

    @property
    def chunked(self) -> bool:
        return self.policy in ("sarathi", "static")

    def _continue_prefills(self, batch: Batch, budget: int) -> int:
        """Admitted requests whose prompt is partly prefilled get their next chunk (chunked
        policies only: the others prefill a prompt whole in the iteration that admits it)."""
        if not self.chunked:
            return budget
        for req in self.running:
            if budget <= 0:
                break
            if req.in_decode:
                continue
            chunk = min(req.remaining_prefill, budget)
            batch.prefills.append((req, chunk))
            budget -= chunk
        return budget

    def _admit(self, batch: Batch, budget: int) -> None:
        """Admit waiting requests first-come first-served while batch size, tokens and KV allow.
        A prompt longer than the whole budget still runs alone (unchunked policies), or in chunks."""
        while self.waiting and len(self.running) < self.max_batch_size and budget > 0:
            req = self.waiting[0]
            need = blocks_for(req.prefill_target, self.kv.block_size)
            if not self.kv.can_admit(need):
                break
            tokens = req.remaining_prefill
            if self.chunked:
                tokens = min(tokens, budget)
            elif tokens > budget and batch:
                break
            self.waiting.popleft()
            self.kv.allocate(need)
            req.blocks = need
            self.running.append(req)
            batch.prefills.append((req, tokens))
            budget -= tokens

    def _admit_static(self) -> None:
        """static: admit the next batch_size requests (as many as the KV cache holds)."""
        while self.waiting and len(self.running) < self.batch_size:
            req = self.waiting[0]
            need = blocks_for(req.prefill_target, self.kv.block_size)
            if not self.kv.can_admit(need):
                break
            self.waiting.popleft()
            self.kv.allocate(need)
            req.blocks = need
            self.running.append(req)

    def _add_decodes(self, batch: Batch) -> None:
        """Every running sequence in its decode phase decodes one token; grow KV, preempting the
        most recently admitted requests when blocks run out."""
        bs = self.kv.block_size
        i = 0
        while i < len(self.running):
            req = self.running[i]
            if not req.in_decode:
                i += 1
                continue
            need = blocks_for(req.prefilled + 1, bs) - req.blocks
            while need > 0 and not self.kv.can_grow(need):
                victim = self.running[-1]
                self._preempt(victim, batch)
                if victim is req:
                    break
            if req not in self.running:
                break
            if need > 0:
                self.kv.allocate(need)
                req.blocks += need
            batch.decodes.append(req)
            i += 1

    def _preempt(self, victim: Request, batch: Batch) -> None:
        self.running.remove(victim)
        if victim in batch.decodes:
            batch.decodes.remove(victim)
        self.kv.release(victim.blocks)
        victim.preempt()
        self.preemptions += 1
        self.waiting.appendleft(victim)

    # -- after an iteration --------------------------------------------------------------------
    def release(self, req: Request) -> None:
        self.running.remove(req)
        self.kv.release(req.blocks)
        req.blocks = 0
