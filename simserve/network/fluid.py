"""Pure fluid evaluation (no SimPy) of concurrent flows on an otherwise idle network.

Same model as `flows.Network`: max-min fair rates by progressive filling, recomputed whenever a flow
starts (after its latency) or ends. `comm` uses it for the idle-network time of a collective phase
(fast fidelity's memo, `auto`'s candidates): no event queue, and identical phases are costed once.
Tests check it against the SimPy network to float precision.
"""
from __future__ import annotations

from typing import Sequence


def maxmin_rates(flows: Sequence[Sequence[int]], capacity_Bps: Sequence[float]) -> list[float]:
    """Max-min fair rate of each flow (a sequence of link ids) by progressive filling."""
    cap_left: dict[int, float] = {}
    users: dict[int, list[int]] = {}
    for f, links in enumerate(flows):
        for i in links:
            if i in users:
                users[i].append(f)
            else:
                users[i] = [f]
                cap_left[i] = capacity_Bps[i]
    unfrozen = {i: len(u) for i, u in users.items()}
    rates = [0.0] * len(flows)
    frozen = [False] * len(flows)
    remaining = len(flows)
    while remaining:
        share = min(cap_left[i] / n for i, n in unfrozen.items() if n)
        limit = share * (1 + 1e-12)
        for i in [i for i, n in unfrozen.items() if n and cap_left[i] / n <= limit]:
            for f in users[i]:
                if frozen[f]:
                    continue
                frozen[f] = True
                remaining -= 1
                rates[f] = share
                for j in flows[f]:
                    cap_left[j] = max(cap_left[j] - share, 0.0)
                    unfrozen[j] -= 1
    return rates


def idle_phase_s(items: Sequence[tuple], capacity_Bps: Sequence[float]) -> float:
    """Time until the last of these flows (link ids, bytes, latency_s, ...) completes, all released
    at t = 0 on an idle network."""
    pending = sorted(((item[2], tuple(item[0]), float(item[1])) for item in items), key=lambda x: x[0])
    end_s = 0.0
    t = 0.0
    active: list[list] = []          # [links, remaining bytes]
    k = 0
    while k < len(pending) or active:
        if not active and pending[k][0] > t:
            t = pending[k][0]
        while k < len(pending) and pending[k][0] <= t:
            _, links, nbytes = pending[k]
            k += 1
            if links and nbytes > 0:
                active.append([links, nbytes])
            else:
                end_s = max(end_s, t)
        if not active:
            continue
        rates = maxmin_rates([f[0] for f in active], capacity_Bps)
        finish = [t + f[1] / r for f, r in zip(active, rates)]
        next_finish = min(finish)
        next_start = pending[k][0] if k < len(pending) else float("inf")
        if next_start < next_finish:
            dt = next_start - t
            for f, r in zip(active, rates):
                f[1] -= r * dt
            t = next_start
            continue
        limit = next_finish + abs(next_finish) * 1e-12
        survivors = []
        for f, r, fin in zip(active, rates, finish):
            if fin <= limit:
                end_s = max(end_s, fin)
            else:
                f[1] -= r * (next_finish - t)
                survivors.append(f)
        active = survivors
        t = next_finish
    return end_s


def phase_state(items: Sequence[tuple], capacity_Bps: Sequence[float], at_s: float) -> list[tuple[float, float]]:
    """Where each flow (link ids, bytes, latency_s, ...) of a phase released at t = 0 on an idle
    network stands at `at_s`: (latency still to wait, bytes still to move); (0, 0) once done.
    Used to turn a replayed collective back into played flows mid-way (comm.replay)."""
    state = [[float(item[2]), float(item[1]) if item[0] else 0.0] for item in items]
    t = 0.0
    while t < at_s:
        active = [k for k, (lat, left) in enumerate(state) if lat <= t and left > 0]
        waiting = [state[k][0] for k, (lat, left) in enumerate(state) if lat > t]
        next_start = min(waiting, default=float("inf"))
        if not active:
            if next_start == float("inf"):
                break
            t = min(next_start, at_s)
            continue
        rates = maxmin_rates([tuple(items[k][0]) for k in active], capacity_Bps)
        next_finish = min(t + state[k][1] / r for k, r in zip(active, rates))
        step_to = min(next_start, next_finish, at_s)
        limit = step_to + abs(step_to) * 1e-12
        for k, r in zip(active, rates):
            if t + state[k][1] / r <= limit and step_to == next_finish:
                state[k][1] = 0.0
            else:
                state[k][1] -= r * (step_to - t)
        t = step_to
    return [(max(lat - at_s, 0.0), max(left, 0.0)) for lat, left in state]
