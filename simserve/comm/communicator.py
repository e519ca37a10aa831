"""The engine's handle on collectives: choose an algorithm, play (exact) or replay (fast), account.

`fast` fidelity (docs/architecture.md): a collective whose links carry no other traffic when it starts takes
the time it takes on an idle copy of the network, memoised per (op, algorithm, ranks, bytes), and
`count` identical back-to-back collectives become one timeout of count x that time. Anything that
finds its links busy (active flows, or another replay in progress) is played flow by flow, as in
`exact`. Either way the bytes it moves are added to the network's `bytes_by_kind`.
A replay that traffic reaches before it ends turns back into played flows from where it stands
(`comm.replay`), so `fast` equals `exact` also where groups share links.

A dense stage's all-reduces sit between slices of compute (`lead_s` before each, `tail_s` after the
last): the replay covers the whole pattern as one timeout, holding the links throughout, and traffic
that reaches them in a compute slice or in a collective turns the rest back into the played pattern
from where it stands, so `fast` plays the same interleaving as `exact`.
"""
from __future__ import annotations

from collections import defaultdict

import simpy

from simserve.comm.cache import CollectiveCache, bind
from simserve.comm.compile import compiled
from simserve.comm.player import play
from simserve.comm.replay import Replay
from simserve.comm.tuner import collective_time, idle_s, resolve
from simserve.errors import ConfigError
from simserve.network.flows import Network

FIDELITIES = ("fast", "exact")


class Communicator:
    """One per simulation; shared by every replica (they share the network)."""

    def __init__(self, env: simpy.Environment, network: Network, fidelity: str = "fast",
                 cache: CollectiveCache | None = None):
        if fidelity not in FIDELITIES:
            raise ConfigError(f"unknown fidelity {fidelity!r}; choose one of {', '.join(FIDELITIES)}")
        self.env, self.network, self.fidelity = env, network, fidelity
        self.topology = network.topology
        # the run's memo tables; bound to the topology so module-level calls share them
        self.cache = bind(self.topology, cache or CollectiveCache())
        self.time_by_op: dict[str, float] = defaultdict(float)     # seconds of collectives per op
        self.calls_by_op: dict[str, int] = defaultdict(int)
        self.algorithms_used: dict[tuple[str, str], int] = defaultdict(int)   # (op, algo) -> calls
        self.replayed = 0
        self.played = 0
        # (op, algorithm asked, ranks, bytes) -> (compiled program, idle-network seconds): `run` is
        # called per layer pattern of every played iteration; one look-up instead of three
        self._programs: dict[tuple, tuple] = {}

    def collective_time(self, op: str, algo: str, ranks, nbytes: float, matrix=None) -> tuple[float, str]:
        """`collective_time` on this run's topology and cache."""
        return collective_time(self.topology, op, algo, ranks, nbytes, matrix, self.cache)

    def compiled(self, op: str, algo: str, ranks, nbytes: float, matrix=None):
        """The compiled program of a concrete algorithm, from this run's cache."""
        return compiled(self.topology, op, algo, ranks, nbytes, matrix, self.cache)

    @property
    def bytes_by_kind(self) -> dict[str, float]:
        return self.network.bytes_by_kind

    def run(self, op: str, ranks, nbytes: float, algo: str = "auto", count: int = 1, matrix=None,
            lead_s: float = 0.0, tail_s: float = 0.0):
        """SimPy process body (`yield from comm.run(...)`): `count` collectives, each after `lead_s`
        of compute, then `tail_s` of compute. Returns (algorithm used, seconds spent in the
        collectives). In `fast`, a collective that starts on idle links replays the memoised
        pattern for itself and every one after it (one event)."""
        ranks = tuple(ranks)
        if count <= 0 or len(ranks) <= 1 and op != "sendrecv":
            if count * lead_s + tail_s > 0:
                yield self.env.timeout(max(count, 0) * lead_s + tail_s)
            return (algo if algo != "auto" else "none"), 0.0
        program, duration_s = self._program(op, algo, ranks, nbytes, matrix)
        spent_s = yield from self.execute(program, duration_s, count, lead_s, tail_s)
        self.time_by_op[op] += spent_s
        self.calls_by_op[op] += count
        self.algorithms_used[(op, program.algorithm)] += count
        return program.algorithm, spent_s

    def _program(self, op: str, algo: str, ranks: tuple, nbytes: float, matrix):
        """(compiled program, idle-network seconds) of a collective, memoised without a matrix
        (bounded: cleared past the cache's size)."""
        key = (op, algo, ranks, nbytes) if matrix is None else None
        found = self._programs.get(key) if key is not None else None
        if found is None:
            chosen = resolve(self.topology, op, algo, ranks, nbytes, matrix, self.cache)
            found = (compiled(self.topology, op, chosen, ranks, nbytes, matrix, self.cache),
                     idle_s(self.topology, op, chosen, ranks, nbytes, matrix, self.cache))
            if key is not None:
                if len(self._programs) >= self.cache.max_entries:
                    self._programs.clear()
                self._programs[key] = found
        return found

    def execute(self, program, duration_s: float, count: int = 1, lead_s: float = 0.0, tail_s: float = 0.0):
        """SimPy process body: play or replay a compiled program `count` times (`duration_s`: its
        idle-network time), each after `lead_s` of compute, then `tail_s`; returns the seconds spent
        in the collectives."""
        env, network = self.env, self.network
        remaining, lead_done, spent_s = count, False, 0.0
        while remaining:
            # checked when a slice or a collective starts: while other traffic is on its links the
            # collective is played flow by flow; once they are idle the rest of the pattern is
            # replayed, and turns back into flows if traffic reaches its links (comm.replay)
            if self.fidelity == "fast" and not network.busy(program.links):
                remaining, lead_done, replay_s = yield from self._replay(
                    program, duration_s, remaining, lead_s, tail_s, lead_done)
                spent_s += replay_s
            elif lead_s and not lead_done:
                yield env.timeout(lead_s)
                lead_done = True
            else:
                spent_s += yield from play(env, network, program)
                self.played += 1
                remaining, lead_done = remaining - 1, False
        if tail_s and not lead_done:
            yield env.timeout(tail_s)
        return spent_s

    def _replay(self, program, duration_s, remaining, lead_s, tail_s, lead_done):
        """Replay the rest of the pattern; returns (collectives still to run, whether the compute
        slice before the next one (or the tail) is done, seconds spent in collectives)."""
        env = self.env
        program.account(self.network, remaining)
        replay = Replay(env, self.network, program, duration_s, remaining, lead_s, tail_s, lead_done)
        yield replay.timer                     # or `replay.interrupted`, which materialise redirects to
        if not replay.interrupted.triggered:
            replay.release()
            self.replayed += remaining
            return 0, True, duration_s * remaining
        done, event, extra_s, next_phase = replay.interrupted.value
        yield event
        self.replayed += done
        if next_phase is None:                 # stopped in a compute slice: collective `done` is next
            return remaining - done, True, duration_s * done
        if extra_s:
            yield env.timeout(extra_s)
        yield from play(env, self.network, program, next_phase, launch=False)
        self.played += 1
        return remaining - done - 1, False, duration_s * done + env.now - replay.collective_start_s(done)
