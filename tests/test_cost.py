"""Cost model: operator FLOPs/bytes against hand counts, roofline, the fast evaluator, memory."""

import pytest
from hypothesis import given, settings, strategies as st

from simserve.catalog import get_hardware, get_model
from simserve.cost import BatchStats, Precision, Shard, StepCost, head_ops, layer_ops, memory_plan, ops_time
from simserve.cost.memory import GiB, weights_bytes

H100 = get_hardware("h100-sxm")
L8B = get_model("llama-3.1-8b")
L70B = get_model("llama-3.1-70b")


def test_layer_gemm_flops_are_two_flops_per_weight_per_token():
    batch = BatchStats.of([(100, 0)], logits_tokens=0)
    ops = {op.name: op for op in layer_ops(L8B, Shard(), Precision(), batch)}
    # Llama-3.1-8B layer: 4096x6144 QKV, 4096x4096 O, 4096x28672 gate/up, 14336x4096 down
    weights = 4096 * 6144 + 4096 * 4096 + 4096 * 28672 + 14336 * 4096
    gemm_flops = sum(op.flops for op in ops.values() if op.kind == "gemm")
    assert gemm_flops == 2 * 100 * weights


def test_model_weights_match_published_parameter_counts():
    # 8.03B and 70.6B parameters (Meta's model cards); bf16 = 2 bytes each
    assert weights_bytes(L8B, Shard(), Precision()) / 2 == pytest.approx(8.03e9, rel=0.01)
    assert weights_bytes(L70B, Shard(), Precision()) / 2 == pytest.approx(70.6e9, rel=0.01)


def test_kv_bytes_per_token_is_gqa_aware():
    # 2 (K and V) x 8 KV heads x 128 dims x 2 bytes x 32 layers = 128 KiB per token
    assert memory_plan(L8B, Shard(), Precision(), H100).kv_bytes_per_token == 2 * 8 * 128 * 2 * 32
    # tp=16 > 8 KV heads: each GPU keeps one head (replicated), never less
    plan = memory_plan(L70B, Shard(tp=16), Precision(), H100)
    assert plan.kv_bytes_per_token == 2 * 1 * 128 * 2 * 80


def test_causal_prefill_attention_pairs():
    # a chunk of 4 tokens after 10 cached ones attends to 11+12+13+14 = 50 keys
    assert BatchStats.of([(4, 10)]).prefill_attn_pairs == 50


def test_fp8_weights_halve_weight_bytes_and_use_fp8_peak():
    b = BatchStats.of([], [1000])
    bf16 = {o.name: o for o in layer_ops(L8B, Shard(), Precision(), b)}
    fp8 = {o.name: o for o in layer_ops(L8B, Shard(), Precision(weights="fp8"), b)}
    assert fp8["down_proj"].dtype == "fp8"
    weight_bytes = 14336 * 4096
    assert bf16["down_proj"].bytes - fp8["down_proj"].bytes == pytest.approx(weight_bytes)


def test_decode_is_memory_bound_and_long_prefill_compute_bound():
    decode = {o.name: o for o in layer_ops(L70B, Shard(), Precision(), BatchStats.of([], [2048]))}
    gate = decode["gate_up_proj"]
    assert gate.bytes / H100.hbm_bw_Bps > gate.flops / H100.flops("bf16")
    prefill = {o.name: o for o in layer_ops(L70B, Shard(), Precision(), BatchStats.of([(8192, 0)]))}
    gate = prefill["gate_up_proj"]
    assert gate.flops / H100.flops("bf16") > gate.bytes / H100.hbm_bw_Bps


batches = st.builds(
    lambda pf, dec: BatchStats.of(pf, dec),
    st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 8192)), max_size=4),
    st.lists(st.integers(1, 16384), max_size=64))


@settings(max_examples=60, deadline=None)
@given(batches, st.sampled_from([1, 2, 8]), st.sampled_from(["bf16", "fp8"]))
def test_step_cost_equals_sum_of_operator_rooflines(batch, tp, weights):
    """StepCost's matrix form is the same model as layer_ops + op_time (only reassociated:
    relative 1e-12 covers float rounding of a few dozen terms)."""
    shard, prec = Shard(tp=tp), Precision(weights=weights)
    expected = L70B.num_layers * ops_time(layer_ops(L70B, shard, prec, batch), H100) \
        + ops_time(head_ops(L70B, shard, prec, batch), H100)
    assert StepCost(L70B, shard, prec, H100).time(batch) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 256), st.integers(1, 10000), st.integers(1, 200))
def test_vectorised_decode_times_are_bit_identical_to_single_steps(n, ctx, steps):
    """The engine advances decode runs with StepCost.decode_times; exactness vs stepping relies on this
    (steps to 200: both of context_time_of's sums, by accumulate up to 64 steps and row by row)."""
    cost = StepCost(L8B, Shard(), Precision(), H100)
    kv0 = float(n * ctx)
    many = cost.decode_times(n, kv0, steps)
    for j in range(steps):
        single = cost.time(BatchStats(decode_tokens=n, decode_kv_tokens=kv0 + n * j, logits_tokens=n))
        assert many[j] == single


def test_step_time_grows_with_batch_and_context():
    cost = StepCost(L8B, Shard(), Precision(), H100)
    t = [cost.time(BatchStats.of([], [2048] * b)) for b in (1, 8, 64, 256)]
    assert t == sorted(t) and t[-1] > t[0]
    assert cost.time(BatchStats.of([], [8192] * 64)) > cost.time(BatchStats.of([], [1024] * 64))


def test_memory_plan_of_70b_bf16_on_one_h100_does_not_fit():
    plan = memory_plan(L70B, Shard(), Precision(), H100)
    assert not plan.fits and plan.shortfall_bytes > 60 * GiB
    assert memory_plan(L70B, Shard(tp=4), Precision(), H100).fits


def test_tensor_parallel_shards_weights():
    one = weights_bytes(L70B, Shard(tp=1), Precision())
    eight = weights_bytes(L70B, Shard(tp=8), Precision())
    assert eight == pytest.approx(one / 8, rel=1e-3)   # norms (2 x hidden per layer) are replicated


def test_batch_stats_init_takes_exactly_its_fields():
    """BatchStats writes its fields in a hand-written __init__ (speed): same names, order and defaults."""
    import dataclasses
    import inspect
    params = list(inspect.signature(BatchStats.__init__).parameters.values())[1:]
    fields = dataclasses.fields(BatchStats)
    assert [(p.name, p.default) for p in params] == [(f.name, f.default) for f in fields]
    b = BatchStats(1, 2, 3.0, 4.0, 5.0, 6)
    assert dataclasses.replace(b, decode_tokens=7) == BatchStats(1, 7, 3.0, 4.0, 5.0, 6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.decode_tokens = 3
