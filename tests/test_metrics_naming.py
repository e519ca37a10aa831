"""One naming scheme for metrics (summary.json keys, flattened for the sweep CSV, the same words in
the CLI table), vLLM benchmark_serving's fields in `--format vllm`, Parquet, and the E2E SLO."""
import contextlib
import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from simserve.cli import _print_summary, main
from simserve.metrics import DISTRIBUTIONS, flat_summary
from simserve.simulation import simulate
from simserve.sweep import METRICS, summary_row

CFG = {"model": "llama-3.1-8b", "seed": 2,
       "workload": {"lengths": {"isl": {"mean": 300, "cv": 0.5}, "osl": {"mean": 20, "cv": 0.5}},
                    "arrivals": {"process": "poisson", "rate": 8.0}, "num_requests": 40}}
VLLM_FIELDS = ["duration", "completed", "total_input_tokens", "total_output_tokens", "request_throughput",
               "output_throughput", "total_token_throughput"] + [
    f"{stat}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el") for stat in ("mean", "median", "std", "p99")]


@pytest.fixture(scope="module")
def result():
    return simulate(CFG)


def test_sweep_columns_are_summary_keys_by_one_rule(result):
    row, flat = summary_row(result.summary), flat_summary(result.summary)
    derived = {"num_gpus", "goodput_requests_per_s_per_gpu", "throughput_output_tokens_per_s_per_gpu"}
    for col in METRICS:
        if col in derived:
            continue
        assert col in flat, col
        assert row[col] == flat[col], col
    assert row["ttft_p99_s"] == result.summary["ttft"]["p99"]
    assert row["time_breakdown_compute"] == result.summary["time_breakdown"]["compute"]


def test_cli_table_labels_are_summary_keys(result):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        _print_summary(result.summary, None)
    text = buf.getvalue()
    for key in DISTRIBUTIONS + ("throughput_output_tokens_per_s", "throughput_total_tokens_per_s",
                                "goodput_requests_per_s", "num_completed", "gpu_utilization"):
        assert key in text and key in result.summary, key
    assert "TTFT (s)" not in text


def test_input_and_total_token_throughput(result):
    s, done = result.summary, result.requests[result.requests.status == "completed"]
    duration = done.finish_s.max() - result.requests.arrival_s.min()
    assert s["throughput_input_tokens_per_s"] == pytest.approx(done.isl.sum() / duration, rel=1e-12)
    assert s["throughput_total_tokens_per_s"] == pytest.approx(
        s["throughput_input_tokens_per_s"] + s["throughput_output_tokens_per_s"], rel=1e-12)


def test_e2e_slo_counts_in_goodput():
    loose = simulate({**CFG, "slo": {"ttft_s": None, "tpot_s": None, "e2e_s": 1e6}}).summary
    assert loose["goodput_requests_per_s"] == loose["throughput_requests_per_s"]
    e2e = simulate(CFG).requests.query("status == 'completed'").e2e_s
    median = float(np.median(e2e))
    half = simulate({**CFG, "slo": {"ttft_s": None, "tpot_s": None, "e2e_s": median}}).summary
    share = half["goodput_requests_per_s"] / half["throughput_requests_per_s"]
    assert share == pytest.approx(float((e2e <= median).mean()), rel=1e-12)
    assert 0.4 <= share <= 0.6          # the median splits the completed requests in half


def test_format_vllm_and_parquet(tmp_path, result):
    pytest.importorskip("pyarrow")
    cfg = tmp_path / "cfg.yaml"
    import yaml
    cfg.write_text(yaml.safe_dump(CFG))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--format", "vllm", "--format", "parquet"]) == 0
    v = json.loads((out / "vllm.json").read_text())
    s = json.loads((out / "summary.json").read_text())
    assert set(VLLM_FIELDS) <= set(v)
    for ours, theirs in (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2e", "e2el")):
        assert v[f"mean_{theirs}_ms"] == pytest.approx(s[ours]["mean"] * 1000, rel=1e-12)
        assert v[f"median_{theirs}_ms"] == pytest.approx(s[ours]["p50"] * 1000, rel=1e-12)
        assert v[f"p99_{theirs}_ms"] == pytest.approx(s[ours]["p99"] * 1000, rel=1e-12)
    assert v["request_throughput"] == s["throughput_requests_per_s"]
    assert v["output_throughput"] == s["throughput_output_tokens_per_s"]
    assert v["total_token_throughput"] == s["throughput_total_tokens_per_s"]
    assert v["completed"] == s["num_completed"] and v["total_output_tokens"] == s["output_tokens"]
    csv = pd.read_csv(out / "requests.csv")
    parquet = pd.read_parquet(out / "requests.parquet")
    assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(csv)
    assert np.allclose(parquet.ttft_s.to_numpy(float), csv.ttft_s.to_numpy(float), rtol=1e-8, equal_nan=True)
    assert (out / "timeline.parquet").is_file()
    assert not math.isnan(v["std_itl_ms"])
