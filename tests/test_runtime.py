"""Serving runtimes (simserve.runtime): catalog, host time, CUDA-graph padding, fp8 quantisation."""
import pytest

from simserve.catalog import get_hardware, get_model
from simserve.cost import BatchStats, Precision, Shard, StepCost
from simserve.cost.moe import ExpertCost, MoeLayout
from simserve.cost.operators import layer_op_models
from simserve.errors import CatalogError
from simserve.runtime import (eager_s, get_runtime, graph_batch, graph_size, host_s, iteration_s,
                              runtime_catalog)

H100 = get_hardware("h100-sxm")
LLAMA8B = get_model("llama-3.1-8b")


def test_catalog_has_the_five_runtimes_each_with_sourced_graph_sizes():
    cat = runtime_catalog()
    assert {"vllm-v1", "vllm-v0", "sglang", "trtllm", "ideal"} <= set(cat)
    for name, rt in cat.items():
        if rt.cuda_graphs.enabled:
            assert "cuda_graphs.capture_sizes" in rt.sources, name
        assert rt.host.fixed_s == 0 or any(k.startswith("host") for k in rt.sources), name


def test_vllm_v1_capture_sizes_follow_its_generator():
    # vllm/config/compilation.py: [1, 2, 4] + range(8, 256, 8) + range(256, 513, 16)
    expected = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, 513, 16))
    assert list(get_runtime("vllm-v1").cuda_graphs.capture_sizes) == expected


def test_decode_batch_of_9_is_padded_to_16_and_eager_above_the_largest_size():
    rt = get_runtime("vllm-v1")
    nine = BatchStats.of([], [1000] * 9)
    padded, graphed = graph_batch(rt, nine)
    assert graphed and graph_size(rt, 9) == 16
    assert padded.decode_tokens == 16 and padded.logits_tokens == 16
    assert padded.decode_kv_tokens == nine.decode_kv_tokens     # padded rows read no KV
    cost = StepCost(LLAMA8B, Shard(), Precision(), H100)
    sixteen_rows = BatchStats(decode_tokens=16, logits_tokens=16, decode_kv_tokens=9000.0)
    assert cost.time(padded) == cost.time(sixteen_rows) > cost.time(nine)
    big = BatchStats.of([], [100] * 600)
    assert graph_batch(rt, big) == (big, False)                  # above 512: eager
    mixed = BatchStats.of([(64, 0)], [100] * 3)
    assert graph_batch(rt, mixed) == (mixed, False)              # prefill in the batch: not a decode graph


def test_host_time_is_fixed_plus_per_sequence_plus_per_token():
    rt = get_runtime({"base": "ideal", "host": {"fixed_s": 1e-3, "per_seq_s": 1e-5, "per_token_s": 1e-7}})
    batch = BatchStats.of([(100, 0)], [50] * 4)        # 104 tokens, 5 sampled sequences
    assert host_s(rt, batch) == pytest.approx(1e-3 + 5 * 1e-5 + 104 * 1e-7, rel=1e-12)
    assert host_s(rt, BatchStats()) == 0.0


def test_overlap_hides_host_time_under_the_previous_gpu_step():
    sync = get_runtime({"base": "ideal"})
    over = get_runtime({"base": "ideal", "host": {"overlap": True}})
    assert iteration_s(sync, 5e-3, 1e-3, 5e-3) == 6e-3
    assert iteration_s(over, 5e-3, 1e-3, 5e-3) == 5e-3
    assert iteration_s(over, 5e-3, 1e-3, None) == 6e-3               # after an idle gap nothing hides it
    assert iteration_s(over, 5e-3, 1e-3, 0.25e-3) == pytest.approx(5.75e-3)   # CPU-bound: the excess shows


def test_eager_step_waits_for_kernel_launches():
    rt = get_runtime("vllm-v1")
    assert eager_s(rt, 1e-3, 10) == 1e-3
    assert eager_s(rt, 1e-3, 1000) == pytest.approx(1000 * rt.cuda_graphs.eager_launch_s)


