"""Roofline time of an operator: the slower of compute and memory, plus a fixed cost per kernel.

Where the GPU has a measured GEMM table (efficiency.shape_aware_gemm), a weight GEMM's time is
instead its ideal roofline time times the measured factor rho(M; K, N) (cost.gemm_table), which
already holds the kernel's fixed cost. Elementwise kernels may have their own measured fraction of
HBM bandwidth (efficiency.elementwise, by operator name). Where it has measured operator tables
(efficiency.measured_ops), decode attention and measured elementwise kernels take the fitted time
times the table's correction r (cost.op_tables)."""
from __future__ import annotations

from typing import Iterable

from simserve.catalog import Gpu
from simserve.cost import gemm_table, op_tables
from simserve.cost.operators import FEATURES, Op


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


def fitted_s(op, gpu: Gpu, flops: float, nbytes: float) -> float:
    """The scalar model's time of `op` (an Op or OpModel) moving these FLOPs and bytes."""
    eta_c, eta_m = efficiencies(op, gpu)
    compute_s = flops / (gpu.flops(op.dtype) * eta_c) if flops else 0.0
    return max(compute_s, nbytes / (gpu.hbm_bw_Bps * eta_m)) + fixed_s(op, gpu)


def _at(model, feats: dict) -> tuple[float, float]:
    return (sum(c * feats[f] for f, c in model.flops.items()), sum(c * feats[f] for f, c in model.bytes.items()))


def table_ratio(model, gpu: Gpu):
    """The measured-table correction r(x) of an OpModel on this GPU (cost.op_tables), else None."""
    if not gpu.efficiency.measured_ops:
        return None
    if model.kind == "attention_decode":
        def decode_s(b: float, kv: float) -> float:
            feats = dict.fromkeys(FEATURES, 0.0) | {"const": 1.0, "tokens": b, "decode_tokens": b,
                                                   "decode_kv_tokens": kv, "logits_tokens": b}
            return fitted_s(model, gpu, *_at(model, feats))
        return op_tables.decode_attention_ratio(model, gpu, decode_s)
    if model.kind == "elementwise":
        def elementwise_s(tokens: float) -> float:
            return fitted_s(model, gpu, *_at(model, dict.fromkeys(FEATURES, 0.0) | {model.gate: tokens}))
        return op_tables.elementwise_ratio(model, gpu, FEATURES.index(model.gate), elementwise_s,
                                           gpu.hbm_bw_Bps * efficiencies(model, gpu)[1])
    return None


def op_time(op: Op, gpu: Gpu) -> float:
    rho = gemm_curve(op, gpu)
    if rho is not None:
        k, n = op.shape
        m = op.flops / (2.0 * k * n)
        return rho(m) * max(op.flops / gpu.flops(op.dtype), op.bytes / gpu.hbm_bw_Bps)
    ratio = table_ratio(op.model, gpu) if op.model is not None else None
    return fitted_s(op, gpu, op.flops, op.bytes) * (ratio(op.x) if ratio is not None else 1.0)


def ops_time(ops: Iterable[Op], gpu: Gpu) -> float:
    return sum(op_time(op, gpu) for op in ops)
