"""The H100 cost model against layer timings measured on a real H100 (held out from the fit).

Reference: simserve/catalog/profiles/h100-sxm/layers.csv, written by experiments/profile_h100.py
on an NVIDIA H100 80GB HBM3 (PyTorch 2.11, CUDA 13.0, CUDA graphs, fused elementwise kernels):
Llama-3.1-8B and 70B layers (tp 1, 4, 8 shards), prefill 128-8192 tokens, decode batch 1-256 at
contexts 1k-8k. The efficiency factors are fitted to the operator tables only.
"""
import pytest

from simserve.calibration import FITTED, fit, layer_predictions
from simserve.catalog import get_hardware

H100 = get_hardware("h100-sxm")


def test_layer_table_median_error_within_15_percent():
    # 15%: the acceptance bound for a roofline model against measured layers
    table = layer_predictions(H100, "h100-sxm")
    assert len(table) >= 100
    assert table.rel_err.abs().median() < 0.15


def test_every_measured_layer_within_30_percent():
    # the worst rows are small-batch tp=8 decode, where launch gaps the roofline does not model dominate
    table = layer_predictions(H100, "h100-sxm")
    assert table.rel_err.abs().max() < 0.30


def test_catalog_factors_are_the_fitted_ones():
    """hardware.yaml's H100 efficiency is what fit() computes from the shipped profile (3 digits)."""
    _, info = fit(H100, "h100-sxm")
    eff = H100.efficiency
    catalog = {"bf16": eff.compute["bf16"], "fp8": eff.compute["fp8"], "memory": eff.memory,
               "attention_compute": eff.attention_compute, "attention_memory": eff.attention_memory,
               "kernel_overhead_s": eff.kernel_overhead_s}
    for key in FITTED:
        assert catalog[key] == pytest.approx(info["factors"][key], rel=5e-3), key


def test_fitted_factors_are_physical():
    _, info = fit(H100, "h100-sxm")
    f = info["factors"]
    assert 0.5 < f["bf16"] < 0.9 and 0.5 < f["memory"] < 0.95 and 1e-6 < f["kernel_overhead_s"] < 10e-6


def test_the_profile_repeats_on_a_second_h100():
    """layers_repeat.csv: experiments/profile_h100.py rerun on another H100 machine (2026-11-25).
    Measurement noise must stay well below the model's own error, or the fit would chase noise."""
    from simserve.calibration import load_profile
    tables = load_profile("h100-sxm")
    ratio = tables["layers_repeat"].time_us / tables["layers"].time_us - 1
    assert ratio.abs().median() < 0.02 and ratio.abs().max() < 0.10


def test_fp8_layers_median_error_within_15_percent():
    """layers_fp8.csv: the same layers with W8A8 linear layers (fp8 weights, activations quantised
    per tensor on the fly, torch._scaled_mm) measured on our H100. Held out like the bf16 table; the
    15% median bound is the issue's. The activation-quantisation operator (two kernels per GEMM
    input) is what brings decode in line. Known limit: long prefills run 20-35% slower than
    predicted (the isolated fp8 GEMMs of gemm.csv are faster than inside a layer); the bound below
    on the worst row records it rather than hides it."""
    table = layer_predictions(H100, "h100-sxm", table="layers_fp8", weights="fp8")
    assert len(table) >= 100
    assert table.rel_err.abs().median() < 0.15
    decode = table[table.phase == "decode"]
    assert decode.rel_err.abs().median() < 0.10
    assert table.rel_err.abs().max() < 0.40
