"""Measured operator tables as corrections on the fitted cost (simserve.cost.op_tables).

The profiled H100 and H200 set efficiency.measured_ops: decode attention and the elementwise
kernels with a measured counterpart take their fitted time times measured / fitted, interpolated
between the table's points and held at its edges. These tests pin the properties the engine and
the held-out check rely on: a measured point is reproduced, the correction is continuous and held
outside the table, the fast decode path stays bit-identical, and GPUs without tables are untouched.
"""
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simserve.catalog import get_hardware, get_model
from simserve.cost import BatchStats, Precision, Shard, StepCost, layer_ops
from simserve.cost.operators import layer_op_models
from simserve.cost.roofline import fitted_s, op_time, table_ratio
from simserve.calibration import load_profile

H100, H200 = get_hardware("h100-sxm"), get_hardware("h200")
L8B, L70B = get_model("llama-3.1-8b"), get_model("llama-3.1-70b")


def op_named(name, model, tp, batch, precision=Precision()):
    return next(op for op in layer_ops(model, Shard(tp=tp), precision, batch) if op.name == name)


def measured(gpu, table, **key):
    t = load_profile(gpu)[table]
    for column, value in key.items():
        t = t[t[column] == value]
    assert len(t) == 1, key
    return float(t.time_us.iloc[0]) * 1e-6


@pytest.mark.parametrize("gpu,name", [(H100, "h100-sxm"), (H200, "h200")])
@pytest.mark.parametrize("batch,ctx", [(16, 8192), (4, 1024), (64, 2048), (256, 4096)])
def test_decode_attention_reproduces_the_table_at_its_points(gpu, name, batch, ctx):
    # Llama-70B at tp 8: 8 query heads and 1 KV head per GPU, a measured head configuration
    op = op_named("attention_decode", L70B, 8, BatchStats.of([], [ctx] * batch))
    want = measured(name, "attn_decode", nq=8, nkv=1, batch=batch, ctx=ctx)
    assert op_time(op, gpu) == pytest.approx(want, rel=1e-9)   # measured / fitted x fitted: rounding only


@pytest.mark.parametrize("name,width,tokens,kernel,calls", [
    ("silu_mul", 14336, 64, "silu_mul", 1), ("norms", 4096, 256, "add_rms_norm", 2)])
def test_elementwise_reproduces_the_table_at_its_points(name, width, tokens, kernel, calls):
    op = op_named(name, L8B, 1, BatchStats.of([(tokens, 0)], logits_tokens=0))
    want = calls * measured("h200", "elementwise", op=kernel, tokens=tokens, width=width)
    assert op_time(op, H200) == pytest.approx(want, rel=1e-9)


def test_fp8_quantisation_is_one_measured_call_per_gemm_input():
    prec = Precision(weights="fp8")
    op = op_named("ffn_quantize_activations", L8B, 1, BatchStats.of([(1024, 0)], logits_tokens=0), prec)
    want = sum(measured("h200", "elementwise", op="quantize_fp8", tokens=1024, width=w) for w in (4096, 14336))
    assert op.shape == (4096, 14336) and op_time(op, H200) == pytest.approx(want, rel=1e-9)
    # the table measures the dynamic-scale two-pass kernel: a static-scale quantisation (one pass)
    # keeps the fitted factors
    static = op_named("ffn_quantize_activations", L8B, 1, BatchStats.of([(1024, 0)], logits_tokens=0),
                      Precision(weights="fp8", activation_scale="static"))
    assert table_ratio(static.model, H200) is None


def test_decode_correction_is_held_at_the_table_edges():
    """Beyond 8k context and 256 sequences the ratio to the fitted model stays the edge's: the time
    then grows as the fitted model does (linearly with the KV bytes), without a jump."""
    def ratio(batch, ctx):
        op = op_named("attention_decode", L70B, 8, BatchStats.of([], [ctx] * batch))
        return op_time(op, H200) / fitted_s(op, H200, op.flops, op.bytes)
    assert ratio(16, 32768) == pytest.approx(ratio(16, 8192), rel=1e-12)
    assert ratio(1024, 2048) == pytest.approx(ratio(256, 2048), rel=1e-12)
    assert ratio(16, 8191) == pytest.approx(ratio(16, 8192), rel=1e-3)   # continuous at a knot
    mid = ratio(16, 6144)   # piecewise linear in context between the 4k and 8k points
    assert mid == pytest.approx((ratio(16, 4096) + ratio(16, 8192)) / 2, rel=1e-12)


