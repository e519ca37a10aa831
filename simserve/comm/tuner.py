"""The library's tuner on an idle network (pure: no SimPy): the time of a collective, and `auto`.

`auto` picks the candidate with the least idle-network time, as NCCL's tuner picks the algorithm
and protocol with the least modelled time (comm.md 1.3). Memoised in the run's `CollectiveCache`.
"""
from __future__ import annotations

from simserve.collectives.algorithms import ALGORITHMS
from simserve.collectives.select import candidates
from simserve.comm.cache import CollectiveCache, cache_for
from simserve.comm.compile import compiled, idle_time
from simserve.errors import ConfigError
from simserve.network.topology import Topology


def idle_s(topology: Topology, op: str, algo: str, ranks, nbytes, matrix=None,
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
        found = min(options, key=lambda a: (idle_s(topology, op, a, ranks, nbytes, matrix, cache),
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
    return idle_s(topology, op, chosen, ranks, nbytes, matrix, cache), program.algorithm