def test_user_runtime_from_file_and_bad_fields(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("host: {fixed_s: 2.0e-3, overlap: true}\ncuda_graphs: {capture_sizes: [1, 8, 64]}\n")
    rt = get_runtime(str(path))
    assert rt.name == "mine" and rt.host.fixed_s == 2e-3 and rt.cuda_graphs.capture_sizes == (1, 8, 64)
    with pytest.raises(CatalogError, match="unknown field"):
        get_runtime({"host": {"fixed": 1.0}})
    with pytest.raises(CatalogError, match="host.fixed_s"):
        get_runtime({"host": {"fixed_s": -1.0}})
    with pytest.raises(CatalogError, match="unknown runtime 'vllm-v9'"):
        get_runtime("vllm-v9")


def quant_ops(precision):
    return [m for m in layer_op_models(LLAMA8B, Shard(), precision) if "quantize" in m.name]


def test_fp8_quantisation_dynamic_static_and_fused():
    dynamic = quant_ops(Precision(weights="fp8"))
    static = quant_ops(Precision(weights="fp8", activation_scale="static"))
    fused = quant_ops(Precision(weights="fp8", fused_quant=True))
    assert sum(m.kernels for m in dynamic) == 8       # 4 GEMM inputs x (absmax + quantise)
    assert sum(m.kernels for m in static) == 4        # 4 GEMM inputs x one quantise pass
    assert fused == [] and quant_ops(Precision()) == []
    per_token = lambda ops: sum(m.bytes["tokens"] for m in ops)   # noqa: E731
    # dynamic reads the bf16 input twice, static once; both write one fp8 copy
    assert per_token(dynamic) - per_token(static) == pytest.approx(2.0 * sum(
        k for k in (4096, 4096, 4096, 14336)))


def test_routed_experts_pay_the_same_activation_quantisation():
    mixtral = get_model("mixtral-8x7b")
    layout = MoeLayout(ep=8, tp=1)
    bf16 = ExpertCost.of(mixtral, layout, Precision(), H100)
    dyn = ExpertCost.of(mixtral, layout, Precision(weights="fp8"), H100)
    fused = ExpertCost.of(mixtral, layout, Precision(weights="fp8", fused_quant=True), H100)
    assert bf16.s_per_token_quant == 0 and fused.s_per_token_quant == 0
    h, w = mixtral.hidden, mixtral.moe.expert_intermediate
    # dynamic per-tensor: inputs of gate_up (hidden) and down (width) read twice in bf16, written once in fp8
    expected_bytes = (h + w) * (2 * 2 + 1)
    assert dyn.s_per_token_quant * H100.hbm_bw_Bps * H100.efficiency.memory == pytest.approx(expected_bytes)
    assert dyn.overhead_s == pytest.approx(fused.overhead_s + 4 * H100.efficiency.kernel_overhead_s)


@pytest.mark.parametrize("n", [1, 9, 300, 600])
def test_runtime_step_cost_decode_run_equals_stepping(n):
    """The padded / eager StepCost gives the same times for a decode run as step by step (the
    engine's coalesced decode runs rely on it), bit for bit."""
    from simserve.runtime import RuntimeStepCost
    rt = get_runtime("vllm-v1")
    cost = RuntimeStepCost(StepCost(LLAMA8B, Shard(), Precision(), H100), rt, H100.efficiency.kernel_overhead_s)
    run = cost.decode_times(n, n * 700.0, 5)
    stepped = [cost.time(BatchStats(decode_tokens=n, logits_tokens=n, decode_kv_tokens=n * 700.0 + n * j))
               for j in range(5)]
    assert list(run) == stepped
    plain = StepCost(LLAMA8B, Shard(), Precision(), H100)
    if n == 9:       # graphed: the cost of 16 rows
        assert run[0] == plain.time(BatchStats(decode_tokens=16, logits_tokens=16, decode_kv_tokens=n * 700.0))
    if n == 600:     # eager: no faster than launching every kernel
        assert run[0] >= cost.kernels([1.0, n, 0, n, 0, 0, n * 700.0, n]) * rt.cuda_graphs.eager_launch_s
