"""Pipeline micro-batches of a `Replica` (engine/replica.py): the loop used with several stages.

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

import simpy

from simserve.engine.pipeline_books import settle
from simserve.engine.pipeline_run import Flight, coalesced_run
from simserve.scheduler import Batch


class PipelineLoop:
    """Mixin of `Replica`: it holds env, schedulers, stages, network, host, timeline, the token
    counters and `_wakeup` / `_sleep` / `_mark_scheduled` / `_finish`; this class adds the state
    (`_init_pipeline`) and the loop of micro-batches over the stages."""

    def _init_pipeline(self, n_stages: int) -> None:
        self._lane_busy = [False] * len(self.schedulers)
        self._next_lane = 0
        # pipeline accounting
        self.inflight = 0
        self._active_since = 0.0
        self.active_s = 0.0                 # time with at least one micro-batch in flight
        self.p2p_s = [0.0] * n_stages       # per sending stage
        self.wait_output_s = [0.0] * n_stages
        # pipeline stages serve micro-batches in launch order (a stage receives its inputs in the
        # order they were sent, as NCCL point-to-point receives are posted): `_turn[s]` is the launch
        # number of the micro-batch stage s serves next, `_turn_waiters[s]` who waits for a turn
        self._launched = 0
        self._turn = [0] * n_stages
        self._turn_waiters: list[dict[int, simpy.Event]] = [{} for _ in range(n_stages)]
        self._stage_free_at = [0.0] * n_stages        # closed-form pipeline: when each stage frees
        self._routes: dict[int, list] = {}
        self._links: dict[int, tuple[frozenset, bool]] = {}
        self._send_memo: dict[tuple[int, float], float] = {}
        # engine/pipeline_run: decode-round times per sequence count: (first context, per-stage lists, arrays)
        self._decode_memo: dict[int, list[tuple[int, list[list[float]], list]]] = {}
        self._launch_memo: dict[int, tuple[list[float], list[float], float]] = {}   # ... send bytes, times, host s
        self._unbooked: dict[int, list] = {}    # engine/pipeline_books: runs' bulk bookings still to make
        self._unbooked_runs = 0
        self._flight: list[Flight | None] = [None] * len(self.schedulers)   # closed form: each lane's last launch
        self._epoch = [0] * len(self.schedulers)

    def settle_books(self) -> None:
        """Make the bookings coalesced runs left for later (engine/pipeline_books.settle); the
        results call it before they read busy times, collectives and bytes."""
        settle(self)

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
            if self.coalesce_pipeline and batch.decode_only:
                coalesced_run(self, lane, batch)
            elif self.closed_pipeline:
                self._schedule_micro_batch(lane, batch)
            else:
                env.process(self._micro_batch(lane, seq, batch))

    def _schedule_micro_batch(self, lane: int, batch: Batch) -> None:
        """`fast` with every stage's and transfer's links its own: the whole path of the micro-batch
        is known when it starts (stages serve in launch order), so it is computed here with the same
        arithmetic the played path uses, and only its two outcomes become events: tokens at the
        last stage's end, and the lane's return once the sampled tokens are back at the first."""
        tokens_at, back = self._launch(batch.stats(), self.env.now)
        flight = self._flight[lane] = Flight(batch.decodes if batch.decode_only and not batch.swaps else None, tokens_at, back)

        def finish(_ev):
            self._finish(batch, tokens_at)
            flight.done = True
        self.env.at(tokens_at).callbacks.append(finish)
        self._return_at(lane, back)

    def _return_at(self, lane: int, back: float) -> None:
        """The lane's return event; a coalesced run that takes the lane over (engine/pipeline_run)
        bumps its epoch, which voids it."""
        epoch = self._epoch[lane]
        self.env.at(back).callbacks.append(lambda _ev: epoch == self._epoch[lane] and self._lane_done(lane))

    def _launch(self, stats, now: float) -> tuple[float, float]:
        """Book one micro-batch launched at `now` on every stage and transfer; returns (time its
        tokens exist, time the lane is back). engine/pipeline_run.Books.launch restates it for a
        coalesced run's decode rounds."""
        last = len(self.stages) - 1
        exposed = self.host.take(stats, now)
        ready = now + exposed
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
                ready = end + self._transfer_closed_form(s, stats.tokens * self.p2p_bytes_per_token, end)
        tokens_at = ready
        back = tokens_at + self._transfer_closed_form(last, stats.logits_tokens * self.token_id_bytes, tokens_at)
        self.iterations += 1
        return tokens_at, back

    def _transfer_closed_form(self, stage: int, nbytes: float, start: float) -> float:
        """Idle-network time of a stage-to-stage send (links are this pipeline's own), its bytes
        accounted now."""
        duration = self._send_duration(stage, nbytes)
        self._account_send(stage, nbytes, 1)
        self.p2p_s[stage] += duration
        self.timeline.transfer(self, stage, start, start + duration, nbytes * len(self._routes[stage]))
        return duration

    def _send_duration(self, stage: int, nbytes: float) -> float:
        """Idle-network time of stage `stage`'s send of `nbytes` to the next stage (the last stage's
        to the first), memoised per size."""
        key = (stage, nbytes)
        duration = self._send_memo.get(key)
        if duration is None:
            src, dst = self.stages[stage].gpus, self.stages[(stage + 1) % len(self.stages)].gpus
            duration = self._send_memo[key] = self._send_time(stage, src, dst, nbytes)
        return duration

    def _send_time(self, stage: int, src_gpus, dst_gpus, nbytes: float) -> float:
        routes = self._routes.get(stage)
        if routes is None:     # per rank: (links, path latency, slowest link's bandwidth)
            network = self.network
            table = network.topology.links
            routes = self._routes[stage] = [
                (links, latency_s, min((table[i].bw_Bps for i in links), default=math.inf))
                for links, latency_s in (network.route(a, b) for a, b in zip(src_gpus, dst_gpus))]
        duration = 0.0
        for links, latency_s, bw_Bps in routes:
            t = latency_s + (nbytes / bw_Bps if nbytes > 0 and links else 0.0)
            duration = t if t > duration else duration
        return duration

    def _account_send(self, stage: int, nbytes: float, count: int) -> None:
        """Bytes of `count` sends (whole numbers: their float sums are exact in any order, so a
        coalesced run accounts its sends in bulk)."""
        for links, _, _ in self._routes[stage]:
            self.network.account(links, nbytes * count, "p2p")

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
                yield from self._send(s, stats.tokens * self.p2p_bytes_per_token)
        self.iterations += 1
        self._finish(batch, env.now)          # tokens exist once the last stage has sampled them
        yield from self._send(last, stats.logits_tokens * self.token_id_bytes)
        self._lane_done(lane)

    def _send(self, stage: int, nbytes: float):
        """Rank i of one stage sends to rank i of the next (the last stage's to the first), all
        ranks at once (vLLM's PP send).

        In `fast`, flows whose links are not shared with each other take their idle-network time
        (path latency + bytes / slowest link, memoised per size) as one timeout and reserve their
        links when nothing else moves bytes on those links until they are done
        (`Network.quiet`: no flow, no reservation, and any replayed collective holding one is in a
        compute slice that lasts beyond; then they share bandwidth with nothing, as in `exact`);
        anything else is played as flows."""
        network = self.network
        duration = self._send_duration(stage, nbytes)
        links_used, disjoint = self._send_links(stage)
        start = self.env.now
        if self.fast_transfers and disjoint and network.quiet(links_used, start + duration):
            self._account_send(stage, nbytes, 1)
            network.reserve(links_used, start + duration)
            yield self.env.timeout(duration)
        else:
            yield network.transfer_batch([(links, nbytes, latency_s) for links, latency_s, _ in self._routes[stage]],
                                         "p2p")
        self.p2p_s[stage] += self.env.now - start
        self.timeline.transfer(self, stage, start, self.env.now, nbytes * len(self._routes[stage]))

    def _send_links(self, stage: int) -> tuple[frozenset, bool]:
        """(links of stage's sends, whether no two ranks' routes share a link), memoised."""
        found = self._links.get(stage)
        if found is None:
            used: set = set()
            disjoint = True
            for links, _, _ in self._routes[stage]:
                disjoint = disjoint and not used.intersection(links)
                used.update(links)
            found = self._links[stage] = (frozenset(used), disjoint)
        return found
