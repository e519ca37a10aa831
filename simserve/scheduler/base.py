"""The continuous-batching machinery every scheduler policy shares: queues, admission, KV growth.

A policy (simserve.scheduler.policies) decides what one iteration holds; this base class admits
waiting requests in FCFS order as the admission policy (simserve.scheduler.admission) allows,
grows decoding sequences' KV one block at a time, and preempts when blocks run out: by recompute, or
by swapping the victim's blocks to host memory when the replica has a swap space
(simserve.scheduler.swap documents the rules, after vLLM V0).
KV blocks for a prompt are allocated in full when it is admitted (so a prefill never stalls half
way). `Scheduler(policy, kv, ...)` builds the registered policy's class.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from simserve.kvcache import BlockManager, blocks_for
from simserve.registry import Registry
from simserve.request import Request
from simserve.scheduler.admission import ADMISSIONS
from simserve.scheduler.batch import Batch

POLICIES: Registry[type["Scheduler"]] = Registry("scheduler policy")


class Scheduler:
    """Base of every policy. Subclasses set `chunked` and implement `schedule()`."""
    chunked = False          # prompts may be split over iterations (a budget-limited chunk each)

    def __new__(cls, policy: str = "", *args, **kwargs):
        if cls is Scheduler:
            cls = POLICIES.get(policy, "scheduler.policy")
        return super().__new__(cls)

    def __init__(self, policy: str, kv: BlockManager, *, max_batch_size: int, max_batched_tokens: int,
                 chunk_size: int, batch_size: int, arrivals_pending: Callable[[], bool] = lambda: False,
                 admission: str = "vllm"):
        self.policy = policy
        self.kv = kv
        self.max_batch_size = max_batch_size
        self.token_budget = self.budget(max_batched_tokens, chunk_size)
        self.batch_size = batch_size
        self.arrivals_pending = arrivals_pending
        self.admission = ADMISSIONS.get(admission, "scheduler.admission")(kv)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.preemptions = 0
        self.speculation = None   # scheduler.speculative.Speculation when decodes speculate
        self.swap = None          # scheduler.swap.SwapSpace when preemption swaps to host memory
        self.swapped: deque[Request] = deque()     # swapped out, first out first back in

    def budget(self, max_batched_tokens: int, chunk_size: int) -> int:
        """Tokens one iteration may hold."""
        return max_batched_tokens

    def schedule(self) -> Batch:
        raise NotImplementedError

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
        """Could a request arriving now join the next iteration? Not while others wait ahead of it
        (FCFS) or the batch is at its size cap."""
        return not self.waiting and len(self.running) < self.max_batch_size

    # -- building blocks of an iteration -------------------------------------------------------
    def _continue_prefills(self, batch: Batch, budget: int) -> int:
        """Admitted requests whose prompt is partly prefilled get their next chunk (chunked
        policies only: the others prefill a prompt whole in the iteration that admits it)."""
        if not self.chunked or len(batch.decodes) == len(self.running):
            return budget               # (the batch's decodes are running: then all are decoding)
        for req in [r for r in self.running if r.prefilled < r.prefill_target]:
            if budget <= 0:
                break
            chunk = min(req.remaining_prefill, budget)
            batch.prefills.append((req, chunk))
            if self.kv.prefix is not None:
                self.kv.prefix.scheduled(req, req.prefilled + chunk)
            budget -= chunk
        return budget

    def _need(self, req: Request) -> tuple[int, int, int]:
        """(blocks the prompt needs, of them cached, blocks its admission takes from the free
        count): cached blocks held by running requests are shared, evictable ones are free."""
        need = blocks_for(req.prefill_target, self.kv.block_size)
        if self.kv.prefix is None:
            return need, 0, need
        hit, revive = self.kv.prefix.lookup(req)
        return need, hit, need - hit + revive

    def _take(self, req: Request, need: int, hit: int = 0) -> None:
        self.waiting.popleft()
        if self.kv.prefix is not None:
            self.kv.prefix.acquire(req, need, hit)
        self.kv.allocate(need - hit)
        req.blocks = need
        self.admission.admitted(req)
        self.running.append(req)

    def _free(self, req: Request) -> None:
        """Return the request's blocks (a cached block others hold, or that stays cached, is kept)."""
        self.kv.release(req.blocks if self.kv.prefix is None else self.kv.prefix.release(req))

    def _admit(self, batch: Batch, budget: int) -> None:
        """Admit waiting requests first-come first-served while batch size, tokens and KV allow.
        A prompt longer than the whole budget still runs alone (unchunked policies), or in chunks."""
        while self.waiting and len(self.running) < self.max_batch_size and budget > 0:
            req = self.waiting[0]
            need, hit, taken = self._need(req)
            if not self.admission.can_admit(req, taken, self.running):
                break
            tokens = req.remaining_prefill - hit * self.kv.block_size
            if self.chunked:
                tokens = min(tokens, budget)
            elif tokens > budget and batch:
                break
            self._take(req, need, hit)
            batch.prefills.append((req, tokens))
            if self.kv.prefix is not None:
                self.kv.prefix.scheduled(req, req.prefilled + tokens)
            budget -= tokens

    def _add_decodes(self, batch: Batch) -> None:
        """Every running sequence in its decode phase decodes one token; grow KV, preempting the
        most recently admitted requests when blocks run out. A pass does Python work only for the
        sequences whose next token opens a block (about one in block_size): when their blocks fit
        in the free ones nobody can be preempted, and allocating them in running order is what
        the step-by-step rule (`_add_decodes_stepwise`) does."""
        if self.speculation is not None:
            self._add_decodes_stepwise(batch)       # the lookahead varies per sequence and step
            return
        bs = self.kv.block_size
        decodes = [r for r in self.running if r.prefilled >= r.prefill_target]
        growing = [r for r in decodes if r.prefilled >= r.blocks * bs]     # prefilled + 1 > blocks * bs
        if growing:
            needs = [blocks_for(r.prefilled + 1, bs) - r.blocks for r in growing]
            if sum(needs) > self.kv.free:
                self._add_decodes_stepwise(batch)   # someone may be preempted
                return
            for req, need in zip(growing, needs):
                self.kv.allocate(need)
                req.blocks += need
        batch.decodes += decodes

    def _add_decodes_stepwise(self, batch: Batch) -> None:
        """_add_decodes one sequence at a time in running order, preempting from the end."""
        bs = self.kv.block_size
        spec = self.speculation
        i = 0
        while i < len(self.running):
            req = self.running[i]
            if not req.in_decode:
                i += 1
                continue
            need = blocks_for(req.prefilled + 1 + (spec.lookahead(req) if spec else 0), bs) - req.blocks
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
        if spec is not None and batch.decodes:
            batch.spec_tokens = spec.tokens
            batch.accepted = spec.draw(batch.decodes)

    def _preempt(self, victim: Request, batch: Batch) -> None:
        if not self.admission.preempts:
            raise RuntimeError(f"{type(self.admission).__name__} admission ran out of KV blocks "
                               f"({self.kv.used} used, {self.kv.reserved} reserved of {self.kv.num_blocks})")
        self.running.remove(victim)
        if victim in batch.decodes:
            batch.decodes.remove(victim)
        self._free(victim)
        self.admission.released(victim)
        self.preemptions += 1
        batch.preempted = True
        if self.swap is not None and self.swap.fits(victim.blocks):
            self.swap.take(victim.blocks)          # its KV goes to host memory; computed tokens kept
            batch.swap_out.append((victim, victim.blocks))
            victim.preemptions += 1
            self.swapped.append(victim)
            return
        if self.swap is not None:
            self.swap.recompute_fallbacks += 1
        victim.preempt()
        self.waiting.appendleft(victim)

    def _swap_in(self, batch: Batch, budget: int) -> int:
        """Swapped sequences come back first-out first-in while their blocks (plus this step's
        growth) fit above the watermark and the batch has room; none in a step that preempted."""
        if self.swap is None or batch.preempted:
            return budget
        bs = self.kv.block_size
        while self.swapped and len(self.running) < self.max_batch_size and budget > 0:
            req = self.swapped[0]
            tokens = 1 if req.in_decode else min(req.remaining_prefill, budget)   # mid-prefill: chunked only
            grow = blocks_for(req.prefilled + 1, bs) - req.blocks if req.in_decode else 0
            if not self.kv.can_admit(req.blocks + grow):
                break
            self.swapped.popleft()
            self.swap.give(req.blocks)
            batch.swap_in.append((req, req.blocks))
            req.blocks += grow
            self.kv.allocate(req.blocks)
            self.admission.admitted(req)
            self.running.append(req)
            if req.in_decode:
                batch.decodes.append(req)
            else:
                batch.prefills.append((req, tokens))
            budget -= tokens
        return budget

    # -- after an iteration --------------------------------------------------------------------
    def release(self, req: Request) -> None:
        self.running.remove(req)
        self._free(req)
        self.admission.released(req)
        req.blocks = 0
        req.block_keys = None
