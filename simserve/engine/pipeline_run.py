"""Coalesced pipelined decode: many micro-batch launches of a closed-form pipeline in one event.

A closed-form pipeline (engine/pipeline.PipelineLoop with `closed_pipeline`) already computes a
micro-batch's whole path when it launches; what stays per micro-batch is the scheduler pass, the
cost model, and the three SimPy events of its launch, tokens and return. While no lane's batch can
change (every lane decodes all its running requests, nobody waits, no arrival can come, nobody
finishes, KV blocks suffice) the next launches are known too: the loop's own rule (launch when the
first stage is free, round robin over the lanes that are back) is evaluated here in a plain loop
over the stage free times, with every stage time taken from `Stage.decode_times` (the values
`Stage.time` gives, bit for bit; remembered per stage and sequence count across runs) and every
launch booked by `Books.launch` (engine/pipeline_books), which restates `PipelineLoop._launch` with
the same float sums in the same order, so accounting, timeline rows and results are the ones
stepping produces (busy time, charges and send bytes are booked in bulk, many runs at once: exact
sums).
Only each lane's last tokens and return become events; the tokens of a lane's earlier rounds are
emitted with them, each at its own time (as `Replica._decode_run` does), which nothing between can
observe: no arrival comes before the last launch, and a round that completes a request is its
lane's last (launches stop at the first completion time).

A lane in flight whose next batch is not such a decode (a prefill chunk in flight, requests
waiting to join it) takes no part: the run stops before that lane's tokens exist and before it is
back. The run also stops before the first launch that is at or after the next arrival (when a lane
could admit it) or the first completion, needs more KV blocks than are free, or belongs to a lane
out of precomputed rounds; the loop then steps as before. tests/test_pipeline_run.py checks that
requests.csv, the summary and the timeline equal stepping (`engine.coalesce_decode=false`), with
and without a timeline.
"""
from __future__ import annotations

import math

import numpy as np

from simserve.cost.operators import BatchStats
from simserve.engine.pipeline_books import Books
from simserve.runtime import host_s

MAX_ROUNDS = 1024       # rounds per lane precomputed by one run (bounds its arrays)
MEMO_ARRAYS = 8         # decode-round arrays remembered per (stage, sequences)


class Flight:
    """A lane's last launched micro-batch: its decodes (None unless decode-only), the rounds of
    tokens still to emit for them (1; more after a coalesced run), when they are emitted and when
    the lane is back; `done` once they were."""
    __slots__ = ("decodes", "rounds", "tokens_at", "back", "done")

    def __init__(self, decodes, tokens_at: float, back: float, rounds: int = 1):
        self.decodes, self.rounds, self.tokens_at, self.back, self.done = decodes, rounds, tokens_at, back, False


