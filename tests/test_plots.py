"""Figures: every one is drawn for small example configs without a matplotlib warning, and what
it shows is the summary's data (percentile lines at the summary's percentiles, breakdown bars at
the summary's fractions)."""
import warnings

import numpy as np
import pandas as pd
import pytest

from simserve.cli import main
from simserve.errors import SimserveError
from simserve.export import write_results
from simserve.metrics import distribution
from simserve.plots import (RunData, all_figures, binned_percentiles, breakdown_rows, figure_bytes, kv_and_batch,
                            latency_cdfs, queue_length, sweep_figure, time_breakdown)
from simserve.simulation import simulate

WORKLOAD = {"lengths": {"isl": 256, "osl": 32}, "arrivals": {"process": "poisson", "rate": 5}, "num_requests": 50}
CONFIGS = {
    "one-gpu": {"workload": WORKLOAD},
    "tp2-pp2": {"parallelism": {"tp": 2, "pp": 2}, "workload": WORKLOAD},
    # SLOs inside the latency range, so the SLO lines are drawn on scale
    "dp2-tight-slo": {"parallelism": {"dp": 2}, "slo": {"ttft_s": 0.02, "tpot_s": 0.0069}, "workload": WORKLOAD},
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def result(request):
    return simulate(CONFIGS[request.param])


def _line(fig, gid):
    found = [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gid]
    assert len(found) == 1, f"expected one artist with gid {gid}, found {len(found)}"
    return found[0]


def test_every_figure_draws_without_warnings(result):
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # any matplotlib (or numpy/pandas) warning fails
        figures = all_figures(result)
        assert set(figures) == {"latency_cdf", "latency_over_time", "time_breakdown", "kv_batch"}
        for name, fig in figures.items():
            png = figure_bytes(fig, "png")
            assert png.startswith(b"\x89PNG"), name
        assert b"<svg" in figure_bytes(figures["latency_cdf"], "svg")


@pytest.mark.parametrize("metric", ["ttft", "tpot", "e2e"])
def test_percentile_lines_sit_at_the_summary_percentiles(result, metric):
    # the figure computes percentiles with metrics.distribution on the same completed requests
    # the summary used, so equality is exact
    fig = latency_cdfs(result)
    for pct in ("p50", "p90", "p99"):
        x = _line(fig, f"{metric}-{pct}").get_xdata()
        assert x[0] == x[1] == result.summary[metric][pct]


def test_cdf_curve_is_the_sorted_sample(result):
    fig = latency_cdfs(result)
    x, y = _line(fig, "ttft-cdf-0").get_data()
    done = np.sort(result.requests[result.requests.status == "completed"].ttft_s.to_numpy())
    np.testing.assert_array_equal(x[1:], done)
    assert y[0] == 0.0 and y[-1] == 1.0 and np.all(np.diff(y) >= 0)


def test_itl_panel_marks_the_summary_every_gap_percentiles(result):
    # requests.csv has each request's max gap only; the summary's every-gap p99 is drawn beside it
    fig = latency_cdfs(result)
    assert _line(fig, "itl-allgaps-p99-0").get_xdata()[0] == result.summary["itl"]["p99"]
    per_request_max = result.requests[result.requests.status == "completed"].itl_max_s
    assert _line(fig, "itl-p99").get_xdata()[0] == distribution(per_request_max)["p99"]


def test_slo_drawn_at_the_config_slo():
    r = simulate(CONFIGS["dp2-tight-slo"])
    fig = latency_cdfs(r)
    assert _line(fig, "ttft-slo").get_xdata()[0] == 0.02
    assert _line(fig, "tpot-slo").get_xdata()[0] == 0.0069
    # the default 2 s TTFT SLO is far beyond ~10 ms TTFTs: noted, not drawn
    fig = latency_cdfs(simulate(CONFIGS["one-gpu"]))
    assert not [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == "ttft-slo"]
    assert _line(fig, "ttft-slo-offscale")


def test_percentiles_from_a_saved_folder_match_to_csv_precision(tmp_path):
    r = simulate(CONFIGS["tp2-pp2"])
    write_results(r, tmp_path)
    fig = latency_cdfs(RunData.from_dir(tmp_path))
    for metric in ("ttft", "tpot", "e2e"):
        # requests.csv keeps 9 significant digits: relative error below 5e-9
        assert _line(fig, f"{metric}-p99").get_xdata()[0] == pytest.approx(r.summary[metric]["p99"], rel=1e-8)


def test_breakdown_bars_are_the_summary_fractions(result):
    rows = breakdown_rows(RunData.from_result(result))
    label, cluster = rows[0]
    assert label == "all GPUs" and cluster == result.summary["time_breakdown"]
    sim = result.summary["sim_time_s"]
    assert len(rows) == 1 + len(result.summary["stages"])
    for (_, frac), stage in zip(rows[1:], result.summary["stages"]):
        # compute + collectives come from the timeline; they sum to the stage's busy time up to
        # float summation order (1e-9 relative)
        busy = frac["compute"] + frac["allreduce"] + frac["allgather"]
        assert busy * sim == pytest.approx(stage["busy_s"], rel=1e-9)
        # a fraction of sim time multiplied back: equal up to the rounding of that division (~1 ulp)
        assert frac["bubble"] * sim == pytest.approx(stage["waiting_for_input_s"], rel=1e-12)
        assert sum(frac.values()) == pytest.approx(1.0, rel=1e-9)
    fig = time_breakdown(result)
    compute_bar = [p for p in fig.axes[0].patches if p.get_gid() == "breakdown-compute"][0]
    assert compute_bar.get_width() == result.summary["time_breakdown"]["compute"]


def test_kv_figure_needs_a_timeline(result):
    run = RunData.from_result(result)
    assert kv_and_batch(run) is not None
    run.timeline = None
    assert kv_and_batch(run) is None
    assert "kv_batch" not in all_figures(run)


def test_queue_length_never_negative_and_drains():
    r = simulate(CONFIGS["one-gpu"])
    t, n = queue_length(r.requests)
    assert np.all(np.diff(t) >= 0) and n.min() >= 0 and n[-1] == 0


def test_binned_percentiles_match_numpy():
    arrival = np.array([0.1, 0.2, 0.3, 1.1, 1.5, 2.9])
    values = np.array([1.0, 3.0, 2.0, 10.0, np.nan, 7.0])
    centres, p50, p99, count = binned_percentiles(arrival, values, np.array([0.0, 1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(centres, [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(count, [3, 1, 1])
    assert p50[0] == 2.0 and p99[0] == np.percentile([1.0, 2.0, 3.0], 99) and p50[1] == 10.0


SWEEP = pd.DataFrame({"layout": ["tp1", "tp1", "tp1", "tp2", "tp2"], "throughput": [30.0, 10.0, 20.0, 15.0, 40.0],
                      "p99_latency": [0.9, 0.1, 0.3, 0.05, 0.4], "goodput": [2.0, 1.0, 1.8, 1.5, 3.0],
                      "num_gpus": [1, 1, 1, 2, 2]})


def test_sweep_figure_one_line_per_layout_sorted_by_throughput():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = sweep_figure(SWEEP, slo_s=0.5)
        figure_bytes(fig)
    x, y = _line(fig, "sweep-tp1").get_data()
    np.testing.assert_array_equal(x, [10.0, 20.0, 30.0])
    np.testing.assert_array_equal(y, [0.1, 0.3, 0.9])
    widths = sorted(p.get_width() for p in fig.axes[1].patches)
    assert widths == [1.5, 2.0]          # best goodput per GPU: tp2 3.0/2, tp1 2.0/1
    with pytest.raises(SimserveError, match="goodput"):
        sweep_figure(SWEEP.drop(columns="goodput"))


def test_plot_cli_redraws_and_compares_folders(tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text("workload: {lengths: {isl: 256, osl: 32}, arrivals: {process: poisson, rate: 5}, "
                   "num_requests: 30}\n")
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["run", str(cfg), "--out", str(a), "--plots", "--quiet"]) == 0
    assert {p.name for p in (a / "plots").iterdir()} == {"latency_cdf.png", "latency_over_time.png",
                                                         "time_breakdown.png", "kv_batch.png"}
    assert main(["run", str(cfg), "--out", str(b), "--set", "parallelism.tp=2", "--quiet"]) == 0
    out = tmp_path / "cmp"
    assert main(["plot", str(a), str(b), "--labels", "tp1,tp2", "--format", "svg", "--out", str(out)]) == 0
    assert len(list(out.glob("*.svg"))) == 4
    assert main(["plot", str(a), str(b), "--labels", "only-one"]) == 2
    assert main(["plot", str(tmp_path / "missing")]) == 2
    SWEEP.to_csv(tmp_path / "results.csv", index=False)
    assert main(["plot", str(tmp_path), "--out", str(out)]) == 0
    assert (out / "sweep.png").is_file()
