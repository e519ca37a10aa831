"""One model replica: its scheduler, KV cache, pipeline stages and the iteration loop (SimPy).

With one pipeline stage the loop reads as the story it tells: schedule a batch, spend the
iteration's time, emit tokens. Runs of decode-only iterations in which the batch cannot change (no
arrival can join, nobody finishes, KV blocks suffice) are advanced as one event: their times are a
cumulative sum computed with the same floating-point operations as stepping them one by one, so
the results are identical (tests/test_engine.py checks it) with far fewer events.

With several stages the loop is `engine/pipeline.PipelineLoop` (a mixin whose state `Replica`
holds).
"""
from __future__ import annotations

import math

import numpy as np

from simserve.engine.env import SimEnvironment
from simserve.engine.host import HostClock
from simserve.engine.pipeline import PipelineLoop
from simserve.engine.tokens import TokenLog
from simserve.engine.request import Request
from simserve.engine.stage import Stage
from simserve.kvcache import steps_that_fit
from simserve.runtime import Runtime
from simserve.scheduler import Batch, Scheduler


class Replica(PipelineLoop):
    def __init__(self, env: SimEnvironment, index: int, schedulers: list[Scheduler], stages: list[Stage],
                 arrivals, network=None, *, coalesce_decode: bool = True, p2p_bytes_per_token: float = 0.0,
                 token_id_bytes: float = 4.0, timeline=None, fast_transfers: bool = True,
                 closed_pipeline: bool = False, runtime: Runtime | None = None):
        self.env = env
        self.host = HostClock(env, runtime, timeline, self)   # host (CPU) time per iteration
        self.index = index
        self.schedulers = schedulers        # one lane per scheduler, sharing one KV block pool
        self.scheduler = schedulers[0]
        self.kv = schedulers[0].kv
        self.stages = stages
        self.arrivals = arrivals            # engine.arrivals.Arrivals: next_time(), pending()
        self.network = network
        self.coalesce_decode = coalesce_decode and len(stages) == 1 and stages[0].closed_form
        self.p2p_bytes_per_token = p2p_bytes_per_token
        self.token_id_bytes = token_id_bytes
        self.tokens = TokenLog()
        self.timeline = timeline            # engine.timeline.Timeline
        self.fast_transfers = fast_transfers
        self.closed_pipeline = closed_pipeline and len(stages) > 1 and all(st.closed_form for st in stages)
        self.swapper = None                 # engine.swap.KvSwapper when preemption swaps to host memory
        self.coalesce_pipeline = coalesce_decode and self.closed_pipeline   # engine/pipeline_run
        self.iterations = 0
        self.tokens_emitted = 0
        self._init_pipeline(len(stages))
        self._wake = env.event()
        self._sleeping = False
        self.process = env.process(self.run() if len(stages) == 1 else self.run_pipeline())

    # -- router side ---------------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return sum(len(s.waiting) + len(s.running) + len(s.swapped) for s in self.schedulers)

    @property
    def kv_load(self) -> float:
        return self.kv.used / self.kv.num_blocks

    @property
    def preemptions(self) -> int:
        return sum(s.preemptions for s in self.schedulers)

    def submit(self, req: Request) -> None:
        req.replica = self.index
        reason = self.scheduler.never_fits(req)
        if reason:
            req.reject_reason = reason
            self.arrivals.done(req)
            return
        req.lane = min(range(len(self.schedulers)),
                       key=lambda i: len(self.schedulers[i].waiting) + len(self.schedulers[i].running))
        self.schedulers[req.lane].add(req)
        self._wakeup()

    def arrivals_ended(self) -> None:
        """The last request has arrived (here or elsewhere): re-schedule, so a lane waiting for a
        full static batch admits what it holds instead of sleeping through the end of the run."""
        self._wakeup()

    def _wakeup(self) -> None:
        if self._sleeping:
            self._sleeping = False
            self._wake.succeed()

    def _sleep(self):
        self._sleeping = True
        yield self._wake
        self._wake = self.env.event()

    def _mark_scheduled(self, batch: Batch) -> None:
        for req, _ in batch.prefills:
            if math.isnan(req.scheduled_s):
                req.scheduled_s = self.env.now

    # -- one stage -----------------------------------------------------------------------------
    def run(self):
        env, stage = self.env, self.stages[0]
        while True:
            batch = self.scheduler.schedule()
            if not batch:
                yield from self._sleep()
                continue
            self._mark_scheduled(batch)
            # a decode run swaps nothing: not after a step that swapped, nor after one that preempted
            # while sequences are swapped out (it tried no swap-in; others fail all run: blocks only grow)
            swap_pending = batch.swaps or (batch.preempted and self.scheduler.swapped)
            if batch.decode_only and self.coalesce_decode and not swap_pending:
                yield from self._decode_run(batch.decodes)
                continue
            stats = batch.stats()
            start = env.now
            exposed = self.host.take(stats, start)
            if batch.swaps:                        # KV copies after the host work, before the forward
                exposed += yield from self.swapper.copy(batch, start + exposed)
            if stage.closed_form:
                duration = stage.time(stats)
                end = start + (exposed + duration)   # as a decode run sums it (exactness)
                yield env.at(end)
                split = stage.account((stats.tokens, stats.logits_tokens), duration)
            else:
                if start + exposed > env.now:        # (a played swap has waited already)
                    yield env.at(start + exposed)
                gpu_start = env.now
                split = yield from stage.execute(stats)
                end = env.now
                duration = end - gpu_start
            self.host.gpu_step(end, duration)
            self.iterations += 1
            self._finish(batch, end)
            self.timeline.iteration(self, 0, start + exposed, end, 1, stats.prefill_tokens, stats.decode_tokens, split)

    def _finish(self, batch: Batch, end: float) -> None:
        for req, chunk in batch.prefills:
            req.prefilled += chunk
            if req.prefilled >= req.prefill_target:
                self._emit(req, end)
        if batch.decodes:
            self._emit_decodes(batch.decodes, end)
        self.tokens.bound()

    def _emit_decodes(self, decodes: list[Request], t: float) -> None:
        """_emit of each decoding sequence at t, in order. Sequences whose previous token came at
        the same time have the same gap: it is computed once and logged once with their count
        (TokenLog.gaps: the same entries as one gap() each)."""
        log = self.tokens
        last, gap, count = math.nan, 0.0, 0
        for req in decodes:
            req.prefilled += 1
            if not req.generated:
                log.gaps(gap, count)
                last, count = math.nan, 0
                self._emit(req, t)
                continue
            if req.last_token_s != last:
                log.gaps(gap, count)
                last, count = req.last_token_s, 0
                gap = t - last
            count += 1
            if gap > req.itl_max_s:
                req.itl_max_s = gap
            req.generated += 1
            req.last_token_s = t
            if req.generated >= req.osl:
                self._complete(req, t)
        log.gaps(gap, count)
        self.tokens_emitted += len(decodes)

    def _emit(self, req: Request, t: float) -> None:
        if req.generated == 0:
            req.first_token_s = t
        else:
            gap = t - req.last_token_s
            self.tokens.gap(gap)
            if gap > req.itl_max_s:
                req.itl_max_s = gap
        req.generated += 1
        self.tokens_emitted += 1
        req.last_token_s = t
        if req.generated >= req.osl:
            self._complete(req, t)

    def _complete(self, req: Request, t: float) -> None:
        req.finish_s = t
        self.schedulers[req.lane].release(req)
        self.arrivals.done(req)

    # -- coalesced decode runs -----------------------------------------------------------------
    def _decode_run(self, running: list[Request]):
        """Advance k decode-only iterations as one event (k >= 1); see the module docstring."""
        env, sched, stage = self.env, self.scheduler, self.stages[0]
        bs = sched.kv.block_size
        n = len(running)
        prefilled = [r.prefilled for r in running]        # lists: kvcache's arithmetic takes either
        held = [r.blocks for r in running]
        k_max = steps_that_fit(prefilled, held, bs, min([r.osl - r.generated for r in running]), sched.kv.free)
        kv_start = float(sum(prefilled) + n)
        cap_by_arrival = sched.admits_new_arrivals()
        next_arrival = self.arrivals.next_time() if cap_by_arrival else math.inf
        # (every step to k_max is evaluated, an array entry each: cheaper than a call to bound k)
        gpu = stage.decode_times(n, kv_start, k_max)
        durations, exposed = self.host.decode_run(n, gpu)     # exposed host time per step
        ends = np.cumsum(np.concatenate(([env.now], durations)))[1:]
        k = k_max
        if cap_by_arrival:
            k = min(k, int(np.searchsorted(ends, next_arrival, side="left")) + 1)
        end = float(ends[k - 1])
        start = env.now
        yield env.at(end)
        self.iterations += k
        split = stage.account((n, n), gpu[:k])
        host = self.host.ran(start, end, float(np.sum(exposed[:k])), float(gpu[k - 1]))
        shared = np.diff(ends[:k])
        shared_max = float(shared.max()) if k > 1 else 0.0
        if k > 1:
            self.tokens.run(shared, n)
        self.tokens_emitted += k * n
        extra, finished = self._advance(running, float(ends[0]), end, k, shared_max)
        sched.kv.allocate(extra)              # before the finished release theirs (peak, prefix eviction)
        for req in finished:
            self._complete(req, end)
        self.tokens.bound()
        self.timeline.iteration(self, 0, start + host, end, k, 0, n, split)

    def _advance(self, running: list[Request], first_end: float, end: float, k: int,
                 shared_max: float) -> tuple[int, list[Request]]:
        """Each sequence of a decode run k steps on: its first gap (to first_end) logged as
        _emit_decodes logs a step's, its maximum gap, tokens and KV blocks. Returns the blocks the
        run opened (kvcache.extra_blocks of the run) and the sequences it finished, in order."""
        log = self.tokens
        bs = self.kv.block_size
        last, gap, top, count, extra = math.nan, 0.0, 0.0, 0, 0
        finished = []
        for req in running:
            if req.last_token_s != last:
                log.gaps(gap, count)
                last, count = req.last_token_s, 0
                gap = first_end - last
                top = gap if gap > shared_max else shared_max
            count += 1
            if top > req.itl_max_s:
                req.itl_max_s = top
            req.prefilled += k
            blocks = -(-req.prefilled // bs)
            if blocks > req.blocks:
                extra += blocks - req.blocks
            req.blocks = blocks
            req.generated += k
            req.last_token_s = end
            if req.generated >= req.osl:
                finished.append(req)
        log.gaps(gap, count)
        return extra, finished
