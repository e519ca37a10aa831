"""Roofline time of an operator: the slower of compute and memory, plus a fixed cost per kernel."""
from __future__ import annotations

from typing import Iterable

from simserve.catalog import Gpu
from simserve.cost.operators import Op


def efficiencies(op: Op, gpu: Gpu) -> tuple[float, float]:
    """(compute, memory) fractions of peak for this kind of kernel on this GPU."""
    eff = gpu.efficiency
    if op.kind.startswith("attention"):
        return eff.attention_compute, eff.attention_memory
    return gpu.compute_eff(op.dtype), eff.memory


def op_time(op: Op, gpu: Gpu) -> float:
    eta_c, eta_m = efficiencies(op, gpu)
    compute_s = op.flops / (gpu.flops(op.dtype) * eta_c) if op.flops else 0.0
    memory_s = op.bytes / (gpu.hbm_bw_Bps * eta_m)
    return max(compute_s, memory_s) + op.kernels * gpu.efficiency.kernel_overhead_s


def ops_time(ops: Iterable[Op], gpu: Gpu) -> float:
    return sum(op_time(op, gpu) for op in ops)
