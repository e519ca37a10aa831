"""Two-batch overlap of TP all-reduces with compute (`engine.overlap: tp_comm`; layer 1).

As SGLang's two-batch overlap and TensorRT-LLM's micro-batch interleaving run a decode step: the
batch is split into two halves A and B, and while one half's all-reduce runs on the communication
stream the other half computes. The compute stream runs A0 B0 A1 B1 ... An Bn (each a slice of
its half's stage compute, cut at the n layer boundaries where the Megatron all-reduces fall); the
communication stream runs A's collective k after A_k, then B's after B_k; A_{k+1} waits for A's
collective k. When a slice outlasts a collective the all-reduces hide entirely; otherwise the
communication stream sets the pace.

The price is not free: each half runs every GEMM again, so a memory-bound decode reads the weights
twice (the half-batch compute comes from the cost model, not from halving the whole batch's time).
A stage that does not split (fewer than two tokens) runs as DensePlanner plans it.
"""
from __future__ import annotations

from simserve.cost.operators import BatchStats
from simserve.iteration.build import DensePlanner, _scaled
from simserve.iteration.steps import IterationPlan, TwoBatch


def two_batch_s(slice_s: float, comm_s: float, n: int) -> float:
    """Seconds of two interleaved halves of n + 1 compute slices each, with a collective of
    `comm_s` after each of the first n slices of each half (the module docstring's order)."""
    a_end = b_end = comm_a = comm_b = 0.0
    for k in range(n + 1):
        a_end = max(b_end, comm_a) + slice_s
        if k < n:
            comm_a = max(a_end, comm_b) + comm_s
        b_end = max(a_end, comm_b) + slice_s
        if k < n:
            comm_b = max(b_end, comm_a) + comm_s
    return b_end


class OverlapPlanner(DensePlanner):
    """A dense stage whose TP all-reduces overlap the other half-batch's compute."""

    # its plans are priced per iteration (the overlap is not compute + communication)
    deterministic = False

    def plan(self, stats: BatchStats) -> IterationPlan:
        if not self.allreduces or stats.tokens < 2:
            return super().plan(stats)
        half = _scaled(stats, 0.5)
        compute_s = self.step_cost.time(half)
        comm = self.communication(half.tokens, stats.logits_tokens)
        return IterationPlan((TwoBatch(compute_s, comm[0]),) + comm[1:])

