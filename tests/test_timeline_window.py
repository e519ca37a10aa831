"""The timeline is optional and windowed (engine.timeline, engine.timeline_window_s): bounded memory
for long runs without changing any result."""
import pytest

from simserve.engine import timeline as timeline_module
from simserve.errors import ConfigError
from simserve.simulation import simulate

RUN = ["workload.num_requests=60", "parallelism.pp=2"]


def test_a_window_keeps_exactly_the_rows_that_start_inside_it_and_changes_no_result():
    full = simulate(None, overrides=RUN)
    part = simulate(None, overrides=[*RUN, "engine.timeline_window_s=[5, 9]"])
    inside = full.timeline[(full.timeline.start_s >= 5) & (full.timeline.start_s < 9)].reset_index(drop=True)
    assert len(inside) and len(part.timeline) == len(inside)
    assert part.timeline.to_csv(float_format="%.17g") == inside.to_csv(float_format="%.17g")
    assert part.requests.to_csv(float_format="%.17g") == full.requests.to_csv(float_format="%.17g")
    same = lambda s: {k: v for k, v in s.items() if k != "wall_time_s"}
    assert same(part.summary) == same(full.summary)


def test_off_above_the_request_count_per_stage_unless_asked(monkeypatch):
    monkeypatch.setattr(timeline_module, "AUTO_MAX_REQUESTS", 119)     # 60 requests x 2 stages = 120
    assert simulate(None, overrides=RUN).timeline is None
    assert simulate(None, overrides=[*RUN, "engine.timeline=true"]).timeline is not None
    monkeypatch.setattr(timeline_module, "AUTO_MAX_REQUESTS", 120)
    assert simulate(None, overrides=RUN).timeline is not None
    assert simulate(None, overrides=[*RUN, "engine.timeline=false"]).timeline is None


@pytest.mark.parametrize("bad", ["engine.timeline_window_s=[9, 5]", "engine.timeline_window_s=[-1, 5]"])
def test_a_bad_window_is_refused_naming_the_field(bad):
    with pytest.raises(ConfigError, match="engine.timeline_window_s"):
        simulate(None, overrides=[*RUN, bad])


def test_run_timeline_window_cli(tmp_path):
    import gzip

    import pandas as pd

    from simserve.cli import main
    cfg = tmp_path / "small.yaml"
    cfg.write_text("workload: {lengths: {isl: 256, osl: 32}, arrivals: {process: poisson, rate: 5}, "
                   "num_requests: 30}\n")
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--timeline-window", "1:2", "--quiet"]) == 0
    with gzip.open(out / "timeline.csv.gz", "rt") as f:
        tl = pd.read_csv(f)
    assert len(tl) and tl.start_s.min() >= 1 and tl.start_s.max() < 2


def test_an_auto_timeline_past_its_row_budget_is_dropped_and_said_so(monkeypatch):
    """The auto rule's timeline is dropped once it outgrows AUTO_MAX_ROWS (checked as each chunk of
    CHUNK_ROWS rows is stored: here 8,191, so at the first chunk; 1,500 requests write ~12.6k);
    nothing else moves, and an asked-for one is kept."""
    run = ["workload.num_requests=1500"]
    monkeypatch.setattr(timeline_module, "AUTO_MAX_ROWS", timeline_module.CHUNK_ROWS - 1)
    dropped = simulate(None, overrides=run)
    kept = simulate(None, overrides=[*run, "engine.timeline=true"])
    assert dropped.timeline is None and len(kept.timeline) > timeline_module.CHUNK_ROWS
    assert "timeline_dropped" not in kept.summary
    note = dropped.summary["timeline_dropped"]
    assert note["rows_over"] == timeline_module.CHUNK_ROWS - 1 and note["keep_with"] == "engine.timeline=true"
    assert kept.timeline.start_s.iloc[0] < note["at_s"] < kept.timeline.start_s.iloc[-1]
    same = lambda s: {k: v for k, v in s.items() if k not in ("wall_time_s", "timeline_dropped")}
    assert same(dropped.summary) == same(kept.summary)
    assert dropped.requests.equals(kept.requests)
