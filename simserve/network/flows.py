"""Flow-level network (SimPy): transfers are fluid flows sharing directed links max-min fairly.

The model is SimGrid's validated fluid model: a flow's rate is fixed between two events (a flow
starting or ending); at each such event all rates are recomputed by progressive filling (every
flow through the most contended link gets that link's fair share, which is removed from the other
links of those flows, and so on), and the network keeps **one** pending timer, for the earliest
completion. A transfer therefore costs O(1) SimPy events whatever its size: one for its latency,
one when it completes; a rate change reschedules nothing but the single timer.

Latency: a flow first waits the sum of its hops' latencies, then moves its bytes (SimGrid does the
same). Flows that start at the same instant share one rate recomputation.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import simpy

from simserve.network.topology import Topology

# Relative slack when deciding that a flow whose projected finish equals the timer's time is done:
# the finish times are sums of a few float quotients, exact to ~1e-16 relative.
_FINISH_RTOL = 1e-12


class _Flow:
    __slots__ = ("links", "remaining_B", "rate_Bps", "finish_s", "batch")

    def __init__(self, links, nbytes, batch):
        self.links = links
        self.remaining_B = float(nbytes)
        self.rate_Bps = 0.0
        self.finish_s = float("inf")
        self.batch = batch


class _Batch:
    """Flows whose common completion is one SimPy event (a collective phase, or one transfer)."""
    __slots__ = ("pending", "event")

    def __init__(self, pending, event):
        self.pending = pending
        self.event = event


class Network:
    """The shared network of one simulation. `transfer` and `transfer_batch` return SimPy events."""

    def __init__(self, env: simpy.Environment, topology: Topology):
        self.env = env
        self.topology = topology
        self._capacity_Bps = [link.bw_Bps for link in topology.links]
        self._kind = [link.kind for link in topology.links]
        self._on_link: dict[int, set] = defaultdict(set)
        self._active: set = set()
        self._last_update_s = 0.0
        self._timer_generation = 0
        self._recompute_pending = False
        self.bytes_by_kind: dict[str, float] = defaultdict(float)
        self.bytes_by_op: dict[str, float] = defaultdict(float)   # payload per collective type / p2p
        self.bytes_by_link: list[float] = [0.0] * len(topology.links)
        self.flows_started = 0
        self._reserved_until: dict[int, float] = {}      # link -> end of a replayed collective on it
        self._held: dict[int, object] = {}               # link -> a replay that turns into flows if disturbed
        self._waiting: dict[int, int] = defaultdict(int)  # link -> flows still in their latency

    # ---- public API ---------------------------------------------------------------------------

    def route(self, src: int, dst: int) -> tuple[tuple[int, ...], float]:
        """(link ids, path latency in s) from GPU src to GPU dst."""
        links = self.topology.path(src, dst)
        return links, sum(self.topology.links[i].latency_s for i in links)

    def transfer(self, src: int, dst: int, nbytes: float) -> simpy.Event:
        """One point-to-point transfer; the event succeeds when its last byte has arrived."""
        links, latency_s = self.route(src, dst)
        return self.transfer_batch([(links, nbytes, latency_s)])

    def transfer_batch(self, items: Sequence[tuple], op: str = "other", account: bool = True) -> simpy.Event:
        """Start concurrent flows given as (link ids, bytes, latency_s[, bytes to account]); one event
        when all are done. The optional 4th value is the payload when the flow's bytes include a
        protocol overhead (NVLS), so that `bytes_by_kind` counts data, not overhead.
        A replay holding any of these links is first turned into played flows (`hold`)."""
        if self._held:
            self._disturb(items)
        event = self.env.event()
        batch = _Batch(0, event)
        by_latency: dict[float, list] = {}
        for item in items:
            links, nbytes, latency_s = item[0], item[1], item[2]
            if account:
                self.account(links, item[3] if len(item) > 3 else nbytes, op)
            if (not links or nbytes <= 0) and latency_s <= 0:
                continue
            batch.pending += 1
            links = tuple(links) if nbytes > 0 else ()      # an empty flow only waits its latency
            by_latency.setdefault(latency_s, []).append(_Flow(links, nbytes, batch))
            if latency_s > 0:
                for i in links:
                    self._waiting[i] += 1
        if batch.pending == 0:
            event.succeed()
            return event
        for latency_s, flows in by_latency.items():
            if latency_s > 0:
                self.env.timeout(latency_s).callbacks.append(lambda _ev, fl=flows: self._start(fl, True))
            else:
                self._start(flows)
        return event

    def busy(self, link_ids: Iterable[int]) -> bool:
        """True when any of these links carries an active flow, or a replayed collective, now."""
        on_link, waiting, reserved, held, now = self._on_link, self._waiting, self._reserved_until, self._held, self.env.now
        for i in link_ids:      # a plain loop: asked before every played collective and slice
            if i in held or on_link.get(i) or waiting.get(i) or reserved.get(i, -1.0) > now:
                return True
        return False

    def quiet(self, link_ids: Iterable[int], until_s: float) -> bool:
        """True when nothing moves bytes on these links from now until `until_s`: no flow is on or
        waiting for one, none is reserved, and every replay holding one is in a compute slice that
        lasts beyond `until_s` (`Replay.quiet_until`). A transfer on them that ends by then shares
        bandwidth with nothing (the replay is left alone: it loses nothing to it)."""
        on_link, waiting, reserved, held, now = self._on_link, self._waiting, self._reserved_until, self._held, self.env.now
        for i in link_ids:
            if on_link.get(i) or waiting.get(i) or reserved.get(i, -1.0) > now:
                return False
            replay = held.get(i)
            if replay is not None and replay.quiet_until(now) <= until_s:
                return False
        return True

    def hold(self, replay, link_ids: Iterable[int]) -> None:
        """A replayed collective occupies these links; traffic that starts on one of them calls
        `replay.materialise()` first, which releases them and continues the collective as flows."""
        for i in link_ids:
            self._held[i] = replay

    def release(self, replay, link_ids: Iterable[int]) -> None:
        held = self._held
        for i in link_ids:
            if held.get(i) is replay:
                del held[i]

    def _disturb(self, items) -> None:
        held = self._held
        hit = {id(r): r for item in items for i in item[0] if (r := held.get(i)) is not None}
        for replay in hit.values():
            replay.materialise()

    def reserve(self, link_ids: Iterable[int], until_s: float) -> None:
        """Mark links as used by a replayed (memoised) collective until `until_s`, so that traffic
        arriving meanwhile knows it is not alone (the replay itself is not slowed down)."""
        reserved = self._reserved_until
        for i in link_ids:
            if reserved.get(i, -1.0) < until_s:
                reserved[i] = until_s

    def add_bytes(self, kind_bytes: dict[str, float], times: float = 1.0, op: str = "other",
                  payload_bytes: float = 0.0) -> None:
        """Account bytes that a memoised (replayed) collective would have moved."""
        for kind, nbytes in kind_bytes.items():
            self.bytes_by_kind[kind] += nbytes * times
        self.bytes_by_op[op] += payload_bytes * times

    # ---- internals ----------------------------------------------------------------------------

    def account(self, links, nbytes, op: str = "other") -> None:
        """Count a transfer's bytes on its links, link kinds and operation (also for closed-form
        transfers)."""
        self.bytes_by_op[op] += nbytes
        kinds = set()
        for i in links:
            self.bytes_by_link[i] += nbytes
            kinds.add(self._kind[i])
        for kind in kinds:   # bytes moved over a kind of link, once per transfer (not per hop)
            self.bytes_by_kind[kind] += nbytes

    def _start(self, flows, waited: bool = False) -> None:
        self._advance()
        for flow in flows:
            if waited:
                for i in flow.links:
                    self._waiting[i] -= 1
            if not flow.links:                    # latency-only item: done once its latency passed
                self._batch_done(flow.batch)
                continue
            self.flows_started += 1
            self._active.add(flow)
            for i in flow.links:
                self._on_link[i].add(flow)
        self._request_recompute()

    def _advance(self) -> None:
        """Move every active flow forward to now at its current rate."""
        now = self.env.now
        elapsed = now - self._last_update_s
        if elapsed > 0:
            for flow in self._active:
                flow.remaining_B -= flow.rate_Bps * elapsed
        self._last_update_s = now

    def _request_recompute(self) -> None:
        # Flows starting at the same instant share one recomputation: defer it to the end of now.
        if not self._recompute_pending:
            self._recompute_pending = True
            self.env.timeout(0).callbacks.append(self._recompute_now)

    def _recompute_now(self, _event=None) -> None:
        self._recompute_pending = False
        self._advance()
        self._share()
        self._schedule_timer()

    def _share(self) -> None:
        """Max-min fair rates by progressive filling."""
        capacity = self._capacity_Bps
        cap_left: dict[int, float] = {}
        unfrozen: dict[int, int] = {}
        for flow in self._active:
            for i in flow.links:
                if i in unfrozen:
                    unfrozen[i] += 1
                else:
                    unfrozen[i] = 1
                    cap_left[i] = capacity[i]
        remaining = len(self._active)
        frozen: set = set()
        while remaining:
            share = min(cap_left[i] / n for i, n in unfrozen.items() if n)
            limit = share * (1 + 1e-12)
            bottlenecks = [i for i, n in unfrozen.items() if n and cap_left[i] / n <= limit]
            for i in bottlenecks:
                for flow in self._on_link[i]:
                    if flow in frozen:
                        continue
                    frozen.add(flow)
                    remaining -= 1
                    flow.rate_Bps = share
                    for j in flow.links:
                        cap_left[j] = max(cap_left[j] - share, 0.0)
                        unfrozen[j] -= 1
        now = self.env.now
        for flow in self._active:
            flow.finish_s = now + flow.remaining_B / flow.rate_Bps

    def _schedule_timer(self) -> None:
        self._timer_generation += 1
        if not self._active:
            return
        generation = self._timer_generation
        next_s = min(flow.finish_s for flow in self._active)
        delay_s = max(next_s - self.env.now, 0.0)
        self.env.timeout(delay_s).callbacks.append(lambda _ev: self._on_timer(generation))

    def _on_timer(self, generation: int) -> None:
        if generation != self._timer_generation:
            return                                 # stale: rates changed since it was set
        now = self.env.now
        limit = now + abs(now) * _FINISH_RTOL
        done = [flow for flow in self._active if flow.finish_s <= limit]
        self._advance()
        for flow in done:
            self._active.discard(flow)
            for i in flow.links:
                on_link = self._on_link[i]
                on_link.discard(flow)
                if not on_link:
                    del self._on_link[i]
            self._batch_done(flow.batch)
        self._share()
        self._schedule_timer()

    @staticmethod
    def _batch_done(batch: _Batch) -> None:
        batch.pending -= 1
        if batch.pending == 0:
            batch.event.succeed()
