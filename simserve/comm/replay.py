"""A replayed collective that turns back into played flows when other traffic reaches its links.

`fast` replays a collective whose links are idle as one timeout of its idle-network duration
(count times over for back-to-back repeats). While it runs, the network holds its links for it
(`Network.hold`). When a transfer is about to start on one of them, the network calls
`materialise()` first: the replay works out where the played collective would stand at this
instant on its idle links (repetition, phase, each flow's remaining latency and bytes, by the same
fluid model: `fluid.phase_state`), undoes the byte accounting of what has not happened yet, injects
the unfinished flows into the network and hands the Communicator the rest to play. From then on
the collective and the newcomer share the links exactly as in `exact`, so `fast` equals `exact`.
"""
from __future__ import annotations

from simserve.network.fluid import idle_phase_s, phase_state


class Replay:
    def __init__(self, env, network, program, duration_s: float, count: int):
        self.env, self.network, self.program = env, network, program
        self.duration_s, self.count = duration_s, count
        self.start_s = env.now
        self.end_s = env.now + duration_s * count
        self.interrupted = env.event()       # value: (repetitions done, event, extra_s, next phase)
        network.hold(self, program.links)

    def release(self) -> None:
        self.network.release(self, self.program.links)

    def materialise(self) -> None:
        env, network, program = self.env, self.network, self.program
        self.release()
        now = env.now
        if now >= self.end_s or self.interrupted.triggered:
            return                                     # finishing this instant: nothing to share
        offset = now - self.start_s
        done = min(int(offset // self.duration_s), self.count - 1) if self.duration_s > 0 else 0
        within = offset - done * self.duration_s
        program.account(network, -(self.count - done))   # the replay had accounted every repetition
        self.interrupted.succeed((done,) + self._resume(within))

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
