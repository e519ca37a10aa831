"""One model replica: its scheduler, KV cache and the iteration loop, as a SimPy process.

The loop reads as the story it tells: schedule a batch, spend the iteration's time, emit tokens.
Runs of decode-only iterations in which the batch cannot change (no arrival can join, nobody
finishes, KV blocks suffice) are advanced as one event: their times are a cumulative sum computed
in closed form, with the same floating-point operations as stepping them one by one, so the
results are identical (tests/test_engine.py checks it) and far fewer events are needed.
"""
from __future__ import annotations

import math

import numpy as np

from simserve.engine.env import SimEnvironment
from simserve.engine.request import Request
from simserve.kvcache import blocks_for
from simserve.scheduler import Batch, Scheduler


class TokenLog:
    """Inter-token gaps: single gaps, and gaps shared by every sequence of a decode run."""

    def __init__(self):
        self.single: list[float] = []
        self.shared: list[tuple[np.ndarray, int]] = []

    def all_gaps(self) -> np.ndarray:
        parts = [np.asarray(self.single, dtype=float)]
        parts += [np.repeat(gaps, weight) for gaps, weight in self.shared]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0)


class Replica:
    def __init__(self, env: SimEnvironment, index: int, scheduler: Scheduler, iteration, arrivals,
                 coalesce_decode: bool = True):
        self.env = env
        self.index = index
        self.scheduler = scheduler
        self.iteration = iteration          # engine.iteration.IterationModel: time and accounting
        self.arrivals = arrivals            # engine.arrivals.Arrivals: next_time(), pending()
        self.coalesce_decode = coalesce_decode
        self.tokens = TokenLog()
        self.completed: list[Request] = []
        self.rejected: list[Request] = []
        self.iterations = 0
        self.tokens_emitted = 0
        self._wake = env.event()
        self._sleeping = False
        self.process = env.process(self.run())

    # -- router side ---------------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return len(self.scheduler.waiting) + len(self.scheduler.running)

    @property
    def kv_load(self) -> float:
        return self.scheduler.kv.used / self.scheduler.kv.num_blocks

    def submit(self, req: Request) -> None:
        req.replica = self.index
        reason = self.scheduler.never_fits(req)
        if reason:
            req.reject_reason = reason
            self.rejected.append(req)
            return
        self.scheduler.add(req)
        if self._sleeping:
            self._sleeping = False
            self._wake.succeed()

    # -- the loop ------------------------------------------------------------------------------
    def run(self):
        env = self.env
        while True:
            batch = self.scheduler.schedule()
            if not batch:
                self._sleeping = True
                yield self._wake
                self._wake = env.event()
                continue
            for req, _ in batch.prefills:
                if math.isnan(req.scheduled_s):
                    req.scheduled_s = env.now
            if batch.decode_only and self.coalesce_decode:
                yield from self._decode_run(batch.decodes)
                continue
            duration = self.iteration.time(batch.stats())
            end = env.now + duration
            yield env.at(end)
            self.iterations += 1
            self.iteration.account(duration)
            self._finish(batch, end)

    def _finish(self, batch: Batch, end: float) -> None:
        for req, chunk in batch.prefills:
            req.prefilled += chunk
            if req.prefilled >= req.prefill_target:
                self._emit(req, end)
        for req in batch.decodes:
            req.prefilled += 1
            self._emit(req, end)

    def _emit(self, req: Request, t: float) -> None:
        if req.generated == 0:
            req.first_token_s = t
        else:
            gap = t - req.last_token_s
            self.tokens.single.append(gap)
            if gap > req.itl_max_s:
                req.itl_max_s = gap
        req.generated += 1
        self.tokens_emitted += 1
        req.last_token_s = t
        if req.generated >= req.osl:
            self._complete(req, t)

    def _complete(self, req: Request, t: float) -> None:
        req.finish_s = t
        self.scheduler.release(req)
        self.completed.append(req)

    # -- coalesced decode runs -----------------------------------------------------------------
    def _decode_run(self, running: list[Request]):
        """Advance k decode-only iterations as one event (k >= 1); see the module docstring."""
        env, sched = self.env, self.scheduler
        bs = sched.kv.block_size
        n = len(running)
        prefilled = np.fromiter((r.prefilled for r in running), dtype=np.int64, count=n)
        held = np.fromiter((r.blocks for r in running), dtype=np.int64, count=n)
        k_max = min(r.osl - r.generated for r in running)
        free = sched.kv.free

        def extra_blocks(k: int) -> int:   # blocks needed beyond those held, after k steps
            return int(np.maximum(-(-(prefilled + k) // bs) - held, 0).sum())

        if extra_blocks(k_max) > free:     # largest k whose growth fits (monotone in k)
            lo, hi = 1, k_max
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if extra_blocks(mid) <= free:
                    lo = mid
                else:
                    hi = mid - 1
            k_max = lo
        kv_start = float(prefilled.sum() + n)
        cap_by_arrival = sched.admits_new_arrivals()
        next_arrival = self.arrivals.next_time() if cap_by_arrival else math.inf
        if cap_by_arrival and k_max > 1 and next_arrival < math.inf:
            # step times never shrink as contexts grow, so the first step's time bounds how many
            # steps fit before the next arrival: evaluate only those
            first_step_s = float(self.iteration.decode_times(n, kv_start, 1)[0])
            k_max = min(k_max, int((next_arrival - env.now) / first_step_s) + 2)
        durations = self.iteration.decode_times(n, kv_start, k_max)
        ends = np.cumsum(np.concatenate(([env.now], durations)))[1:]
        k = k_max
        if cap_by_arrival:
            k = min(k, int(np.searchsorted(ends, next_arrival, side="left")) + 1)
        end = float(ends[k - 1])
        yield env.at(end)
        self.iterations += k
        self.iteration.account(durations[:k])
        sched.kv.allocate(extra_blocks(k))
        shared = np.diff(ends[:k])
        shared_max = float(shared.max()) if k > 1 else 0.0
        if k > 1:
            self.tokens.shared.append((shared, n))
        self.tokens_emitted += k * n
        first_end = float(ends[0])
        single = self.tokens.single
        for req in running:
            gap = first_end - req.last_token_s
            single.append(gap)
            req.itl_max_s = max(req.itl_max_s, gap, shared_max)
            req.prefilled += k
            req.blocks = blocks_for(req.prefilled, bs)
            req.generated += k
            req.last_token_s = end
            if req.generated >= req.osl:
                self._complete(req, end)