class _Lane:
    """One lane's part of a run. Round 0 is the lane's current micro-batch (the starting lane's is
    launched here, the others' are in flight); round a >= 1 schedules with `p + a - 1` tokens
    prefilled per request and allocates its KV growth when it launches."""

    def __init__(self, index: int, reqs: list, pending: int, back: float | None):
        self.index, self.reqs, self.n = index, reqs, len(reqs)
        self.p = [r.prefilled + pending for r in reqs]      # lists: a run launches a few rounds
        self.held = [r.blocks for r in reqs]
        # round `rem` completes some request (0: the current one does)
        self.rem = min(r.osl - r.generated - pending for r in reqs) if reqs else 0
        self.back = back                 # return still to come (None: the lane is back)
        self.original_back = back is not None    # ... and it is an event scheduled before the run
        self.voided = False              # that event was handled here
        self.first = 1                   # first round launched here (0 for the starting lane)
        self.durs: list[list[float]] = []   # per stage, times of rounds from `off - first` on
        self.off = 0                     # durs[s][off + j]: stage s's time of round first + j
        self.arrays: list[np.ndarray] = []   # durs as arrays (bulk bookings)
        self.rounds = 0                  # rounds precomputed (the last that may launch)
        self.cum: list[int] = [0]        # cum[a]: KV blocks rounds 1..a need beyond those held
        self.times: list[float] = []     # token times of the rounds launched here
        self.launched = 0
        self.nbytes: list[float] = []    # per stage: bytes of its send (prepare)
        self.sends: list[float] = []     # ... and the send's time
        self.host = 0.0                  # host seconds of a launch (with a runtime)

    def prepare(self, rep, rounds: int, first: int) -> None:
        """Stage times of rounds first..rounds (the values Stage.time gives), the lane's send times
        and bytes per stage and its host seconds per launch."""
        self.first, self.rounds = first, rounds
        self.durs, self.arrays, self.off = _decode_times(rep, self.n, sum(self.p) + self.n * first, rounds - first + 1)
        self.nbytes, self.sends, self.host = _launch_terms(rep, self.n)

    def can_launch(self) -> bool:
        return self.first + self.launched <= self.rounds and bool(self.durs)

    def need(self, a: int, block_size: int) -> int:
        """KV blocks round a >= 1 allocates, evaluated for rounds in growing chunks (a run
        launches a few rounds per lane, a lane may have hundreds left)."""
        cum = self.cum
        if a >= len(cum):
            lo, hi = len(cum), min(self.rounds, max(a, 2 * len(cum) + 8))
            tokens = np.array(self.p)[:, None] + np.arange(lo, hi + 1)[None, :]
            grown = np.maximum(-(-tokens // block_size) - np.array(self.held)[:, None], 0).sum(axis=0).tolist()
            cum.extend(grown)        # (the held blocks cover round 0: cum[0] is 0, as grown at 0 is)
        return cum[a] - cum[a - 1]


def _launch_terms(rep, n: int) -> tuple[list[float], list[float], float]:
    """(bytes and time of each stage's send, host seconds) of a decode launch of n sequences,
    memoised per n."""
    found = rep._launch_memo.get(n)
    if found is None:
        stats = BatchStats(decode_tokens=n, logits_tokens=n)
        last = len(rep.stages) - 1
        nbytes = [stats.tokens * rep.p2p_bytes_per_token] * last + [stats.logits_tokens * rep.token_id_bytes]
        runtime = rep.host.runtime
        found = rep._launch_memo[n] = (nbytes, [rep._send_duration(s, b) for s, b in enumerate(nbytes)],
                                       host_s(runtime, stats) if runtime is not None else 0.0)
    return found


def _decode_times(rep, n: int, kv_first: int, count: int) -> tuple[list[list[float]], list[np.ndarray], int]:
    """Every stage's times of `count` decode rounds of n sequences whose context sums to kv_first
    tokens at the first, as (per-stage lists, the same as arrays, offset of the first round): remembered per
    n where they cover them, else evaluated and remembered. Element j of `Stage.decode_times`
    depends only on n and its context kv + n * j (the context is its only array feature,
    evaluated element by element: the same values as `Stage.time`), so a lane's later runs read
    the arrays its first run evaluated."""
    memo = rep._decode_memo.setdefault(n, [])
    for kv0, times, arrays in memo:
        j, rest = divmod(kv_first - kv0, n)
        if rest == 0 and 0 <= j and j + count <= len(times[0]):
            return times, arrays, j
    arrays = [st.decode_times(n, float(kv_first), count) for st in rep.stages]
    times = [a.tolist() for a in arrays]
    if len(memo) >= MEMO_ARRAYS:
        memo.pop(0)
    memo.append((kv_first, times, arrays))
    return times, arrays, 0


def _steady(rep, lane: int, batch) -> tuple[list[_Lane], float] | None:
    """The run's lanes and the time it must stop by for lanes it leaves alone, or None if the
    starting lane's next batch could change, or a lane that is back has work (the loop launches it
    next, stepping). A lane in flight whose next batch is not a plain decode of its running
    requests (a prefill in flight, requests waiting to join) is left alone: the run stops before
    its tokens exist (they may complete requests) and before it is back (then it has work)."""
    if rep.kv.prefix is not None:
        return None
    lanes, stop_at = [], math.inf
    for i, sched in enumerate(rep.schedulers):
        if sched.swapped or sched.speculation is not None:
            return None
        running = sched.running
        if i == lane:
            if sched.waiting or len(batch.decodes) != len(running) or batch.spec_tokens or batch.swaps:
                return None
            lanes.append(_Lane(i, batch.decodes, 1, None))
            continue
        flight = rep._flight[i] if rep._lane_busy[i] else None
        if flight is None:
            if running or sched.waiting:
                return None
            continue
        if sched.waiting or not _decodes_next(flight, running):
            stop_at = min(stop_at, flight.back if flight.done else flight.tokens_at)
        elif flight.done:                # its tokens are out, its return is still to come
            lanes.append(_Lane(i, list(running), 0, flight.back))
        else:
            lanes.append(_Lane(i, flight.decodes, flight.rounds, flight.back))
    return lanes, stop_at


def _decodes_next(flight: Flight, running: list) -> bool:
    """Whether a lane in flight decodes all its running requests next (as far as known now)."""
    if flight.done:
        return all(r.in_decode for r in running)
    return flight.decodes is not None and len(flight.decodes) == len(running)


def coalesced_run(rep, lane: int, batch) -> None:
    """Launch `batch` (decode-only, just scheduled on `lane`) and, while nothing can change, the
    launches that follow it; see the module docstring."""
    steady = _steady(rep, lane, batch)
    if steady is None:
        rep._schedule_micro_batch(lane, batch)
        return
    lanes, stop_at = steady
    if any(s.admits_new_arrivals() or not s.running for s in rep.schedulers):
        stop_at = min(stop_at, rep.arrivals.next_time())
    for lp in lanes:
        first = 0 if lp.index == lane else 1
        if first and lp.rem <= 0 and not rep._flight[lp.index].done:
            stop_at = min(stop_at, rep._flight[lp.index].tokens_at)   # in flight, completing
        rounds = min(max(lp.rem, 0), MAX_ROUNDS)     # (an array of a round per entry: cheap)
        if first <= rounds:
            lp.prepare(rep, rounds, first)
    books = Books(rep)
    _plan(rep, books, lanes, lane, stop_at)
    books.close(lanes)
    _hand_back(rep, lanes)


def _plan(rep, books: "Books", lanes: list[_Lane], lane: int, stop_at: float) -> None:
    """Launch rounds as PipelineLoop.run_pipeline would, until a stop condition of the module
    docstring."""
    n_lanes, kv, free, bs = len(rep.schedulers), rep.kv, rep._stage_free_at, rep.kv.block_size
    slots: list[_Lane | None] = [None] * n_lanes
    for lp in lanes:
        slots[lp.index] = lp
    starter = slots[lane]
    t = rep.env.now
    books.launch(starter, t)
    if starter.rem <= 0:
        stop_at = min(stop_at, starter.times[-1])
    while True:
        if free[0] > t:
            t = free[0]
        lp = _pick(rep._next_lane, slots, t)
        if lp is None:                   # the loop sleeps until a lane with work is back
            backs = [x.back for x in lanes if x.n and x.back is not None]    # (all later than t)
            if not backs:
                return
            t = min(backs)
            lp = _pick(rep._next_lane, slots, t)
        if t >= stop_at or not lp.can_launch():
            return
        a = lp.first + lp.launched       # the round it launches (>= 1)
        cum = lp.cum
        need = cum[a] - cum[a - 1] if a < len(cum) else lp.need(a, bs)
        if need and not kv.can_grow(need):
            return
        _returns(rep, lanes, t)
        if need:
            kv.allocate(need)
        if rep.inflight == 0:
            rep._active_since = t
        rep.inflight += 1
        rep._next_lane = (lp.index + 1) % n_lanes
        rep._launched += 1
        books.launch(lp, t)
        if a >= lp.rem:
            stop_at = min(stop_at, lp.times[-1])


def _pick(next_lane: int, slots: list, t: float) -> _Lane | None:
    """PipelineLoop._next_micro_batch's choice at t: round robin over lanes back, with work."""
    n_lanes = len(slots)
    for i in range(n_lanes):
        lp = slots[(next_lane + i) % n_lanes]
        if lp is not None and lp.n and (lp.back is None or lp.back <= t):
            return lp
    return None


def _returns(rep, lanes: list[_Lane], t: float) -> None:
    """PipelineLoop._lane_done of every return at or before t, in time order."""
    due = [x for x in lanes if x.back is not None and x.back <= t]
    if len(due) > 1:
        due.sort(key=lambda x: x.back)
    for lp in due:
        rep.inflight -= 1
        if rep.inflight == 0:
            rep.active_s += lp.back - rep._active_since
        lp.voided = lp.voided or lp.original_back
        lp.back = None


def _hand_back(rep, lanes: list[_Lane]) -> None:
    """Events for what the run leaves pending: each lane's last tokens (with its earlier rounds'
    tokens) and its return; the lanes' state as stepping would leave it."""
    env, bs = rep.env, rep.kv.block_size
    for lp in lanes:
        i = lp.index
        if lp.voided:
            rep._epoch[i] += 1
        if lp.launched:
            last = lp.first + lp.launched - 1
            if last:
                for req, p, held in zip(lp.reqs, lp.p, lp.held):
                    grown = -(-(p + last) // bs)
                    req.blocks = grown if grown > held else held
            flight = rep._flight[i] = Flight(lp.reqs, lp.times[-1], lp.back, len(lp.times))
            env.at(lp.times[-1]).callbacks.append(
                lambda _ev, reqs=lp.reqs, times=lp.times, flight=flight: _emit(rep, reqs, times, flight))
        if lp.back is not None and not lp.original_back:
            rep._return_at(i, lp.back)
        rep._lane_busy[i] = lp.back is not None


def _emit(rep, reqs: list, times: list[float], flight: Flight) -> None:
    """Replica._finish of each round at its own time, as Replica._decode_run emits a run."""
    k, n, end = len(times), len(reqs), times[-1]
    shared_max = 0.0
    if k > 1:
        shared = [b - a for a, b in zip(times, times[1:])]    # np.diff's subtractions
        rep.tokens.run(shared, n)
        shared_max = max(shared)
    rep.tokens_emitted += k * n
    first, log = times[0], rep.tokens
    for req in reqs:
        gap = first - req.last_token_s
        log.gap(gap)
        req.itl_max_s = max(req.itl_max_s, gap, shared_max)
        req.prefilled += k
        req.generated += k
        req.last_token_s = end
        if req.generated >= req.osl:
            rep._complete(req, end)
    log.bound()
    flight.done = True
