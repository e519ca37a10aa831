"""The engine's handle on collectives: choose an algorithm, play (exact) or replay (fast), account.

`fast` fidelity (docs/architecture.md): a collective whose links carry no other traffic when it starts takes
the time it takes on an idle copy of the network, memoised per (op, algorithm, ranks, bytes), and
`count` identical back-to-back collectives become one timeout of count x that time. Anything that
finds its links busy (active flows, or another replay in progress) is played flow by flow, as in
`exact`. Either way the bytes it moves are added to the network's `bytes_by_kind`.
A replay that traffic reaches before it ends turns back into played flows from where it stands
(`comm.replay`), so `fast` equals `exact` also where groups share links.
"""
from __future__ import annotations

from collections import defaultdict

import simpy

from simserve.collectives.algorithms import ALGORITHMS
from simserve.collectives.select import candidates
from simserve.comm.cache import CollectiveCache, bind, cache_for
from simserve.comm.player import compiled, idle_time, play
from simserve.comm.replay import Replay
from simserve.errors import ConfigError
from simserve.network.flows import Network
from simserve.network.topology import Topology

FIDELITIES = ("fast", "exact")


def _idle(topology: Topology, op: str, algo: str, ranks, nbytes, matrix=None,
          cache: CollectiveCache | None = None) -> float:
    cache = cache or cache_for(topology)
    key = (op, algo, tuple(ranks), nbytes, None if matrix is None else tuple(map(tuple, matrix)))
    memo = cache.table("idle_time")
    found = memo.get(key)
    if found is None:
        found = idle_time(topology, compiled(topology, op, algo, ranks, nbytes, matrix, cache), cache)
        memo[key] = found
    return found


def choose_algorithm(topology: Topology, op: str, ranks, nbytes: float, matrix=None,
                     cache: CollectiveCache | None = None) -> str:
    """`auto`: the candidate with the least idle-network time (NCCL's tuner rule, comm.md 1.3)."""
    cache = cache or cache_for(topology)
    key = (op, tuple(ranks), nbytes, None if matrix is None else tuple(map(tuple, matrix)))
    memo = cache.table("auto")
    found = memo.get(key)
    if found is None:
        options = candidates(op, topology, ranks, nbytes)
        found = min(options, key=lambda a: (_idle(topology, op, a, ranks, nbytes, matrix, cache),
                                            options.index(a)))
        memo[key] = found
    return found


def resolve(topology: Topology, op: str, algo: str, ranks, nbytes: float, matrix=None,
            cache: CollectiveCache | None = None) -> str:
    if op not in ALGORITHMS:
        raise ConfigError(f"unknown collective op {op!r}; choose one of {', '.join(ALGORITHMS)}")
    if algo == "auto":
        return choose_algorithm(topology, op, ranks, nbytes, matrix, cache)
    if algo not in ALGORITHMS[op]:
        raise ConfigError(f"unknown {op} algorithm {algo!r}; choose one of "
                          f"{', '.join(ALGORITHMS[op])} or auto")
    return algo


def collective_time(topology: Topology, op: str, algo: str, ranks, nbytes: float,
                    matrix=None, cache: CollectiveCache | None = None) -> tuple[float, str]:
    """(seconds on an idle network, algorithm actually used). Pure analysis; memoised in `cache`
    (default: the cache bound to this topology, i.e. the run's when a Communicator exists)."""
    cache = cache or cache_for(topology)
    chosen = resolve(topology, op, algo, ranks, nbytes, matrix, cache)
    program = compiled(topology, op, chosen, ranks, nbytes, matrix, cache)
    return _idle(topology, op, chosen, ranks, nbytes, matrix, cache), program.algorithm


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

    def collective_time(self, op: str, algo: str, ranks, nbytes: float, matrix=None) -> tuple[float, str]:
        """`collective_time` on this run's topology and cache."""
        return collective_time(self.topology, op, algo, ranks, nbytes, matrix, self.cache)

    def compiled(self, op: str, algo: str, ranks, nbytes: float, matrix=None):
        """The compiled program of a concrete algorithm, from this run's cache."""
        return compiled(self.topology, op, algo, ranks, nbytes, matrix, self.cache)

    def _replay(self, program, chosen, ranks, nbytes, matrix, remaining):
        """Replay `remaining` repetitions; returns how many are still to run (0 unless disturbed)."""
        duration_s = _idle(self.topology, program.op, chosen, ranks, nbytes, matrix, self.cache)
        program.account(self.network, remaining)
        replay = Replay(self.env, self.network, program, duration_s, remaining)
        yield self.env.timeout(duration_s * remaining) | replay.interrupted
        if not replay.interrupted.triggered:
            replay.release()
            self.replayed += remaining
            return 0
        done, event, extra_s, next_phase = replay.interrupted.value
        yield event
        if extra_s:
            yield self.env.timeout(extra_s)
        yield from play(self.env, self.network, program, next_phase, launch=False)
        self.replayed += done
        self.played += 1
        return remaining - done - 1

    @property
    def bytes_by_kind(self) -> dict[str, float]:
        return self.network.bytes_by_kind

    def run(self, op: str, ranks, nbytes: float, algo: str = "auto", count: int = 1, matrix=None):
        """SimPy process body (`yield from comm.run(...)`): `count` back-to-back collectives.
        Returns (algorithm used, total duration in seconds). In `fast`, a collective that starts on
        idle links replays the memoised duration for itself and every one after it (one event)."""
        start_s = self.env.now
        ranks = tuple(ranks)
        if count <= 0 or len(ranks) <= 1 and op != "sendrecv":
            return (algo if algo != "auto" else "none"), 0.0
        chosen = resolve(self.topology, op, algo, ranks, nbytes, matrix, self.cache)
        program = compiled(self.topology, op, chosen, ranks, nbytes, matrix, self.cache)
        remaining = count
        while remaining:
            # each collective is checked when it starts: while other traffic is on its links it is
            # played flow by flow; the first that finds them idle replays itself and the rest, and
            # turns back into flows if traffic reaches its links before it ends (comm.replay)
            if self.fidelity == "fast" and not self.network.busy(program.links):
                remaining = yield from self._replay(program, chosen, ranks, nbytes, matrix, remaining)
            else:
                yield from play(self.env, self.network, program)
                self.played += 1
                remaining -= 1
        elapsed_s = self.env.now - start_s
        self.time_by_op[op] += elapsed_s
        self.calls_by_op[op] += count
        self.algorithms_used[(op, program.algorithm)] += count
        return program.algorithm, elapsed_s
