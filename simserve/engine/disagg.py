"""Prefill/decode disaggregation in the SimPy world (DistServe, Splitwise, Mooncake).

A `PrefillReplica` serves prompts only: when a prompt's last chunk has sampled the first token,
the request leaves its running set and the `KvHandoff` moves its KV to a decode replica as flows on
the shared network (so a transfer slows, and is slowed by, whatever else uses its links). The
prefill replica keeps the request's KV blocks until the last byte has left (the decode side pulls
them, as Mooncake's transfer engine and vLLM's KV connectors do); then the decode replica admits
the request with its prompt's KV in place and decodes the rest.

Which bytes go where: prefill GPU (stage s, TP rank i) holds its stage's layers and its share of
the KV heads; decode GPU (stage t, rank j) needs its own layers and heads. Each pair moves the
overlap of the two (`kv_shares`), so the request moves ISL x the model's KV bytes per token in all
when the decode TP degree does not exceed the KV heads (a decode rank holding a replicated head
receives its own copy). All pairs' flows are one batch: O(1) events per transfer.

`kv_transfer: layerwise` streams the KV while the prefill runs: the flows start when the prompt is
first scheduled and the request reaches the decode pool when both the flows have ended and the
last layer's share has left after the prefill's end (a layer's KV cannot leave before it is
computed). The flows move at link speed from the start, so a long chunked prefill's traffic is
front-loaded compared with a real layer-by-layer stream; the arrival time at the decode pool is
exact whenever either the link or the prefill is the bottleneck.
"""
from __future__ import annotations

import math

from simserve.engine.replica import Replica
from simserve.kvcache import blocks_for


