"""Which algorithms `auto` may choose among, and the size limits engines put on them.

NCCL's tuner (comm.md 1.3) and the engines' custom all-reduce dispatch (comm.md 1.4) both pick the
candidate with the least modelled time for this size and topology; `comm` does the same by playing
each candidate on an idle copy of the network (the same model that plays it in the simulation).
This module only says which candidates exist where.
"""
from __future__ import annotations

from simserve.collectives.algorithms import ALGORITHMS
from simserve.errors import ConfigError

# vLLM all_reduce_utils.py: custom all-reduce max size on SM90 by world size (comm.md 1.4); beyond it
# vLLM hands the call to NCCL. Group sizes between the listed ones take the next larger size's cap.
_CUSTOM_AR_MAX_BYTES = ((2, 64 * 2**20), (4, 32 * 2**20), (6, 512 * 2**10), (8, 256 * 2**10))


def custom_allreduce_max_bytes(n: int) -> float:
    for size, cap in _CUSTOM_AR_MAX_BYTES:
        if n <= size:
            return cap
    return 0.0        # vLLM's custom all-reduce stops at 8 GPUs


def candidates(op: str, topology, ranks, nbytes: float) -> list[str]:
    """Algorithms that apply to this op, group and topology (in a stable order)."""
    if op not in ALGORITHMS:
        raise ConfigError(f"unknown collective op {op!r}; choose one of {', '.join(ALGORITHMS)}")
    n = len(ranks)
    nodes = {topology.node_of(r) for r in ranks}
    one_node = len(nodes) == 1
    pow2 = n & (n - 1) == 0
    if op == "allreduce":
        algos = ["ring", "tree", "recursive_doubling", "halving_doubling"]
        # custom (IPC) all-reduce kernels need direct peer access: NVLink or xGMI, one node
        if one_node and topology.fabric in ("nvswitch", "mesh") and nbytes <= custom_allreduce_max_bytes(n):
            algos += ["one_shot", "two_shot"]
        if one_node and topology.nvls and n > 1:
            algos.append("nvls")
        if not one_node:
            sizes = {sum(1 for r in ranks if topology.node_of(r) == m) for m in nodes}
            if len(sizes) == 1 and sizes.pop() > 1:
                algos.append("hierarchical")
        return algos
    if op == "allgather":
        return ["ring", "direct"] + (["recursive_doubling"] if pow2 else [])
    if op == "reducescatter":
        return ["ring", "direct"] + (["halving_doubling"] if pow2 else [])
    return list(ALGORITHMS[op])