def test_decode_correction_follows_the_kernel_path_between_measured_counts():
    """Llama-8B on one H100 (32 query, 8 KV heads): up to 4 sequences the profiler's kernel splits
    the context (4 x 8 pairs <= 132 / 4 SMs), from 5 on it does not. 9 sequences take the
    correction of 16 (the nearest unsplit count), not a blend with the split point at 4; 2 lie
    between the split points 1 and 4."""
    def ratio(batch, ctx=2048):
        op = op_named("attention_decode", L8B, 1, BatchStats.of([], [ctx] * batch))
        return op_time(op, H100) / fitted_s(op, H100, op.flops, op.bytes)
    assert ratio(9) == pytest.approx(ratio(16), rel=1e-12)
    assert min(ratio(1), ratio(4)) < ratio(2) < max(ratio(1), ratio(4))
    # so padding a graph batch of 9 to 16 rows of the same KV never makes it faster here
    cost = StepCost(L8B, Shard(), Precision(), H100)
    nine = BatchStats.of([], [1000] * 9)
    assert cost.time(BatchStats(decode_tokens=16, logits_tokens=16, decode_kv_tokens=9000.0)) > cost.time(nine)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 600), st.integers(1, 20000), st.integers(1, 150))   # both sums (cost.step)
def test_decode_times_stay_bit_identical_with_measured_tables(n, ctx, steps):
    """The context-dependent correction is evaluated with the same IEEE operations on arrays."""
    cost = StepCost(L70B, Shard(tp=8), Precision(), H200)
    kv0 = float(n * ctx)
    many = cost.decode_times(n, kv0, steps)
    for j in range(steps):
        assert many[j] == cost.time(BatchStats(decode_tokens=n, decode_kv_tokens=kv0 + n * j, logits_tokens=n))


def test_step_cost_agrees_with_the_operator_sum():
    batch = BatchStats.of([(300, 0)], [3000] * 24)
    cost = StepCost.of_ops([(m, 1.0) for m in layer_op_models(L70B, Shard(tp=8), Precision(weights="fp8"))], H200)
    ops = layer_ops(L70B, Shard(tp=8), Precision(weights="fp8"), batch)
    assert cost.time(batch) == pytest.approx(sum(op_time(op, H200) for op in ops), rel=1e-12)


def test_without_measured_ops_or_tables_the_fitted_model_is_used():
    batch = BatchStats.of([], [2048] * 16)
    off = replace(H200, efficiency=replace(H200.efficiency, measured_ops=False))
    for op in layer_ops(L70B, Shard(tp=8), Precision(), batch):
        if op.kind != "gemm":
            assert op_time(op, off) == fitted_s(op, off, op.flops, op.bytes)
    # heads the table never measured (Llama-70B at tp 2: 32 query, 4 KV heads) and the H100's
    # elementwise kernels (its profile has no elementwise.csv) fall back to the fitted factors
    for model, tp, gpu, name in ((L70B, 2, H200, "attention_decode"), (L8B, 1, H100, "silu_mul")):
        model_op = op_named(name, model, tp, batch).model
        assert table_ratio(model_op, gpu) is None


def test_profiled_gpus_use_their_tables():
    assert H100.efficiency.measured_ops and H200.efficiency.measured_ops
    assert not get_hardware("a100-80gb").efficiency.measured_ops
    assert np.isfinite(op_time(op_named("attention_decode", L8B, 1, BatchStats.of([], [100] * 3)), H200))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 600), st.floats(1.0, 20000.0), st.floats(0.0, 40.0), st.integers(1, 40))
def test_decode_attention_ratio_of_a_run_equals_each_context(b, first, growth, steps):
    """The array branch (ends clamped or not, one segment or several, every context clamped to an
    edge) gives each non-decreasing context's float-branch value."""
    cost = StepCost(L70B, Shard(tp=8), Precision(), H200)
    ratio = next(op[5] for op in cost.ops if type(op[5]).__name__ == "DecodeAttentionRatio")
    kv = (first + growth * np.arange(steps, dtype=float)) * b
    x = [1.0, float(b), 0.0, float(b), 0.0, 0.0, kv, float(b)]
    run = np.broadcast_to(ratio(list(x)), steps)
    for j in range(steps):
        x[6] = float(kv[j])
        assert run[j] == ratio(x)


def test_memory_bound_operators_skip_the_compute_sum():
    from simserve.cost.step import _memory_bound
    assert _memory_bound([], [(1, 1.0)]) and _memory_bound([(6, 1.0)], [(6, 2.0), (3, 1.0)])
    assert not _memory_bound([(6, 2.0)], [(6, 1.0)]) and not _memory_bound([(4, 1.0)], [(5, 9.0)])
    assert not _memory_bound([(1, 1.0), (6, 1.0)], [(1, 9.0), (6, 9.0)])
