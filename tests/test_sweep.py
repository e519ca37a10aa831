"""`simserve sweep` (DESIGN.md 5): one CSV row per finished point, resume skips finished points,
bad input is one line."""
import pandas as pd
import pytest
import yaml

from simserve.cli import main
from simserve.errors import ConfigError
from simserve.sweep import load_sweep, point_key, run_sweep

BASE = {"model": "llama-3.1-8b",
        "workload": {"lengths": {"isl": 128, "osl": 8}, "arrivals": {"process": "batch"}, "num_requests": 4}}


def write(tmp_path, body):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_grid_is_the_cartesian_product_and_points_combine_with_it():
    _, points = load_sweep({"base": BASE, "grid": {"parallelism.tp": [1, 2], "scheduler.max_batch_size": [2, 4]},
                            "points": [{"seed": 0}, {"seed": 1}], "set": {"fidelity": "fast"}})
    assert len(points) == 8
    assert {(p["parallelism.tp"], p["scheduler.max_batch_size"], p["seed"]) for p in points} == \
        {(t, b, s) for t in (1, 2) for b in (2, 4) for s in (0, 1)}
    assert all(p["fidelity"] == "fast" for p in points)


def test_small_grid_writes_one_row_per_point_with_metrics(tmp_path):
    sweep = write(tmp_path, {"base": BASE, "grid": {"parallelism.tp": [1, 2], "scheduler.max_batch_size": [2, 4]}})
    df = run_sweep(sweep, tmp_path / "out", workers=2)
    assert len(df) == 4 and (df.status == "ok").all()
    assert set(df["parallelism.tp"]) == {1, 2}
    for col in ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "e2e_p99_s", "throughput_output_tokens_per_s",
                "goodput_requests_per_s", "num_gpus", "goodput_requests_per_s_per_gpu", "time_breakdown_allreduce",
                "time_breakdown_p2p", "time_breakdown_bubble", "wall_time_s"):
        assert df[col].notna().all(), col
    assert list(df.sort_values("parallelism.tp").num_gpus.unique()) == [1, 2]
    assert (df[df["parallelism.tp"] == 1].time_breakdown_allreduce == 0).all()
    assert (df[df["parallelism.tp"] == 2].time_breakdown_allreduce > 0).all()


def test_rerun_skips_finished_points_and_runs_only_new_ones(tmp_path):
    out = tmp_path / "out"
    run_sweep(write(tmp_path, {"base": BASE, "grid": {"parallelism.tp": [1, 2]}}), out, workers=1)
    seen = []
    df = run_sweep(write(tmp_path, {"base": BASE, "grid": {"parallelism.tp": [1, 2, 4]}}), out, workers=1,
                   on_point=lambda ov, outcome: seen.append(ov))
    assert seen == [{"parallelism.tp": 4}]
    assert len(df) == 3 and df.point.is_unique


def test_points_that_cannot_run_are_recorded_as_errors_not_crashes(tmp_path):
    body = {"base": {**BASE, "model": "llama-3.1-70b", "precision": {"weights": "bf16"}},
            "points": [{"parallelism.tp": 1}, {"parallelism.tp": 8}]}
    df = run_sweep(write(tmp_path, body), tmp_path / "out", workers=1)
    row = df.set_index("parallelism.tp").loc[1]
    assert row.status == "error" and ("fit" in row.error.lower() or "memory" in row.error.lower())
    assert df.set_index("parallelism.tp").loc[8].status == "ok"


@pytest.mark.parametrize("body, needle", [
    ({"base": BASE, "grid": {"parallelism.tpx": [1]}}, "unknown key 'parallelism.tpx'"),
    ({"base": BASE, "grid": {"parallelism.tp": 2}}, "grid.parallelism.tp must be a non-empty list"),
    ({"base": BASE, "gird": {"parallelism.tp": [1]}}, "unknown sweep key(s) 'gird'"),
    ({"base": BASE}, "needs a grid and/or a list of points"),
])
def test_bad_sweeps_fail_with_one_line(tmp_path, body, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")) as info:
        run_sweep(write(tmp_path, body), tmp_path / "out")
    assert "\n" not in str(info.value)


def test_cli_sweep_exits_2_on_bad_key_and_writes_csv_on_good(tmp_path, capsys):
    bad = write(tmp_path, {"base": BASE, "grid": {"parallelism.tpx": [1]}})
    assert main(["sweep", str(bad), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("simserve: error:") and "tpx" in err and "\n" not in err
    good = write(tmp_path, {"base": BASE, "points": [{"seed": 1}]})
    assert main(["sweep", str(good), "--out", str(tmp_path / "good"), "--workers", "1", "--quiet"]) == 0
    df = pd.read_csv(tmp_path / "good" / "results.csv")
    assert list(df.point) == [point_key({"seed": 1})]


def test_ray_without_the_package_is_a_clear_error(tmp_path):
    try:
        import ray  # noqa: F401
        pytest.skip("ray is installed")
    except ImportError:
        pass
    sweep = write(tmp_path, {"base": BASE, "points": [{"seed": 1}]})
    with pytest.raises(ConfigError, match="needs the ray package"):
        run_sweep(sweep, tmp_path / "out", ray_address="auto")


VOLATILE = ("wall_time_s",)      # the only column that differs between runs of the same point


def test_ray_local_instance_gives_the_same_rows_as_local_processes(tmp_path):
    """A private Ray instance with 2 CPUs, started by the sweep itself (`--ray local`)."""
    pytest.importorskip("ray")
    sweep = write(tmp_path, {"base": BASE, "grid": {"parallelism.tp": [1, 2], "seed": [0, 1]}})
    local = run_sweep(sweep, tmp_path / "local", workers=2)
    ray_rows = run_sweep(sweep, tmp_path / "ray", workers=2, ray_address="local")
    key = lambda df: df.drop(columns=list(VOLATILE)).sort_values("point").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(local), key(ray_rows))
    assert (ray_rows.status == "ok").all() and len(ray_rows) == 4


def test_ray_auto_without_a_cluster_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sweep = write(tmp_path, {"base": BASE, "points": [{"seed": 1}]})
    with pytest.raises(ConfigError, match="cannot connect") as info:
        run_sweep(sweep, tmp_path / "out", ray_address="auto")
    assert "\n" not in str(info.value)


def test_plot_of_a_sweep_folder_draws_the_latency_throughput_figure(tmp_path, capsys):
    """One curve per layout (tp), points along it by arrival rate; the PNG is a real image."""
    base = {**BASE, "workload": {**BASE["workload"], "arrivals": {"process": "poisson", "rate": 1.0}}}
    sweep = write(tmp_path, {"base": base, "grid": {"parallelism.tp": [1, 2],
                                                     "workload.arrivals.rate": [1.0, 4.0]}})
    run_sweep(sweep, tmp_path / "out", workers=1)
    assert main(["plot", str(tmp_path / "out")]) == 0
    png = (tmp_path / "out" / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    from simserve.plots import sweep_figure
    from simserve.sweep import FIGURE_COLUMNS, figure_table
    fig = sweep_figure(figure_table(pd.read_csv(tmp_path / "out" / "results.csv")), **FIGURE_COLUMNS)
    curves = {line.get_gid() for line in fig.axes[0].get_lines()}
    assert curves == {"sweep-tp=1", "sweep-tp=2"}
    assert all(len(line.get_xdata()) == 2 for line in fig.axes[0].get_lines())
