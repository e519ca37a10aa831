"""`simserve plan` (issue 16): the planner's best layout equals an exhaustive search over the same
space; the chosen rate meets the SLO in a confirming run and the next grid rate does not; resume
redoes no finished probe; pruning and infeasibility name the binding metric; bad input is one line."""
import math

import pandas as pd
import pytest

from simserve.cli import main
from simserve.plan import load_plan, run_plan
from simserve.plan.report import at_rate
from simserve.plan.run import prepare
from simserve.plan.runner import ProbeStore, probe_key
from simserve.plan.search import RateGrid, RateSearch, slo_violations
from simserve.plan.space import enumerate_layouts
from simserve.sweep import run_point, summary_row

# 50 requests re-timed from the bundled Azure conversation trace, with short drawn lengths (prompts
# lognormal mean 1000 cv 1, outputs mean 24) so that a probe is cheap. Each model gets an SLO that
# binds inside the grid (3 x 1.6^k req/s up to 60; 20 x 1.6^k up to 400 for the 8B): found by looking at where p99 TTFT and TPOT
# of these layouts cross, not fitted to any answer.
WORKLOAD = {"trace": "AzureLLMInferenceTrace_conv.csv.gz",
            "lengths": {"isl": {"dist": "lognormal", "mean": 1000, "cv": 1.0},
                        "osl": {"dist": "lognormal", "mean": 24, "cv": 0.5}}}
COMMON = {"hardware": ["h100"], "gpus": 8, "workload": WORKLOAD, "requests": 50,
          "rates": {"min_rate": 3.0, "step": 0.6, "max_rate": 60.0}}
SMALL = {
    "llama-3.1-8b": {**COMMON, "models": ["llama-3.1-8b"], "slo": {"ttft_p99": 0.12, "tpot_p99": 0.012},
                     "rates": {"min_rate": 20.0, "step": 0.6, "max_rate": 400.0},
                     "space": {"tp": [1, 2, 4, 8], "pp": [1]}},
    "llama-3.1-70b": {**COMMON, "models": ["llama-3.1-70b"], "slo": {"ttft_p99": 1.0, "tpot_p99": 0.05},
                      "space": {"tp": [1, 2, 4, 8], "pp": [1, 2]}},
}


