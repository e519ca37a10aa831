"""Admission policies (scheduler.admission) end to end: vllm preempts, guaranteed_no_evict never does."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from simserve.simulation import simulate

UTIL = 0.225     # Llama-3.1-8B on an H100: a few thousand KV tokens left after the weights


def config(isl, osl, n, admission, rate=None, seed=0, policy="sarathi", max_batch=64):
    arrivals = {"process": "poisson", "rate": rate} if rate else {"process": "batch"}
    return {"model": "llama-3.1-8b", "engine": {"gpu_memory_utilization": UTIL, "runtime": "ideal"},
            "scheduler": {"policy": policy, "admission": admission, "max_batch_size": max_batch,
                          "batch_size": max_batch},
            "workload": {"lengths": {"isl": isl, "osl": osl}, "arrivals": arrivals, "num_requests": n},
            "seed": seed}


def kv_tokens() -> int:
    return simulate(config(16, 2, 1, "vllm")).summary["memory_per_gpu"][0]["kv_capacity_tokens"]


def test_guaranteed_no_evict_admits_only_what_can_finish():
    """Requests whose prompt is small but whose prompt + output needs 60% of the cache: vLLM's
    admission takes several at once and preempts; guaranteed_no_evict runs them one at a time."""
    cap = kv_tokens()
    isl, osl = 64, int(0.6 * cap) - 64
    vllm = simulate(config(isl, osl, 3, "vllm"))
    gne = simulate(config(isl, osl, 3, "guaranteed_no_evict"))
    assert vllm.summary["preemptions"] > 0                       # control: the load does overflow
    assert gne.summary["preemptions"] == 0 and gne.summary["num_completed"] == 3
    df = gne.requests.sort_values("scheduled_s")
    assert (df.scheduled_s.values[1:] >= df.finish_s.values[:-1]).all()   # never two at once


def test_max_utilization_admits_without_the_watermark_and_pauses_when_out():
    cap = kv_tokens()
    r = simulate(config(64, int(0.6 * cap) - 64, 3, "max_utilization"))
    assert r.summary["preemptions"] > 0 and r.summary["num_completed"] == 3


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(isl=st.integers(1, 2000), osl=st.integers(1, 600), n=st.integers(1, 25), rate=st.floats(1, 100),
       policy=st.sampled_from(["vllm", "orca", "sarathi", "static"]), seed=st.integers(0, 3))
def test_guaranteed_no_evict_never_preempts(isl, osl, n, rate, policy, seed):
    """Random workloads on a small cache: no preemption, and everything that fits completes (the
    scheduler raises if a decode under guaranteed_no_evict ever lacks a block)."""
    r = simulate(config(isl, osl, n, "guaranteed_no_evict", rate=rate, seed=seed, policy=policy, max_batch=16))
    assert r.summary["preemptions"] == 0
    assert r.summary["num_completed"] + r.summary["num_rejected"] == n


def test_unknown_admission_is_refused():
    from simserve.config import load_config
    from simserve.errors import ConfigError
    with pytest.raises(ConfigError, match="scheduler.admission: unknown admission policy 'fifo'"):
        load_config({"scheduler": {"admission": "fifo"}})
