"""Mixture-of-experts with expert parallelism (issue 5): routing, placement, expert cost, the
dispatch/combine all-to-all on the network, memory, and end-to-end runs."""
import json
from math import comb

import numpy as np
import pytest

from simserve.catalog import get_hardware, get_model
from simserve.cli import main
from simserve.cost import Precision
from simserve.cost.moe import (ExpertCost, ExpertRouter, MoeLayout, dedup_ratio, dispatch_matrix,
                               kv_bytes_per_token, moe_memory_plan, place_experts, popularity)
from simserve.errors import CapacityError, ConfigError
from simserve.simulation import simulate

H100 = get_hardware("h100-sxm")


def moe_run(model, isl=256, osl=8, n=6, rate=20.0, **sections):
    cfg = {"model": model, "cluster": {"hardware": "h100-sxm"},
           "workload": {"lengths": {"isl": isl, "osl": osl}, "arrivals": {"process": "poisson", "rate": rate},
                        "num_requests": n}}
    for key, value in sections.items():
        cfg[key] = value
    return simulate(cfg)


def test_uniform_dispatch_bytes_per_gpu_equal_closed_form():
    """Uniform routing, exact expected counts: each GPU sends every other GPU its T/ep tokens' share of
    the distinct tokens that GPU receives. Closed form: a GPU hosting m of E experts receives
    D = T (1 - C(E-m, k) / C(E, k)) distinct tokens (k distinct experts per token), 1/ep of them from
    each GPU; so every GPU sends (ep-1)/ep x D x hidden bytes. Float arithmetic: equal to 1e-12."""
    hidden_bytes = 4096 * 2
    for experts, top_k, ep, tokens in ((8, 2, 8, 64), (128, 8, 8, 256), (256, 8, 16, 512)):
        share = place_experts("round_robin", np.full((1, experts), 1 / experts), ep)
        pairs = np.full((1, experts), tokens * top_k // experts)
        loads = (pairs[:, :, None] * share).sum(axis=1)
        received = loads * dedup_ratio(np.full((1, experts), 1 / experts), share, top_k)
        m = experts // ep
        distinct = tokens * (1 - comb(experts - m, top_k) / comb(experts, top_k))
        np.testing.assert_allclose(received[0], distinct, rtol=1e-12)
        matrix = np.array(dispatch_matrix(received[0], tokens, hidden_bytes))
        sent_per_gpu = matrix.sum(axis=1)
        np.testing.assert_allclose(sent_per_gpu, (ep - 1) * distinct / ep * hidden_bytes, rtol=1e-12)
        np.testing.assert_allclose(matrix.sum(axis=0), sent_per_gpu, rtol=1e-12)   # symmetric traffic


def test_uniform_alltoall_bytes_of_a_run_equal_closed_form():
    """Mixtral (one expert per GPU): a token's two experts are distinct, so every pair is one token on
    the wire whatever the draw: per MoE layer, dispatch and combine each move T x k x (ep-1)/ep x
    hidden x 2 bytes. Over the run T sums to N (ISL + OSL - 1). Exact up to float summation."""
    n, isl, osl = 6, 256, 8
    # no CUDA graphs: padded decode rows would be dispatched too (test_runtime_engine covers padding)
    r = moe_run("mixtral-8x7b", isl, osl, n, parallelism={"ep": 8},
                engine={"runtime": {"base": "vllm-v1", "cuda_graphs": {"enabled": False}}})
    tokens = n * (isl + osl - 1)
    expected = 2 * 32 * tokens * 2 * 7 / 8 * 4096 * 2
    assert r.summary["bytes_moved"]["nvlink"] == pytest.approx(expected, rel=1e-12)
    assert r.summary["moe"]["alltoall_payload_bytes"] == pytest.approx(expected, rel=1e-12)
    assert r.summary["time_breakdown"]["alltoall"] > 0


def test_slowest_gpu_expert_time_grows_with_skew_and_equals_max_load_times_per_token_time():
    """Prefill-sized iterations (8192 tokens) keep every Mixtral expert compute-bound (>= ~600 tokens
    each at zipf 1.2, above the ~270-token ridge where its 352 MB of weights take as long as its
    FLOPs), so a GPU's expert time is its load x the per-token time plus the launches: equal to
    float precision (1e-12). Skew is compared on the mean over 20 draws with one seed."""
    model = get_model("mixtral-8x7b")
    layout = MoeLayout(ep=8, tp=1)
    cost = ExpertCost.of(model, layout, Precision(), H100)
    share = place_experts("round_robin", np.full((1, 8), 1 / 8), 8)
    slowest = []
    for kind, s in (("uniform", 1.0), ("zipf", 0.5), ("zipf", 1.0), ("zipf", 1.5)):
        router = ExpertRouter(kind, 8, 2, 20, np.random.default_rng(1), np.random.default_rng(2), zipf_s=s)
        pairs = router.draw(8192)
        served = pairs[:, :, None] * share[0][None]
        per_gpu = cost.per_rank_s(served)
        loads = served.sum(axis=1)
        np.testing.assert_allclose(per_gpu.max(axis=1),
                                   loads.max(axis=1) * cost.s_per_token_compute + cost.overhead_s, rtol=1e-12)
        slowest.append(per_gpu.max(axis=1).mean())
    assert slowest == sorted(slowest) and slowest[-1] > 1.5 * slowest[0]


def test_small_expert_batches_are_bound_by_weight_reads():
    """Roofline of a grouped GEMM at few tokens: an expert copy with 1 token costs its weights' read."""
    cost = ExpertCost.of(get_model("qwen3-30b-a3b"), MoeLayout(ep=8, tp=1), Precision(), H100)
    one = cost.per_rank_s(np.array([[[1.0]]]))[0]
    assert one == pytest.approx(cost.weights_s + cost.s_per_token_memory + cost.overhead_s, rel=1e-12)
    assert cost.per_rank_s(np.zeros((1, 1, 1)))[0] == 0.0


def test_balanced_placement_and_redundant_experts_even_out_expected_load():
    p = popularity("zipf", 128, 1, np.random.default_rng(0), zipf_s=1.2)
    def factor(share):
        load = np.einsum("se,ser->sr", p, share)
        return load.max() / load.mean()
    rr = factor(place_experts("round_robin", p, 8))
    bal = factor(place_experts("balanced", p, 8))
    rep = factor(place_experts("balanced", p, 8, redundant=8))
    assert bal < rr and rep < bal
    share = place_experts("balanced", p, 8, redundant=8)
    np.testing.assert_allclose(share.sum(axis=2), 1.0)            # every expert's tokens are served
    assert ((share > 0).sum(axis=1) == (128 + 8) // 8).all()      # equal slots per GPU


def test_balanced_placement_lowers_imbalance_and_tpot_under_zipf():
    """Qwen3-30B-A3B, EP8, zipf(1.2) fixed per layer: greedy placement by expected load (Huang et al.
    2024) lowers max/mean tokens per GPU and with it the slowest GPU's share of every layer."""
    out = {}
    for placement in ("round_robin", "balanced"):
        r = moe_run("qwen3-30b-a3b", 512, 24, 8, parallelism={"ep": 8},
                    moe={"routing": "zipf", "zipf_s": 1.2, "placement": placement})
        out[placement] = r.summary
    assert out["balanced"]["moe"]["imbalance"]["mean"] < out["round_robin"]["moe"]["imbalance"]["mean"]
    assert out["balanced"]["tpot"]["mean"] < out["round_robin"]["tpot"]["mean"]


def test_ep_across_two_nodes_spends_a_larger_share_in_alltoall():
    """Same EP8 group, uniform routing: inside one NVSwitch node vs 4 GPUs in each of two nodes
    joined by 400 Gb/s InfiniBand NICs (half the peers behind the NIC at ~1/9 NVLink's bandwidth)."""
    one = moe_run("mixtral-8x7b", parallelism={"ep": 8})
    two = moe_run("mixtral-8x7b", parallelism={"ep": 8}, cluster={"hardware": "h100-sxm", "nodes": 2,
                                                                    "gpus_per_node": 4})
    assert "network" in two.summary["bytes_moved"] and "network" not in one.summary["bytes_moved"]
    assert two.summary["time_breakdown"]["alltoall"] > one.summary["time_breakdown"]["alltoall"]
    assert two.summary["tpot"]["mean"] > one.summary["tpot"]["mean"]


@pytest.mark.parametrize("extra", [
    {"parallelism": {"ep": 8, "tp": 2}},                                  # TP attention beside EP
    {"parallelism": {"tp": 2}},                                           # no EP: experts TP-sharded
    {"parallelism": {"ep": 8}, "cluster": {"hardware": "h100-sxm", "nodes": 2, "gpus_per_node": 4},
     "moe": {"routing": "dirichlet", "dirichlet_alpha": 0.5, "redraw": True}},
], ids=["ep8-tp2", "tp2", "ep8-2nodes-dirichlet"])
def test_fast_agrees_with_exact_for_moe_layouts(extra):
    """`exact` plays every all-to-all and TP collective of every layer; `fast` evaluates the same
    sequence with the fluid model on idle links: equal up to float summation order (1e-9)."""
    fast = moe_run("mixtral-8x7b", 128, 6, 4, **extra)
    exact = moe_run("mixtral-8x7b", 128, 6, 4, fidelity="exact", **extra)
    np.testing.assert_allclose(fast.requests.finish_s, exact.requests.finish_s, rtol=1e-9)
    for kind, moved in fast.summary["bytes_moved"].items():
        assert exact.summary["bytes_moved"][kind] == pytest.approx(moved, rel=1e-9)
    assert fast.summary["events"] < exact.summary["events"]


def test_same_seed_same_results_and_seed_changes_routing():
    a = moe_run("qwen3-30b-a3b", parallelism={"ep": 8}, moe={"routing": "zipf"})
    b = moe_run("qwen3-30b-a3b", parallelism={"ep": 8}, moe={"routing": "zipf"})
    c = moe_run("qwen3-30b-a3b", parallelism={"ep": 8}, moe={"routing": "zipf"}, seed=1)
    assert a.requests.equals(b.requests)
    assert a.summary["moe"] == b.summary["moe"]
    assert a.summary["moe"]["imbalance"] != c.summary["moe"]["imbalance"]


def test_routing_trace_file(tmp_path):
    """A trace concentrating every layer's tokens on expert 0 makes GPU 0 serve them all."""
    path = tmp_path / "routing.csv"
    rows = ["iteration,layer," + ",".join(f"e{i}" for i in range(8))]
    rows += [f"{i},{l}," + ",".join(["100"] + ["0"] * 7) for i in range(2) for l in range(2)]
    path.write_text("\n".join(rows) + "\n")
    r = moe_run("mixtral-8x7b", parallelism={"ep": 8}, moe={"routing": "trace", "trace": str(path)})
    assert r.summary["moe"]["imbalance"]["p50"] == pytest.approx(8.0)


def test_mla_kv_cache_is_the_latent_and_not_split_by_tp():
    m = get_model("deepseek-v3")
    fp8 = Precision(weights="fp8", kv="fp8")
    assert kv_bytes_per_token(m, 1, fp8) == kv_bytes_per_token(m, 8, fp8) == 61 * (512 + 64) * 1


@pytest.mark.parametrize("model,extra", [
    ("mixtral-8x7b", []),
    ("qwen3-30b-a3b", ["--set", "moe.routing=zipf", "--set", "moe.placement=balanced"]),
    ("deepseek-v3", ["--set", "precision.weights=fp8", "--set", "precision.kv=fp8", "--set", "parallelism.ep=16",
                     "--set", "cluster.nodes=2"]),
    ("deepseek-v3", ["--set", "precision.weights=fp8", "--set", "precision.kv=fp8",
                     "--set", "cluster.hardware=h200-sxm"]),
], ids=["mixtral-ep8", "qwen3-ep8-zipf", "deepseek-v3-ep16-2x-h100", "deepseek-v3-ep8-h200"])
def test_moe_models_run_end_to_end_from_the_cli(tmp_path, model, extra):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: {model}\nparallelism: {{ep: 8}}\nworkload:\n  lengths: {{isl: 256, osl: 6}}\n"
                   f"  arrivals: {{process: poisson, rate: 20.0}}\n  num_requests: 4\n")
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", *extra]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["num_completed"] == 4
    assert 0 < s["time_breakdown"]["alltoall"] < 1
    assert s["moe"]["imbalance"]["mean"] >= 1.0


@pytest.mark.parametrize("sections,message", [
    ({"model": "mixtral-8x7b", "parallelism": {"ep": 16}, "cluster": {"nodes": 2}}, "does not divide"),
    ({"model": "qwen3-30b-a3b", "parallelism": {"ep": 8, "tp": 3}}, "tp=3"),
    ({"model": "llama-3.1-8b", "parallelism": {"ep": 8}}, "needs a mixture-of-experts model"),
    ({"model": "mixtral-8x7b", "moe": {"redundant_experts": 8}}, "placement: balanced"),
])
def test_bad_moe_layouts_give_one_clear_error(sections, message):
    with pytest.raises(ConfigError, match=message):
        simulate(sections | {"workload": {"lengths": {"isl": 16, "osl": 2}, "arrivals": {"process": "batch"}, "num_requests": 1}})


def test_moe_model_that_does_not_fit_says_by_how_much():
    """DeepSeek-V3 in BF16 is ~1.3 TB: ~170 GB per GPU with EP8 on 80 GB H100s."""
    with pytest.raises(CapacityError, match=r"deepseek-v3 \(bf16 weights\) does not fit on h100-sxm with ep=8.*short by"):
        simulate({"model": "deepseek-v3", "parallelism": {"ep": 8},
                  "workload": {"lengths": {"isl": 16, "osl": 2}, "arrivals": {"process": "batch"}, "num_requests": 1}})
    plan, experts = moe_memory_plan(get_model("deepseek-v3"), MoeLayout(ep=16, tp=1), Precision("fp8", "fp8"), H100)
    assert plan.fits and 35e9 < experts < 45e9     # 58 layers x 16 experts x 44 M params, fp8
