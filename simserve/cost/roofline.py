"""Roofline time of an operator: the slower of compute and memory, plus a fixed cost per kernel.

Where the GPU has a measured GEMM table (efficiency.shape_aware_gemm), a weight GEMM's time is
instead its ideal roofline time times the measured factor rho(M; K, N) (cost.gemm_table), which
already holds the kernel's fixed cost. Elementwise kernels may have their own measured fraction of
HBM bandwidth (efficiency.elementwise, by operator name)."""
from __future__ import annotations

from typing import Iterable

from simserve.catalog import Gpu
from simserve.cost import gemm_table
from simserve.cost.operators import Op


def elementwise_eff(name: str, gpu: Gpu) -> float:
    """The measured bandwidth fraction of the elementwise kernel `name` ends with, else `memory`."""
    table = gpu.efficiency.elementwise
    for key in sorted(table, key=len, reverse=True):
        if name.endswith(key):
            return table[key]
    return gpu.efficiency.memory


def efficiencies(op: Op, gpu: Gpu) -> tuple[float, float]:
    """(compute, memory) fractions of peak for this kind of kernel on this GPU."""
    eff = gpu.efficiency
    if op.kind.startswith("attention"):
        return eff.attention_compute, eff.attention_memory
    if op.kind == "elementwise" and eff.elementwise:
        return gpu.compute_eff(op.dtype), elementwise_eff(op.name, gpu)
    return gpu.compute_eff(op.dtype), eff.memory


def gemm_curve(op, gpu: Gpu):
    """rho(M) of a weight GEMM on a GPU with a measured GEMM table, else None."""
    if op.kind != "gemm" or op.shape is None:
        return None
    return gemm_table.curve(gpu, op.dtype, *op.shape)


def fixed_s(op, gpu: Gpu) -> float:
    """Fixed time of one call: kernels x kernel_overhead_s, plus attention's measured fixed cost."""
    eff = gpu.efficiency
    extra = eff.attention_prefill_s if op.kind == "attention_prefill" else \
        eff.attention_decode_s if op.kind == "attention_decode" else 0.0
    return op.kernels * eff.kernel_overhead_s + extra


def op_time(op: Op, gpu: Gpu) -> float:
    rho = gemm_curve(op, gpu)
    if rho is not None:
        k, n = op.shape
        m = op.flops / (2.0 * k * n)
        return rho(m) * max(op.flops / gpu.flops(op.dtype), op.bytes / gpu.hbm_bw_Bps)
    eta_c, eta_m = efficiencies(op, gpu)
    compute_s = op.flops / (gpu.flops(op.dtype) * eta_c) if op.flops else 0.0
    memory_s = op.bytes / (gpu.hbm_bw_Bps * eta_m)
    return max(compute_s, memory_s) + fixed_s(op, gpu)


def ops_time(ops: Iterable[Op], gpu: Gpu) -> float:
    return sum(op_time(op, gpu) for op in ops)
