"""The serving engine end to end through simulate(): known answers, conservation, exactness."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from simserve.catalog import get_hardware, get_model
from simserve.cost import BatchStats, Precision, Shard, StepCost
from simserve.simulation import simulate


def config(isl=512, osl=64, n=20, process="poisson", rate=2.0, **extra):
    cfg = {"model": "llama-3.1-8b", "cluster": {"hardware": "h100-sxm"},
           "workload": {"lengths": {"isl": isl, "osl": osl}, "arrivals": {"process": process, "rate": rate},
                        "num_requests": n}}
    if process == "batch":
        cfg["workload"]["arrivals"] = {"process": "batch"}
    for key, value in extra.items():
        cfg[key] = value
    # the kernel model alone (no host time, no graph padding): tests/test_runtime_engine.py adds those
    cfg.setdefault("engine", {}).setdefault("runtime", "ideal")
    return cfg


COST = StepCost(get_model("llama-3.1-8b"), Shard(), Precision(), get_hardware("h100-sxm"))


@pytest.mark.parametrize("policy", ["vllm", "sarathi", "orca", "static"])
def test_single_request_ttft_is_prefill_time_and_tpot_mean_decode_step(policy):
    """One request on an idle replica: TTFT = the cost model's prefill step (one chunk: the prompt
    fits the budget), TPOT = mean decode step over the growing context; float precision."""
    isl, osl = 400, 50
    r = simulate(config(isl, osl, n=1, process="batch", scheduler={"policy": policy, "chunk_size": 512}))
    row = r.requests.iloc[0]
    prefill = COST.time(BatchStats.of([(isl, 0)]))
    decode = [COST.time(BatchStats.of([], [isl + j])) for j in range(1, osl)]
    assert row.ttft_s == pytest.approx(prefill, rel=1e-12)
    assert row.tpot_s == pytest.approx(np.mean(decode), rel=1e-9)
    assert r.summary["num_completed"] == 1


def test_chunked_prefill_ttft_is_sum_of_chunks():
    isl = 1300     # chunks of 512, 512, 276 with their cached prefixes
    r = simulate(config(isl, 4, n=1, process="batch", scheduler={"policy": "sarathi", "chunk_size": 512}))
    expected = sum(COST.time(BatchStats.of([(c, p)], logits_tokens=int(p + c == isl)))
                   for c, p in ((512, 0), (512, 512), (276, 1024)))
    assert r.requests.ttft_s[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("policy", ["vllm", "sarathi", "orca", "static"])
def test_coalesced_decode_runs_are_identical_to_stepping(policy, tmp_path):
    cfg = config(700, 120, n=60, rate=6.0, scheduler={"policy": policy, "batch_size": 8})
    fast = simulate(cfg)
    stepped = simulate(cfg, overrides=["engine.coalesce_decode=false"])
    assert fast.requests.to_csv(float_format="%.17g") == stepped.requests.to_csv(float_format="%.17g")
    assert fast.summary["itl"] == stepped.summary["itl"]
    assert fast.summary["events"] < stepped.summary["events"]


def test_same_seed_same_requests_csv_and_another_seed_differs():
    cfg = {"workload": {"lengths": {"isl": 300, "osl": 40}, "arrivals": {"process": "poisson", "rate": 5.0},
                        "num_requests": 40}}
    a, b = simulate(cfg, overrides=["seed=7"]), simulate(cfg, overrides=["seed=7"])
    c = simulate(cfg, overrides=["seed=8"])
    assert a.requests.to_csv() == b.requests.to_csv()
    assert a.requests.to_csv() != c.requests.to_csv()


def test_ttft_and_tpot_grow_with_batch_size():
    ttft, tpot = [], []
    for batch in (1, 8, 64):
        r = simulate(config(1024, 64, n=batch, process="batch", scheduler={"policy": "static", "batch_size": batch}))
        ttft.append(r.summary["ttft"]["mean"])
        tpot.append(r.summary["tpot"]["mean"])
    assert ttft == sorted(ttft) and ttft[-1] > 2 * ttft[0]
    assert tpot == sorted(tpot) and tpot[-1] > tpot[0]


def test_longer_prompts_raise_ttft_far_more_than_tpot():
    short = simulate(config(256, 64, n=1, process="batch")).summary
    long = simulate(config(8192, 64, n=1, process="batch", scheduler={"chunk_size": 8192})).summary
    ttft_ratio = long["ttft"]["mean"] / short["ttft"]["mean"]
    tpot_ratio = long["tpot"]["mean"] / short["tpot"]["mean"]
    assert ttft_ratio > 5 * tpot_ratio


def test_kv_pressure_preempts_and_still_completes_everything():
    # a tiny cache (about 1 GiB left after 15 GiB of weights) forces preemptions by recompute
    cfg = config(1000, 1000, n=40, process="batch", scheduler={"policy": "vllm", "max_batch_size": 64},
                 engine={"gpu_memory_utilization": 0.23})
    r = simulate(cfg)
    assert r.summary["preemptions"] > 0
    assert r.summary["num_completed"] == 40
    assert r.summary["kv_peak_utilization"] <= 1.0


def test_request_that_can_never_fit_is_rejected_with_reason():
    cfg = config(60000, 60000, n=3, process="batch", engine={"gpu_memory_utilization": 0.3})
    r = simulate(cfg)
    assert r.summary["num_rejected"] == 3
    assert r.requests.reject_reason.str.contains("KV tokens").all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=st.sampled_from(["vllm", "sarathi", "orca", "static"]),
       isl=st.integers(1, 3000), osl=st.integers(1, 300), n=st.integers(1, 30),
       rate=st.floats(0.5, 50), max_batch=st.integers(1, 32), chunk=st.integers(16, 2048),
       util=st.sampled_from([0.225, 0.24, 0.9]), seed=st.integers(0, 5))
def test_conservation(policy, isl, osl, n, rate, max_batch, chunk, util, seed):
    """Every request completes or is rejected with a reason; emitted tokens equal the sum of OSL of
    completed requests; KV blocks stay within capacity and return to zero."""
    cfg = config(isl, osl, n=n, rate=rate, seed=seed, engine={"gpu_memory_utilization": util},
                 scheduler={"policy": policy, "max_batch_size": max_batch, "chunk_size": chunk,
                            "batch_size": max_batch})
    cfg["workload"]["lengths"] = {"isl": isl, "osl": osl}
    r = simulate(cfg)
    df = r.requests
    assert set(df.status) <= {"completed", "rejected"}
    assert (df[df.status == "rejected"].reject_reason != "").all()
    assert r.summary["num_completed"] + r.summary["num_rejected"] == n
    done = df[df.status == "completed"]
    assert r.summary["output_tokens"] == done.osl.sum()   # (simulate itself checks KV ends at zero)
    assert 0 <= r.summary["kv_peak_utilization"] <= 1.0
    assert (done.first_token_s >= done.arrival_s).all() and (done.finish_s >= done.first_token_s).all()
    assert math.isclose(sum(r.summary["time_breakdown"].values()), 1.0, rel_tol=1e-9)
