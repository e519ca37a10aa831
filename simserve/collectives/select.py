"""Which algorithms `auto` may choose among, and the size limits engines put on them.

NCCL's tuner (comm.md 1.3) and the engines' custom all-reduce dispatch (comm.md 1.4) both pick the
candidate with the least modelled time for this size and topology; `comm` does the same by playing
each candidate on an idle copy of the network (the same model that plays it in the simulation).
This module only says which candidates exist where.
"""
from __future__ import annotations

from simserve.collectives.algorithms import ALGORITHMS
from simserve.collectives.allreduce import ALLREDUCE
from simserve.errors import ConfigError

__all__ = ["candidates"]


def candidates(op: str, topology, ranks, nbytes: float) -> list[str]:
    """Algorithms that apply to this op, group and topology (in a stable order)."""
    if op not in ALGORITHMS:
        raise ConfigError(f"unknown collective op {op!r}; choose one of {', '.join(ALGORITHMS)}")
    if op == "allreduce":
        usable = [name for name in ALLREDUCE if ALLREDUCE.get(name).applies(topology, ranks, nbytes)]
        return sorted(usable, key=lambda name: ALLREDUCE.get(name).priority)
    if op in ("allgather", "reducescatter"):
        # NCCL's tuner prices ring, PAT (one GPU per node), NVLS and CollNet for these
        # (tuning.cc ncclTopoTuneModel); of those simserve has the ring. Direct and recursive
        # doubling/halving run when named.
        return ["ring"]
    return list(ALGORITHMS[op])