@pytest.fixture(scope="module", params=sorted(SMALL))
def small_plan(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("plan")
    spec = load_plan(SMALL[request.param])
    return spec, out, run_plan(spec, out, workers=1, show_progress=False, log=False)


def exhaustive(spec, store: ProbeStore) -> dict[str, tuple[str, float]]:
    """model -> (best layout, its goodput per GPU): every layout of the space (pruned ones too) at
    every grid rate, the highest rate meeting the SLO found by scanning, not by bisection."""
    _, searches, grid = prepare(spec)
    config_of = {(s.candidate.layout.model, s.candidate.layout.name): s for s in searches}
    best: dict[str, tuple[str, float]] = {}
    ranked = []
    for model in spec.models:
        for layout in enumerate_layouts(spec, model, spec.hardware[0]):
            s = config_of.get((layout.model, layout.name))
            if s is None:           # pruned by the planner: it must fail even at the lowest rate
                pruned_layout_fails_at_the_lowest_rate(spec, layout, grid)
                continue
            found = scan(s, grid, store, spec.slo)
            if found:
                goodput, tokens = at_rate(found)
                ranked.append((-goodput / layout.num_gpus, -tokens / layout.num_gpus, layout.replica_gpus,
                               layout.name))
    if ranked:      # the planner's order (plan.report.rank): goodput per GPU, then cost per output
        # token (one GPU price here: more output tokens/s per GPU), fewer GPUs per replica, name
        neg, _, _, name = min(ranked)
        best[spec.models[0]] = (name, -neg)
    return best


def scan(s, grid, store: ProbeStore, slo: dict) -> dict | None:
    """The probe row at the highest grid rate meeting the SLO, every grid rate simulated."""
    meeting = []
    for k in range(grid.top + 1):
        cfg = s.probe_config(k)
        row = store.get(probe_key(cfg)) or {"rate": grid.rate(k), **run_point(cfg, {})}
        if row["status"] == "ok" and not slo_violations(row, slo):
            meeting.append((k, row))
    return max(meeting, key=lambda m: m[0])[1] if meeting else None


def test_bounded_out_layouts_cannot_rank_first(small_plan):
    """Branch and bound (plan.run.waves): a layout reported `bounded` has, by an exhaustive scan,
    a goodput per GPU strictly below the best; the 70B space bounds out at least one pipeline."""
    spec, out, result = small_plan
    _, searches, grid = prepare(spec)
    by_name = {s.candidate.layout.name: s for s in searches}
    bounded = result.table[result.table.status == "bounded"]
    if spec.models == ["llama-3.1-70b"]:
        assert len(bounded) and (bounded.pp > 1).all()
    store = ProbeStore(out / "probes.csv")
    try:
        for name, gpus in zip(bounded.layout, bounded.num_gpus):
            found = scan(by_name[name], grid, store, spec.slo)
            per_gpu = at_rate(found)[0] / gpus if found else 0.0
            assert per_gpu < result.best[spec.models[0]]["goodput_per_gpu"], name
    finally:
        store.close()


def test_rate_search_with_a_floor_never_probes_below_it():
    grid = RateGrid(0.5, 0.1, 500.0)
    for boundary, floor in ((30, 20), (30, 30), (30, 31), (30, 45)):
        s = RateSearch(grid, 60, grid.steps_for(2.0), grid.steps_for(4 / 3), floor=floor)
        while (k := s.propose()) is not None:
            latency = 0.5 if k <= boundary else 1.0 + 0.1 * (k - boundary)
            s.record(k, {"status": "ok", "ttft_p99_s": latency}, {"ttft_p99": 1.0})
        assert min(s.ok) >= floor
        if floor <= boundary:          # the answer is at or above the floor: found as without it
            assert s.verdict == "ok" and s.lo == boundary and s.hi == boundary + 1
        else:                          # below it: bounded once a probe at or below the floor fails
            assert s.verdict == "bounded" and s.lo is None and s.hi <= floor


def prepare_workload(spec):
    from simserve.plan.spec import workload_section
    return workload_section(spec)


def pruned_layout_fails_at_the_lowest_rate(spec, layout, grid):
    """A pruned layout cannot meet the SLO at the lowest grid rate, where it is least loaded."""
    cfg = layout.config(spec.base, prepare_workload(spec), spec.slo, spec.seed, spec.fidelity)
    cfg["workload"]["arrivals"]["rate"] = grid.rate(0)
    outcome = run_point(cfg, {})
    assert outcome["status"] == "error" or slo_violations(outcome, spec.slo), layout.name


def test_best_layout_equals_exhaustive_search(small_plan):
    spec, out, result = small_plan
    store = ProbeStore(out / "probes.csv")
    try:
        truth = exhaustive(spec, store)
    finally:
        store.close()
    assert set(truth) == set(spec.models) == set(result.best)
    for model, (name, per_gpu) in truth.items():
        chosen = result.best[model]
        assert chosen["layout"] == name, model
        assert chosen["goodput_per_gpu"] == pytest.approx(per_gpu, rel=1e-12)


def test_chosen_rate_meets_the_slo_and_the_next_step_does_not(small_plan):
    from simserve import simulate

    spec, _, result = small_plan
    _, searches, grid = prepare(spec)
    for model, best in result.best.items():
        s = next(s for s in searches if (s.candidate.layout.model, s.candidate.layout.name) == (model, best["layout"]))
        k = grid.index(best["rate"])
        assert grid.rate(k) == pytest.approx(best["rate"], rel=1e-12)
        at = summary_row(simulate(s.probe_config(k)).summary)           # confirming runs, fresh
        above = summary_row(simulate(s.probe_config(k + 1)).summary)
        assert not slo_violations(at, spec.slo), (model, at)
        assert slo_violations(above, spec.slo), (model, above)
        assert best["next_rate"] == pytest.approx(grid.rate(k + 1), rel=1e-12)


def test_plan_folder_table_and_knee(small_plan, tmp_path):
    spec, out, result = small_plan
    table = pd.read_csv(out / "plan.csv")
    assert {"rank", "cost_per_m_output_tokens", "goodput_per_gpu", "binding_metric"} <= set(table.columns)
    assert (out / "pareto.png").stat().st_size > 0 and (out / "plan.json").exists()
    if spec.models == ["llama-3.1-70b"]:       # 141 GB of bf16 weights cannot sit on one 80 GB GPU
        pruned = table[(table.tp == 1) & (table.pp == 1)].iloc[0]
        assert pruned.status == "infeasible" and pruned.binding_metric == "memory"
    assert (table.status == "ok").any() and not (table.status == "unbounded").any()
    ranked = table.dropna(subset=["rank"])
    for _, sub in ranked.groupby("model"):
        assert list(sub.sort_values("rank").goodput_per_gpu) == sorted(sub.goodput_per_gpu, reverse=True)
    # $/M output tokens = price x GPUs / (tokens/s x 3600) x 1e6, at the catalog's H100 price
    row = ranked.iloc[0]
    assert row.cost_per_m_output_tokens == pytest.approx(
        row.price_per_gpu_hour * row.num_gpus / (row.output_tokens_per_s_per_gpu * row.num_gpus * 3600) * 1e6)
    for knee in result.knees:
        sizes = knee["goodput_per_gpu_by_replica_gpus"]
        assert knee["knee_replica_gpus"] == max(sizes, key=sizes.get)
        assert "stop paying beyond" in knee["text"]
    if spec.models == ["llama-3.1-70b"]:       # `simserve plot DIR` redraws a plan folder's figure
        assert main(["plot", str(out), "--out", str(tmp_path)]) == 0
        assert (tmp_path / "pareto.png").stat().st_size > 0


def test_resume_after_a_kill_redoes_no_finished_probe(tmp_path):
    spec = load_plan({**SMALL["llama-3.1-8b"], "space": {"tp": [1, 2], "pp": [1]}})
    first = run_plan(spec, tmp_path, workers=1, show_progress=False, log=False, figures=False)
    lines = (tmp_path / "probes.csv").read_text().splitlines(keepends=True)
    n = len(lines) - 1
    assert n == first.info["probes_simulated"] >= 3
    (tmp_path / "probes.csv").write_text("".join(lines[:-2]))       # killed before the last two landed
    again = run_plan(spec, tmp_path, workers=1, show_progress=False, log=False, figures=False)
    assert again.info["probes_simulated"] == 2 and again.info["probes_reused"] == n - 2
    pd.testing.assert_frame_equal(first.table, again.table)


def test_a_layout_that_cannot_meet_the_slo_names_the_binding_metric(tmp_path):
    # no closed form bounds E2E: the search descends until halving the rate stops helping
    spec = load_plan({**SMALL["llama-3.1-8b"], "space": {"tp": [1], "pp": [1]},
                      "slo": {"ttft_p99": 1.0, "e2e_p99": 0.05}})
    row = run_plan(spec, tmp_path / "a", workers=1, show_progress=False, log=False, figures=False).table.iloc[0]
    assert row.status == "infeasible" and row.binding_metric == "e2e_p99" and row.binding_value > 0.05
    # a TPOT limit below one lone decode step is pruned by the closed form, without simulating
    spec = load_plan({**SMALL["llama-3.1-8b"], "space": {"tp": [8], "pp": [1]}, "slo": {"tpot_p99": 1e-4}})
    result = run_plan(spec, tmp_path / "b", workers=1, show_progress=False, log=False, figures=False)
    row = result.table.iloc[0]
    assert row.status == "infeasible" and row.binding_metric == "tpot_p99" and result.info["probes_simulated"] == 0


def test_rate_search_finds_the_boundary_of_a_monotone_oracle():
    grid = RateGrid(0.5, 0.1, 500.0)
    for boundary in (0, 3, 17, 40, grid.top - 1):
        for start in (0, 10, 60, grid.top):
            s = RateSearch(grid, start, grid.steps_for(2.0), grid.steps_for(4 / 3))
            while (k := s.propose()) is not None:      # latency rising with load, limit 1.0
                latency = 0.5 if k <= boundary else 1.0 + 0.1 * (k - boundary)
                s.record(k, {"status": "ok", "ttft_p99_s": latency}, {"ttft_p99": 1.0})
            assert s.verdict == "ok" and s.lo == boundary and s.hi == boundary + 1
            # down in `down` steps up to two jumps below the start, then doubling the distance, or
            # up in jumps: at most 2 + jump / down + log2(grid) + the grid / jump, then bisection
            assert len(s.ok) <= (2 + math.ceil(2 * s.jump / s.down) + math.ceil(math.log2(grid.top))
                                 + math.ceil(grid.top / s.jump) + math.ceil(math.log2(grid.top)))


def test_a_layout_failing_at_every_rate_is_infeasible_once_the_lowest_rate_fails():
    grid = RateGrid(0.5, 0.1, 500.0)
    s = RateSearch(grid, 40, grid.steps_for(2.0), grid.steps_for(4 / 3))
    while (k := s.propose()) is not None:          # 3 s whatever the rate: lower rates cannot help
        s.record(k, {"status": "ok", "ttft_p99_s": 3.0 + k / 1000}, {"ttft_p99": 1.0})
    # what an exhaustive scan says: k = 0 fails. Down by 3 while under two jumps (14) below the
    # start (40, 37, ..., 25), then doubling the distance from it (10: 30 below), then 0
    assert s.verdict == "infeasible" and sorted(s.ok) == [0, 10, 25, 28, 31, 34, 37, 40]
    assert s.binding() == ("ttft_p99", 3.0, 1.0, 0)


@pytest.mark.parametrize("argv,needle", [
    (["--slo", "ttft_p42=1s"], "unknown SLO metric"),
    (["--gpus", "0"], "gpus"),
    (["--hardware", "h900"], "unknown hardware"),
    (["--slo", "ttft_p99=fast"], "seconds"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, argv, needle):
    base = ["plan", "--model", "llama-3.1-8b", "--hardware", "h100", "--gpus", "1", "--requests", "8",
            "--out", str(tmp_path / "out"), "--quiet"]
    assert main(base + argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()




def test_ranking_across_gpu_types_by_goodput_and_by_cost():
    from simserve.plan.report import knees, rank
    # synthetic rows (no simulation): two GPU types, replica sizes 2/4/8, one infeasible layout
    rows = [dict(model="m", hardware=hw, layout=name, replica_gpus=size, num_gpus=8, status=st,
                 goodput_per_gpu=g, cost_per_m_output_tokens=c)
            for hw, name, size, st, g, c in [("h100-sxm", "tp2", 2, "ok", 3.0, 0.50),
                                            ("h100-sxm", "tp4", 4, "ok", 4.0, 0.40),
                                            ("h100-sxm", "tp8", 8, "ok", 3.5, 0.45),
                                            ("h200", "tp2", 2, "ok", 4.5, 0.60),
                                            ("h200", "tp1", 1, "infeasible", None, None)]]
    table = rank(pd.DataFrame(rows))
    by = {(r["hardware"], r["layout"]): r for r in table.to_dict("records")}
    assert [by[k]["rank"] for k in [("h200", "tp2"), ("h100-sxm", "tp4"), ("h100-sxm", "tp8"), ("h100-sxm", "tp2")]] \
        == [1, 2, 3, 4]
    assert by[("h100-sxm", "tp4")]["cost_rank"] == 1 and by[("h200", "tp2")]["cost_rank"] == 4
    assert pd.isna(by[("h200", "tp1")]["rank"])
    h100 = next(k for k in knees(table) if k["hardware"] == "h100-sxm")
    assert h100["knee_replica_gpus"] == 4 and "8 GPUs per replica: 3.5" in h100["text"]


def test_catalog_prices_have_sources_and_the_override_wins():
    from pathlib import Path

    from simserve.catalog import hardware_catalog
    from simserve.plan.run import _prices
    text = (Path(__file__).parents[1] / "simserve" / "catalog" / "hardware.yaml").read_text()
    priced = [line for line in text.splitlines() if line.strip().startswith("price_per_hour:")]
    assert len(priced) == len(hardware_catalog())
    assert all("# USD/GPU-h:" in line and ("(" in line or "--price" in line) for line in priced)  # a source each
    spec = load_plan({**SMALL["llama-3.1-8b"], "hardware": ["h100", "mi300x"], "prices": {"h100": 3.0}})
    prices = _prices(spec)
    assert prices["h100-sxm"] == 3.0 and prices["mi300x"] == hardware_catalog()["mi300x"].price_per_hour


def test_plan_yaml_with_cli_overrides(tmp_path):
    import yaml
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"models": ["llama-3.1-8b"], "hardware": ["h100"], "gpus": 2,
                                    "workload": WORKLOAD, "requests": 20, "slo": {"ttft_p99": 1.0}}))
    # the command line's SLO wins: a TPOT below one lone decode step prunes every layout, unsimulated
    assert main(["plan", str(path), "--slo", "tpot_p99=0.1ms", "--tp", "1,2", "--pp", "1",
                 "--out", str(tmp_path / "out"), "--quiet", "--workers", "1"]) == 0
    table = pd.read_csv(tmp_path / "out" / "plan.csv")
    assert list(table.status) == ["infeasible", "infeasible"] and set(table.binding_metric) == {"tpot_p99"}
    assert pd.read_csv(tmp_path / "out" / "probes.csv").empty


def test_layouts_serving_the_same_requests_within_the_slo_tie_exactly():
    """Two probes at one offered rate in which the same 97 of 100 requests meet the SLO, but whose
    runs end at different times (each summary rate divides by its own span): the goodput at the
    offered rate must be the same number, so the ranking's tie-breaks (cost, replica size) decide,
    not the last bits of two spans."""
    def probe(span):
        return {"rate": 31.5, "num_requests": 100, "num_completed": 100,
                "throughput_requests_per_s": 100 / span, "goodput_requests_per_s": 97 / span,
                "throughput_output_tokens_per_s": 12800 / span}
    spans = (3.1748, 3.1748 * (1 + 3e-16), 3.2 + 1e-13)
    goodputs = {at_rate(probe(s))[0] for s in spans}
    assert goodputs == {31.5 * 97 / 100}
