"""One model replica: its scheduler, KV cache, pipeline stages and the iteration loop (SimPy).

With one pipeline stage the loop reads as the story it tells: schedule a batch, spend the
iteration's time, emit tokens. Runs of decode-only iterations in which the batch cannot change (no
arrival can join, nobody finishes, KV blocks suffice) are advanced as one event: their times are a
cumulative sum computed with the same floating-point operations as stepping them one by one, so
the results are identical (tests/test_engine.py checks it) with far fewer events.

With several stages, requests are spread over as many lanes as stages (vLLM V0's virtual engines:
each lane has its own scheduler over the shared KV cache, and a request joins the lane with the
fewest outstanding requests). Each lane has at most one micro-batch in flight; a micro-batch is
its own process that takes each stage in turn (a stage computes one micro-batch at a time, first
come first served) and hands its activations to the next stage as flows on the network; the last
stage emits the tokens and returns the sampled token ids to the first. Pipeline bubbles are not
computed from a formula: they are the time a stage waits while micro-batches are in flight
elsewhere.
"""
from __future__ import annotations

import math

import numpy as np
import simpy

from simserve.engine.env import SimEnvironment
from simserve.engine.host import HostClock
from simserve.engine.tokens import TokenLog
from simserve.engine.request import Request
from simserve.engine.stage import Stage
from simserve.kvcache import blocks_for, extra_blocks, steps_that_fit
from simserve.runtime import Runtime
from simserve.scheduler import Batch, Scheduler


