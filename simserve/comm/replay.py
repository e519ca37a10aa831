"""A replayed collective that turns back into played flows when other traffic reaches its links.

`fast` replays a collective whose links are idle as one timeout of its idle-network duration
(count times over for back-to-back repeats, each after `lead_s` of compute, with `tail_s` of compute
after the last: a dense stage's all-reduces between its layers' compute). While it runs, the
network holds its links for it (`Network.hold`). When a transfer is about to start on one of them,
the network calls `materialise()` first: the replay works out where the played pattern would stand
at this instant on its idle links (repetition; in a compute slice, or in the collective's phase
with each flow's remaining latency and bytes, by the same fluid model: `fluid.phase_state`),
undoes the byte accounting of what has not happened yet, injects the unfinished flows into the
network and hands the Communicator the rest to play. From then on the collective and the newcomer
share the links exactly as in `exact`, so `fast` equals `exact`.
"""
from __future__ import annotations

import math

from simserve.network.fluid import idle_phase_s, phase_state


class Replay:
    def __init__(self, env, network, program, duration_s: float, count: int, lead_s: float = 0.0,
                 tail_s: float = 0.0, lead_done: bool = False):
        self.env, self.network, self.program = env, network, program
        self.duration_s, self.count, self.lead_s = duration_s, count, lead_s
        self.period_s = lead_s + duration_s
        # a pattern whose first compute slice is already done starts, in effect, one slice ago
        self.start_s = env.now - (lead_s if lead_done else 0.0)
        self.end_s = self.start_s + self.period_s * count + tail_s
        self.interrupted = env.event()   # value: (repetitions done, event, extra_s, next phase or None)
        # the one event the Communicator's process waits on; `_interrupt` moves the process from it
        # to `interrupted` (no Condition of the two: one event per replay, not two)
        self.timer = env.timeout(self.end_s - env.now)
        self.process = env.active_process
        network.hold(self, program.links)

    def collective_start_s(self, k: int) -> float:
        """When the k-th collective of the pattern starts."""
        return self.start_s + k * self.period_s + self.lead_s

    def quiet_until(self, now: float) -> float:
        """When the pattern next moves bytes, seen at `now`: the start of the next collective when
        `now` is in a compute slice before it, never (inf) in the tail or after the end, `now`
        itself when a collective is under way (materialise's arithmetic)."""
        if now >= self.end_s:
            return math.inf
        offset = now - self.start_s
        done = min(int(offset // self.period_s), self.count) if self.period_s > 0 else 0
        if done == self.count:
            return math.inf
        if offset - done * self.period_s - self.lead_s < 0:
            return self.collective_start_s(done)
        return now

    def release(self) -> None:
        self.network.release(self, self.program.links)

    def materialise(self) -> None:
        env, network, program = self.env, self.network, self.program
        self.release()
        now = env.now
        if now >= self.end_s or self.interrupted.triggered:
            return                                     # finishing this instant: nothing to share
        offset = now - self.start_s
        done = min(int(offset // self.period_s), self.count) if self.period_s > 0 else 0
        within = offset - done * self.period_s - self.lead_s
        program.account(network, -(self.count - done))   # the replay had accounted every repetition
        if done == self.count or within < 0:             # in a compute slice: collective `done` is next
            next_s = self.end_s if done == self.count else self.collective_start_s(done)
            self._interrupt((done, env.timeout(max(next_s - now, 0.0)), 0.0, None))
            return
        self._interrupt((done,) + self._resume(within))

    def _interrupt(self, value) -> None:
        """Wake the waiting process with `value` now instead of at the timer: its resume callback
        moves from the timer to `interrupted` (what simpy.Process.interrupt does, without raising
        into the process and at normal priority, as the event it replaces)."""
        resume = self.process._resume
        self.timer.callbacks.remove(resume)
        self.process._target = self.interrupted
        self.interrupted.callbacks.append(resume)
        self.interrupted.succeed(value)

    def _resume(self, within: float):
        """(event to wait for, extra seconds after it, next phase to play) from `within` seconds
        into one repetition; accounts the phases that have started by then, as `play` would."""
        env, network, program = self.env, self.network, self.program
        if within < program.launch_s:
            return env.timeout(program.launch_s - within), 0.0, 0
        capacity = [link.bw_Bps for link in network.topology.links]
        t = program.launch_s
        for k, phase in enumerate(program.phases):
            for item in phase.items:
                network.account(item[0], item[3] if len(item) > 3 else item[1], program.op)
            span = idle_phase_s(phase.items, capacity) if phase.items else 0.0
            if within < t + span:
                left = phase_state(phase.items, capacity, within - t)
                items = [(item[0] if b > 0 else (), b, lat) for item, (lat, b) in zip(phase.items, left)
                         if b > 0 or lat > 0]
                return network.transfer_batch(items, program.op, account=False), phase.extra_s, k + 1
            if within < t + span + phase.extra_s:
                return env.timeout(t + span + phase.extra_s - within), 0.0, k + 1
            t += span + phase.extra_s
        return env.timeout(0), 0.0, len(program.phases)
