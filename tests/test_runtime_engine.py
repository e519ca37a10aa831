"""The runtime in the engine: host time per iteration and CUDA-graph padding, end to end."""
import numpy as np
import pytest

from simserve.catalog import get_hardware, get_model
from simserve.cost import BatchStats, Precision, Shard, StepCost
from simserve.runtime import RuntimeStepCost, exposed_host_s, get_runtime, host_s, runtime_catalog
from simserve.simulation import simulate

H100 = get_hardware("h100-sxm")
LLAMA8B = get_model("llama-3.1-8b")


def lone(runtime, isl=400, osl=50, n=1):
    return {"model": "llama-3.1-8b", "engine": {"runtime": runtime},
            "scheduler": {"policy": "static", "batch_size": n, "max_batch_size": n, "chunk_size": 512},
            "workload": {"lengths": {"isl": isl, "osl": osl}, "arrivals": {"process": "batch"}, "num_requests": n}}


@pytest.mark.parametrize("name", sorted(runtime_catalog()))
def test_lone_request_is_kernels_plus_host_per_step(name):
    """TTFT = host + kernels of the prefill step; each decode step = its exposed host time (all of
    it without overlap; what the previous GPU step does not cover with overlap) + its kernels, the
    kernels of the padded graph batch. Exact to float rounding (the engine sums the same terms)."""
    rt = get_runtime(name)
    isl, osl = 400, 50
    row = simulate(lone(name, isl, osl)).requests.iloc[0]
    cost = RuntimeStepCost(StepCost(LLAMA8B, Shard(), Precision(fused_quant=rt.fused_quant), H100), rt,
                           H100.efficiency.kernel_overhead_s)
    prefill = BatchStats.of([(isl, 0)])
    gpu_prefill = cost.time(prefill)
    assert row.ttft_s == pytest.approx(host_s(rt, prefill) + gpu_prefill, rel=1e-12)
    prev, steps = gpu_prefill, []
    for j in range(1, osl):
        batch = BatchStats.of([], [isl + j])
        gpu = cost.time(batch)
        steps.append(exposed_host_s(rt, host_s(rt, batch), prev) + gpu)
        prev = gpu
    assert row.tpot_s == pytest.approx(np.mean(steps), rel=1e-9)
    if rt.host.overlap:     # the decode step's host time hides under the previous GPU step
        assert row.tpot_s == pytest.approx(np.mean([cost.time(BatchStats.of([], [isl + j])) for j in range(1, osl)]),
                                           rel=1e-9)
    elif rt.host.fixed_s:
        assert row.tpot_s > np.mean([cost.time(BatchStats.of([], [isl + j])) for j in range(1, osl)]) + rt.host.fixed_s * 0.99


def test_batch_of_9_costs_the_next_captured_size():
    """vLLM V1 captures 8 and 16: a decode step of 9 sequences runs the 16-row graph (host time off
    here, so the step is kernels only)."""
    rt = {"base": "vllm-v1", "host": {"fixed_s": 0.0, "per_seq_s": 0.0, "per_token_s": 0.0}}
    isl, osl, n = 300, 6, 9
    df = simulate(lone(rt, isl, osl, n)).requests
    plain = StepCost(LLAMA8B, Shard(), Precision(fused_quant=True), H100)
    steps16 = [plain.time(BatchStats(decode_tokens=16, logits_tokens=16, decode_kv_tokens=float(n * (isl + j))))
               for j in range(1, osl)]
    steps9 = [plain.time(BatchStats.of([], [isl + j] * n)) for j in range(1, osl)]
    assert df.tpot_s.to_numpy() == pytest.approx(np.mean(steps16), rel=1e-9)
    assert np.mean(steps16) > np.mean(steps9) * 1.001       # padding costs something: the check can fail


def test_host_time_in_the_breakdown_and_on_its_own_timeline_track():
    r = simulate(lone("vllm-v0", 200, 20, 4))
    assert r.summary["time_breakdown"]["host"] > 0
    host_rows = r.timeline[r.timeline.kind == "host"]
    assert len(host_rows) and (host_rows.end_s > host_rows.start_s).all()
    ideal = simulate(lone("ideal", 200, 20, 4))
    assert "host" not in ideal.summary["time_breakdown"] and not (ideal.timeline.kind == "host").any()
    assert r.summary["e2e"]["mean"] > ideal.summary["e2e"]["mean"]


@pytest.mark.parametrize("name", sorted(runtime_catalog()))
def test_estimate_includes_the_runtime_like_the_engine(name):
    """`simserve estimate --runtime` prices the same host time, graph padding and eager launches as
    the engine: its prefill is a lone request's TTFT and its decode total the request's decode time
    (float summation order: 1e-9)."""
    from simserve.estimate import estimate
    isl, osl = 400, 50
    row = simulate(lone(name, isl, osl)).requests.iloc[0]
    est = estimate(model="llama-3.1-8b", hardware="h100-sxm", isl=isl, osl=osl, runtime=name)
    assert row.ttft_s == pytest.approx(est["prefill"]["time_s"], rel=1e-9)
    decode_s = est["request_latency_s"] - est["prefill"]["time_s"]
    assert row.tpot_s * (osl - 1) == pytest.approx(decode_s, rel=1e-9)
    assert (est["prefill"]["host_s"] > 0) == (get_runtime(name).host.fixed_s > 0)


@pytest.mark.parametrize("parallelism", [{"ep": 1}, {"tp": 1, "ep": 2}])
def test_moe_decode_of_9_is_planned_as_the_next_captured_size(parallelism):
    """MoE stages run CUDA graphs too: a decode-only batch of 9 is planned (attention, router,
    experts, all-to-all bytes) as 16 rows reading the 9 sequences' KV; with attention-DP over 2
    ranks each rank pads its 5 to 8. The same routing stream on both sides, so the plans are equal."""
    from simserve.world import build_world
    base = {"model": "mixtral-8x7b", "precision": {"weights": "fp8", "kv": "fp8"}, "parallelism": parallelism,
            "workload": {"lengths": {"isl": 300, "osl": 4}, "arrivals": {"process": "batch"}, "num_requests": 1}}
    graphs = build_world({**base, "engine": {"runtime": "vllm-v1"}}).replicas[0].stages[0].planner
    no_graphs = {"base": "vllm-v1", "cuda_graphs": {"enabled": False}}      # same fused quantisation
    plain = build_world({**base, "engine": {"runtime": no_graphs}}).replicas[0].stages[0].planner
    kv = 9 * 301.0
    rows = 16 if parallelism["ep"] == 1 else 2 * 8
    assert graphs.plan(BatchStats(decode_tokens=9, logits_tokens=9, decode_kv_tokens=kv)) == \
        plain.plan(BatchStats(decode_tokens=rows, logits_tokens=rows, decode_kv_tokens=kv))
    assert graphs.plan(BatchStats.of([(300, 0)])) == plain.plan(BatchStats.of([(300, 0)]))   # prefill: eager