class Replica:
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
        self._lane_busy = [False] * len(schedulers)
        self._next_lane = 0
        self.p2p_bytes_per_token = p2p_bytes_per_token
        self.token_id_bytes = token_id_bytes
        self.tokens = TokenLog()
        self.timeline = timeline            # engine.timeline.Timeline
        self.fast_transfers = fast_transfers
        self.closed_pipeline = closed_pipeline and len(stages) > 1 and all(st.closed_form for st in stages)
        self.completed: list[Request] = []
        self.rejected: list[Request] = []
        self.iterations = 0
        self.tokens_emitted = 0
        # pipeline accounting
        self.inflight = 0
        self._active_since = 0.0
        self.active_s = 0.0                 # time with at least one micro-batch in flight
        self.p2p_s = [0.0] * len(stages)    # per sending stage
        self.wait_output_s = [0.0] * len(stages)
        # pipeline stages serve micro-batches in launch order (a stage receives its inputs in the
        # order they were sent, as NCCL point-to-point receives are posted): `_turn[s]` is the launch
        # number of the micro-batch stage s serves next, `_turn_waiters[s]` who waits for a turn
        self._launched = 0
        self._turn = [0] * len(stages)
        self._turn_waiters: list[dict[int, simpy.Event]] = [{} for _ in stages]
        self._stage_free_at = [0.0] * len(stages)     # closed-form pipeline: when each stage frees
        self._routes: dict[int, list] = {}
        self._wake = env.event()
        self._sleeping = False
        self.process = env.process(self.run() if len(stages) == 1 else self.run_pipeline())

    # -- router side ---------------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return sum(len(s.waiting) + len(s.running) for s in self.schedulers)

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
            self.rejected.append(req)
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
            if batch.decode_only and self.coalesce_decode:
                yield from self._decode_run(batch.decodes)
                continue
            stats = batch.stats()
            start = env.now
            exposed = self.host.take(stats, start)
            if stage.closed_form:
                duration = stage.time(stats)
                end = env.now + (exposed + duration)   # as a decode run sums it (exactness)
                yield env.at(end)
                split = stage.account((stats.tokens, stats.logits_tokens), duration)
            else:
                if exposed > 0:
                    yield env.timeout(exposed)
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
        self.schedulers[req.lane].release(req)
        self.completed.append(req)
        self.arrivals.done(req)

    # -- coalesced decode runs -----------------------------------------------------------------
    def _decode_run(self, running: list[Request]):
        """Advance k decode-only iterations as one event (k >= 1); see the module docstring."""
        env, sched, stage = self.env, self.scheduler, self.stages[0]
        bs = sched.kv.block_size
        n = len(running)
        prefilled = np.fromiter((r.prefilled for r in running), dtype=np.int64, count=n)
        held = np.fromiter((r.blocks for r in running), dtype=np.int64, count=n)
        k_max = steps_that_fit(prefilled, held, bs, min(r.osl - r.generated for r in running), sched.kv.free)
        kv_start = float(prefilled.sum() + n)
        cap_by_arrival = sched.admits_new_arrivals()
        next_arrival = self.arrivals.next_time() if cap_by_arrival else math.inf
        if cap_by_arrival and k_max > 1 and next_arrival < math.inf:
            # step times never shrink as contexts grow, so the first step's time bounds how many
            # steps fit before the next arrival: evaluate only those
            first_step_s = float(stage.decode_times(n, kv_start, 1)[0])
            k_max = min(k_max, int((next_arrival - env.now) / first_step_s) + 2)
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
        sched.kv.allocate(extra_blocks(prefilled, held, bs, k))
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
        self.timeline.iteration(self, 0, start + host, end, k, 0, n, split)

    # -- pipeline ------------------------------------------------------------------------------
    def _next_micro_batch(self) -> tuple[int, Batch] | None:
        """The next lane with work, round robin over lanes with no micro-batch in flight."""
        lanes = len(self.schedulers)
        for i in range(lanes):
            lane = (self._next_lane + i) % lanes
            if self._lane_busy[lane]:
                continue
            batch = self.schedulers[lane].schedule()
            if batch:
                self._next_lane = (lane + 1) % lanes
                self._mark_scheduled(batch)
                self._lane_busy[lane] = True
                if self.inflight == 0:
                    self._active_since = self.env.now
                self.inflight += 1
                return lane, batch
        return None

    def _lane_done(self, lane: int) -> None:
        self._lane_busy[lane] = False
        self.inflight -= 1
        if self.inflight == 0:
            self.active_s += self.env.now - self._active_since
        self._wakeup()

    def run_pipeline(self):
        """Start a micro-batch whenever the first stage is free and a lane has work."""
        env = self.env
        while True:
            if self.closed_pipeline and env.now < self._stage_free_at[0]:
                yield env.at(self._stage_free_at[0])
                continue
            if not self.closed_pipeline and self._turn[0] < self._launched:
                yield from self._sleep()          # the first stage is busy; it wakes us when done
                continue
            found = self._next_micro_batch()
            if found is None:
                yield from self._sleep()
                continue
            lane, batch = found
            seq = self._launched
            self._launched += 1
            if self.closed_pipeline:
                self._schedule_micro_batch(lane, batch)
            else:
                env.process(self._micro_batch(lane, seq, batch))

    def _schedule_micro_batch(self, lane: int, batch: Batch) -> None:
        """`fast` with every stage's and transfer's links its own: the whole path of the micro-batch
        is known when it starts (stages serve in launch order), so it is computed here with the same
        arithmetic the played path uses, and only its two outcomes become events: tokens at the
        last stage's end, and the lane's return once the sampled tokens are back at the first."""
        env = self.env
        stats = batch.stats()
        last = len(self.stages) - 1
        exposed = self.host.take(stats, env.now)
        ready = env.now + exposed
        for s, stage in enumerate(self.stages):
            start = ready if ready > self._stage_free_at[s] else self._stage_free_at[s]
            if s > 0:
                self.wait_output_s[s - 1] += start - ready
            duration = stage.time(stats)
            end = start + duration
            self._stage_free_at[s] = end
            if s == 0:
                self.host.gpu_step(end, duration)
            split = stage.account((stats.tokens, stats.logits_tokens), duration)
            self.timeline.iteration(self, s, start, end, 1, stats.prefill_tokens, stats.decode_tokens, split)
            ready = end
            if s < last:
                ready = end + self._transfer_closed_form(s, stage.gpus, self.stages[s + 1].gpus,
                                                         stats.tokens * self.p2p_bytes_per_token, end)
        tokens_at = ready
        back = tokens_at + self._transfer_closed_form(last, self.stages[-1].gpus, self.stages[0].gpus,
                                                      stats.logits_tokens * self.token_id_bytes, tokens_at)
        self.iterations += 1
        env.at(tokens_at).callbacks.append(lambda _ev: self._finish(batch, tokens_at))
        env.at(back).callbacks.append(lambda _ev: self._lane_done(lane))

    def _transfer_closed_form(self, stage: int, src_gpus, dst_gpus, nbytes: float, start: float) -> float:
        """Idle-network time of a stage-to-stage send (links are this pipeline's own); accounted."""
        network = self.network
        routes = self._routes.get(stage)
        if routes is None:     # per rank: (links, path latency, slowest link's bandwidth)
            table = network.topology.links
            routes = self._routes[stage] = [
                (links, latency_s, min((table[i].bw_Bps for i in links), default=math.inf))
                for links, latency_s in (network.route(a, b) for a, b in zip(src_gpus, dst_gpus))]
        duration = 0.0
        for links, latency_s, bw_Bps in routes:
            t = latency_s + (nbytes / bw_Bps if nbytes > 0 and links else 0.0)
            duration = t if t > duration else duration
            network.account(links, nbytes, "p2p")
        self.p2p_s[stage] += duration
        self.timeline.transfer(self, stage, start, start + duration, nbytes * len(routes))
        return duration

    def _take_turn(self, s: int, seq: int):
        if self._turn[s] != seq:
            waiter = self._turn_waiters[s][seq] = self.env.event()
            yield waiter

    def _pass_turn(self, s: int) -> None:
        self._turn[s] += 1
        waiter = self._turn_waiters[s].pop(self._turn[s], None)
        if waiter is not None:
            waiter.succeed()

    def _micro_batch(self, lane: int, seq: int, batch: Batch):
        env = self.env
        stats = batch.stats()
        last = len(self.stages) - 1
        exposed = self.host.take(stats, env.now)
        if exposed > 0:
            yield env.timeout(exposed)
        for s, stage in enumerate(self.stages):
            queued = env.now
            yield from self._take_turn(s, seq)
            if s > 0:
                self.wait_output_s[s - 1] += env.now - queued
            start = env.now
            split = yield from stage.execute(stats)
            self.timeline.iteration(self, s, start, env.now, 1, stats.prefill_tokens, stats.decode_tokens, split)
            if s == 0:
                self.host.gpu_step(env.now, env.now - start)
            self._pass_turn(s)
            if s == 0:
                self._wakeup()                # the first stage is free for the next micro-batch
            if s < last:
                yield from self._send(s, stage.gpus, self.stages[s + 1].gpus, stats.tokens * self.p2p_bytes_per_token)
        self.iterations += 1
        self._finish(batch, env.now)          # tokens exist once the last stage has sampled them
        yield from self._send(last, self.stages[-1].gpus, self.stages[0].gpus,
                              stats.logits_tokens * self.token_id_bytes)
        self._lane_done(lane)

    def _send(self, stage: int, src_gpus, dst_gpus, nbytes: float):
        """Rank i of one stage sends to rank i of the next, all ranks at once (vLLM's PP send).

        In `fast`, flows whose links are idle and not shared with each other take their idle-network
        time (path latency + bytes / slowest link) as one timeout and reserve their links, as
        replayed collectives do; anything else is played as flows."""
        network = self.network
        items, links_used = [], set()
        disjoint = True
        for a, b in zip(src_gpus, dst_gpus):
            links, latency_s = network.route(a, b)
            items.append((links, nbytes, latency_s))
            if links_used.intersection(links):
                disjoint = False
            links_used.update(links)
        start = self.env.now
        if self.fast_transfers and disjoint and not network.busy(links_used):
            table = network.topology.links
            duration = max(lat + (nb / min(table[i].bw_Bps for i in ln) if nb > 0 and ln else 0.0)
                           for ln, nb, lat in items)
            for ln, nb, _ in items:
                network.account(ln, nb, "p2p")
            network.reserve(links_used, start + duration)
            yield self.env.timeout(duration)
        else:
            yield network.transfer_batch(items, "p2p")
        self.p2p_s[stage] += self.env.now - start
        self.timeline.transfer(self, stage, start, self.env.now, nbytes * len(items))
