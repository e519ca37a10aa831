"""Swap preemption end to end: the scheduler's swap space, the swapper's copies on the PCIe host links,
and what the summary reports."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from simserve.cost.swap import host_copy_fit, swap_copies, swap_s
from simserve.engine.swap import swap_settings
from simserve.config import load_config
from simserve.request import Request
from simserve.scheduler import Batch
from simserve.simulation import simulate
from simserve.world import build_world


def pressed(preemption="swap", fidelity="fast", policy="sarathi", tp=1, **engine):
    """Llama-3.1-8B with a third of the HBM: 2048-token prompts with 1024-token answers at 20/s fill
    the KV cache and preempt (~100 of 300 requests)."""
    return {"model": "llama-3.1-8b", "parallelism": {"tp": tp}, "fidelity": fidelity,
            "engine": {"runtime": "vllm-v0", "gpu_memory_utilization": 0.3, **engine},
            "scheduler": {"policy": policy, "preemption": preemption},
            "workload": {"lengths": {"isl": 2048, "osl": 1024}, "arrivals": {"process": "poisson", "rate": 20.0},
                         "num_requests": 300}}


def _times(df: pd.DataFrame) -> np.ndarray:
    return df[["first_token_s", "finish_s", "scheduled_s"]].to_numpy(dtype=float)


def test_vllm_v0_defaults_recompute_with_a_4_GiB_swap_space():
    """vLLM V0 preempts one-sequence requests by recompute unless --preemption-mode swap; its
    --swap-space default is 4 GiB per GPU. V1 has no swap."""
    assert swap_settings(load_config({"engine": {"runtime": "vllm-v0"}})) == ("recompute", 4.0)
    assert swap_settings(load_config({"engine": {"runtime": "vllm-v0"}, "scheduler": {"preemption": "swap"},
                                      })) == ("swap", 4.0)
    assert swap_settings(load_config({})) == ("recompute", 0.0)
    assert swap_settings(load_config({"engine": {"runtime": {"base": "vllm-v0", "preemption": "swap"},
                                                 "swap_space_GiB": 16}})) == ("swap", 16.0)


@pytest.mark.parametrize("policy", ["vllm", "sarathi"])
def test_swapped_requests_keep_their_computed_tokens(policy):
    """Under swap every preempted sequence comes back with its KV: the prompts are prefilled once
    (the timeline's prefill tokens are the workload's input tokens, where recompute prefills the
    preempted ones again), blocks out == blocks in, and the PCIe links carry the bytes both ways."""
    res = simulate(pressed(policy=policy))
    s, tl = res.summary, res.timeline
    sw = s["swap"]
    assert sw["swapped_out"] > 20 and sw["swapped_in"] == sw["swapped_out"] and sw["recompute_fallbacks"] == 0
    assert s["preemptions"] == sw["swapped_out"]
    assert sw["blocks_in"] == sw["blocks_out"] and sw["bytes_in"] == sw["bytes_out"] > 0
    # 8B: 32 layers x 2 x 8 KV heads x 128 x 2 bytes x 16 tokens = 2 MiB a block; 4 GiB hold 2048
    assert sw["host_blocks"] == 2048 and sw["bytes_out"] == sw["blocks_out"] * 2 * 2**20
    assert s["bytes_moved"]["pcie"] == sw["bytes_out"] + sw["bytes_in"]
    assert int(tl.prefill_tokens.sum()) == int(res.requests.isl.sum())
    rec = simulate(pressed("recompute", policy=policy))
    assert rec.summary["preemptions"] > 20
    assert int(rec.timeline.prefill_tokens.sum()) > int(rec.requests.isl.sum())
    assert s["time_breakdown"]["swap"] == pytest.approx(sw["seconds"] / s["sim_time_s"], rel=1e-12)
    assert "swap" not in rec.summary and "swap" not in rec.summary["time_breakdown"]
    assert (tl.kind == "kv_swap").sum() > 0


@pytest.mark.parametrize("tp,policy", [(1, "vllm"), (2, "sarathi")])
def test_fast_equals_exact_with_swap(tp, policy):
    """fast prices the copies on their idle PCIe links; exact plays them as flows (latency = the
    copies' issue cost, then the bytes at the link's rate). Same decisions, same counts; times to
    1e-9 relative (the played finish time is the same sum in another order of float additions)."""
    fast, exact = simulate(pressed(fidelity="fast", tp=tp, policy=policy)), \
        simulate(pressed(fidelity="exact", tp=tp, policy=policy))
    assert fast.summary["swap"]["swapped_out"] > 0
    for key in ("swapped_out", "swapped_in", "blocks_out", "blocks_in", "bytes_out", "recompute_fallbacks"):
        assert fast.summary["swap"][key] == exact.summary["swap"][key]
    assert fast.summary["swap"]["seconds"] == pytest.approx(exact.summary["swap"]["seconds"], rel=1e-9)
    assert (fast.requests.preemptions == exact.requests.preemptions).all()
    assert _times(fast.requests) == pytest.approx(_times(exact.requests), rel=1e-9)
    assert fast.summary["bytes_moved"] == pytest.approx(exact.summary["bytes_moved"], rel=1e-12)
    # fast still coalesces decode runs while sequences are swapped out (not right after a step that
    # preempted): ~800-2000 events against exact's ~18000 on this workload
    assert fast.summary["events"] * 4 < exact.summary["events"]


def test_a_swap_space_too_small_falls_back_to_recompute_exactly():
    """No host block free: every preemption is a recompute, and the run is the recompute run to the
    last bit (the swap bookkeeping changes no decision)."""
    full = simulate(pressed(swap_space_GiB=0))
    rec = simulate(pressed("recompute"))
    assert full.summary["swap"]["recompute_fallbacks"] == rec.summary["preemptions"] > 20
    assert full.summary["swap"]["swapped_out"] == 0
    pd.testing.assert_frame_equal(full.requests, rec.requests)


def test_a_partly_full_swap_space_recomputes_only_what_does_not_fit():
    """768 MiB hold 384 blocks (a victim holds 128-192): some victims swap, the others recompute;
    each recomputed request prefills its prompt and generated tokens again, the swapped ones do not."""
    res = simulate(pressed(swap_space_GiB=0.75))
    sw = res.summary["swap"]
    assert sw["host_blocks"] == 384 and sw["peak_host_blocks_used"] <= 384
    assert sw["swapped_out"] > 0 and sw["recompute_fallbacks"] > 0
    assert res.summary["preemptions"] == sw["swapped_out"] + sw["recompute_fallbacks"]
    assert int(res.timeline.prefill_tokens.sum()) > int(res.requests.isl.sum())


@pytest.mark.parametrize("fidelity", ["fast", "exact"])
def test_a_lone_swap_takes_the_cost_models_time(fidelity):
    """10 blocks out of one GPU: 2 x 32 layers x 10 copies and 10 x 2 MiB over the H100's PCIe link,
    as cost.swap.swap_s prices them, priced (fast) or played as a flow (exact). With tp=2 each GPU
    moves half the heads over its own link at the same time: same copies, half the bytes."""
    for tp in (1, 2):
        world = build_world(pressed(fidelity=fidelity, tp=tp))
        rep = world.replicas[0]
        batch = Batch(swap_out=[(Request(0, 0.0, 160, 10), 10)])
        proc = world.env.process(rep.swapper.copy(batch, 0.0))
        world.env.run(proc)
        nbytes = 10 * 2 * 2**20 / tp
        expected = swap_s(nbytes, swap_copies(10, 32), world.gpu.pcie_bw_Bps, host_copy_fit())
        assert proc.value == pytest.approx(expected, rel=1e-12)
        assert rep.swapper.bytes["out"] == nbytes * tp
        assert world.network.bytes_by_op["kv_swap"] == pytest.approx(nbytes * tp, rel=1e-12)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), isl=st.integers(256, 4096), osl=st.integers(64, 2048))
def test_guaranteed_no_evict_never_preempts_even_with_swap(seed, isl, osl):
    """TensorRT-LLM's capacity policy reserves every request's whole KV: nothing to swap."""
    cfg = pressed()
    cfg.update(seed=seed, workload={"lengths": {"isl": isl, "osl": osl},
                                    "arrivals": {"process": "poisson", "rate": 20.0}, "num_requests": 60})
    cfg["scheduler"]["admission"] = "guaranteed_no_evict"
    s = simulate(cfg).summary
    assert s["preemptions"] == 0 and s["swap"]["swapped_out"] == 0 and s["swap"]["recompute_fallbacks"] == 0