def head_ranges(tp: int, kv_heads: int) -> list[tuple[float, float, int]]:
    """Per TP rank: the KV-head interval it holds and how many ranks hold the same heads."""
    if tp <= kv_heads:
        width = kv_heads / tp
        return [(i * width, (i + 1) * width, 1) for i in range(tp)]
    copies = tp // kv_heads
    return [(i // copies, i // copies + 1, copies) for i in range(tp)]


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def kv_shares(kv_heads: int, src_layers: tuple[int, ...], src_tp: int, dst_layers: tuple[int, ...],
              dst_tp: int) -> list[tuple[int, int, int, int, float, int]]:
    """(src stage, src rank, dst stage, dst rank, share of the model's whole KV, layers in common)
    for every pair that moves bytes. A head held by several source ranks is sent by all of them in
    equal parts."""
    total_layers = sum(src_layers)
    src_heads, dst_heads = head_ranges(src_tp, kv_heads), head_ranges(dst_tp, kv_heads)
    src_first = [sum(src_layers[:s]) for s in range(len(src_layers))]
    dst_first = [sum(dst_layers[:t]) for t in range(len(dst_layers))]
    out = []
    for s, n in enumerate(src_layers):
        for t, m in enumerate(dst_layers):
            layers = _overlap(src_first[s], src_first[s] + n, dst_first[t], dst_first[t] + m)
            if not layers:
                continue
            for i, (h0, h1, copies) in enumerate(src_heads):
                for j, (g0, g1, _) in enumerate(dst_heads):
                    heads = _overlap(h0, h1, g0, g1)
                    if heads:
                        out.append((s, i, t, j, layers / total_layers * heads / kv_heads / copies, int(layers)))
    return out


class KvHandoff:
    """Moves prefilled requests' KV from the prefill pool to the decode pool (see the module doc)."""

    def __init__(self, env, network, decode_router, shares, kv_bytes_per_token: float, layerwise: bool,
                 timeline):
        self.env, self.network, self.router = env, network, decode_router
        self.shares = shares
        self.kv_bytes_per_token = kv_bytes_per_token    # the whole model's, all layers and heads
        self.layerwise = layerwise
        self.timeline = timeline
        self._routes: dict[tuple[int, int], list] = {}
        self._prefill_done: dict[int, object] = {}     # request id -> event (layerwise streams)
        self.transfer_s: list[float] = []               # per request: first token -> KV at the decode pool
        self.bytes_moved = 0.0
        self.transfers = 0

    def decode_never_fits(self, req) -> str:
        return self.router.replicas[0].scheduler.never_fits(req)

    def _items(self, src, dst, nbytes: float):
        """(links, bytes, latency) per GPU pair and the time the last layer's share takes."""
        key = (src.index, dst.index)
        routes = self._routes.get(key)
        if routes is None:
            table = self.network.topology.links
            routes = self._routes[key] = []
            for s, i, t, j, share, layers in self.shares:
                links, latency_s = self.network.route(src.stages[s].gpus[i], dst.stages[t].gpus[j])
                bw_Bps = min((table[k].bw_Bps for k in links), default=math.inf)
                routes.append((links, latency_s, share, layers, bw_Bps))
        items = [(links, share * nbytes, latency_s) for links, latency_s, share, _, _ in routes]
        tail_s = max((lat + share * nbytes / layers / bw for _, lat, share, layers, bw in routes), default=0.0)
        return items, tail_s

    def scheduled(self, src, req) -> None:
        """The prompt's first chunk is about to run: a layerwise stream starts now."""
        if self.layerwise and req.osl > 1 and req.id not in self._prefill_done:
            done = self._prefill_done[req.id] = self.env.event()
            self.env.process(self._move(src, req, done))

    def prefilled(self, src, req) -> None:
        """The prompt is prefilled and its first token sampled: the KV goes (or has been going)."""
        done = self._prefill_done.pop(req.id, None)
        if done is not None:
            done.succeed(self.env.now)
        else:
            self.env.process(self._move(src, req, None))

    def _move(self, src, req, prefill_done):
        env = self.env
        dst = self.router.choose()
        nbytes = req.isl * self.kv_bytes_per_token
        items, tail_s = self._items(src, dst, nbytes)
        start = env.now
        yield self.network.transfer_batch(items, "kv_transfer")
        if prefill_done is not None:
            prefill_end = yield prefill_done
            if env.now < prefill_end + tail_s:      # the last layer leaves once it is computed
                yield env.timeout(prefill_end + tail_s - env.now)
        self.timeline.transfer(src, 0, start, env.now, nbytes, kind="kv_transfer")
        self.transfer_s.append(env.now - req.first_token_s)
        self.bytes_moved += nbytes
        self.transfers += 1
        src.kv_moved(req)
        req.prefill_target = req.prefilled + 1      # the first output token's KV is the decode pool's first step
        dst.submit(req)


class PrefillReplica(Replica):
    """A replica of the prefill pool: prompts only; each prefilled request goes to the handoff."""

    def __init__(self, *args, handoff: KvHandoff, **kwargs):
        self.handoff = handoff
        super().__init__(*args, **kwargs)

    def submit(self, req) -> None:
        req.replica = self.index
        need = blocks_for(req.isl, self.kv.block_size)
        reason = self.handoff.decode_never_fits(req) if req.osl > 1 else ""
        if not reason and need > self.kv.num_blocks - self.kv.watermark_blocks:
            reason = (f"needs {req.isl} KV tokens ({need} blocks) to prefill, more than the prefill "
                      f"replica's cache of {self.kv.capacity_tokens} tokens")
        if reason:
            req.reject_reason = reason
            self.arrivals.done(req)
            return
        req.lane = min(range(len(self.schedulers)),
                       key=lambda i: len(self.schedulers[i].waiting) + len(self.schedulers[i].running))
        self.schedulers[req.lane].add(req)
        self._wakeup()

    def _mark_scheduled(self, batch) -> None:
        for req, _ in batch.prefills:
            if math.isnan(req.scheduled_s):
                self.handoff.scheduled(self, req)
        super()._mark_scheduled(batch)

    def _emit(self, req, t: float) -> None:
        if req.generated or req.osl <= 1:        # a one-token answer is finished here
            super()._emit(req, t)
            return
        req.first_token_s = req.last_token_s = t
        req.generated = 1
        self.tokens_emitted += 1
        self.schedulers[req.lane].running.remove(req)    # no decode here; its blocks stay until sent
        self.handoff.prefilled(self, req)

    def kv_moved(self, req) -> None:
        """The request's KV has left: free its blocks for the next prompts."""
        sched = self.schedulers[req.lane]
        sched.kv.release(req.blocks)
        sched.admission.released(req)
        req.blocks = 0
        self._wakeup()
