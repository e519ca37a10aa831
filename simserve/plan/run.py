"""`run_plan(spec, out_dir)`: prune, search every surviving layout's rate, rank, write the plan folder.

DIR/probes.csv   every simulation (one rate of one layout), appended as it finishes
DIR/plan.csv     one row per layout (simserve.plan.report.PLAN_COLUMNS), ranked
DIR/plan.json    the spec, the best layout per model, the scaling knees, probe counts, wall time
DIR/pareto.png   simserve.plan.figures
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simserve.catalog import get_hardware, get_model
from simserve.errors import ConfigError, SimserveError
from simserve.plan import report
from simserve.plan.report import at_rate
from simserve.plan.runner import LocalPool, ProbeStore, RayPool, drive, probe_key
from simserve.plan.search import RateGrid, RateSearch, slo_violations, stopped
from simserve.plan.space import Candidate, candidates
from simserve.plan.spec import PlanSpec, workload_section
from simserve.sweep import METRICS

DESCENT = 4 / 3      # the rate search steps down by about this factor while probes fail (plan.search)


@dataclass
class LayoutSearch:
    candidate: Candidate
    search: RateSearch
    config: dict
    slo: dict
    keys: dict = field(default_factory=dict)      # grid index -> probes.csv key of its latest probe

    def probe_config(self, k: int) -> dict:
        cfg = json.loads(json.dumps(self.config))
        cfg["workload"]["arrivals"]["rate"] = self.search.grid.rate(k)
        return cfg

    def next_probe(self) -> tuple[int, dict, dict | None, str] | None:
        """(grid index, config, the SLO its run may stop at, key), None when the search is done."""
        k = self.search.propose()
        if k is None:
            return None
        config = self.probe_config(k)
        return k, config, self.slo, probe_key(config, self.slo)

    def record(self, k: int, key: str, row: dict) -> None:
        self.keys[k] = key
        self.search.record(k, row, self.slo)


@dataclass
class PlanResult:
    table: pd.DataFrame
    probes: pd.DataFrame
    best: dict
    knees: list
    info: dict


def workload_lengths(workload: dict, model: str, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(ISL, OSL, native rate in req/s) of the plan's workload for one model (its context limit)."""
    import warnings

    from simserve.workload import build_workload
    from simserve.workload.config import WorkloadConfig
    from pydantic import ValidationError
    from simserve.config import format_validation_error

    arrivals = dict(workload["arrivals"])
    if arrivals["process"] != "trace":
        arrivals.setdefault("rate", 1.0)
    try:
        cfg = WorkloadConfig.model_validate({**workload, "arrivals": arrivals})
    except ValidationError as exc:
        raise ConfigError("plan workload: " + format_validation_error(exc, WorkloadConfig).removeprefix("config: ")) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        work = build_workload(cfg, get_model(model).max_context, np.random.default_rng(seed))
    span = float(work.arrival_s[-1] - work.arrival_s[0]) if len(work.arrival_s) > 1 else 0.0
    rate = len(work.arrival_s) / span if span > 0 else 1.0
    return np.asarray(work.isl), np.asarray(work.osl), rate


def _prices(spec: PlanSpec) -> dict[str, float | None]:
    out = {}
    for hw in spec.hardware:
        out[get_hardware(hw).name] = get_hardware(hw).price_per_hour
    for name, price in spec.prices.items():
        out[get_hardware(name).name] = price
    return out


def _check_configs(searches: list[LayoutSearch]) -> None:
    """Load one probe config per model and GPU type, so a bad base key fails before anything runs."""
    from simserve.config import load_config

    seen = set()
    for s in searches:
        key = (s.candidate.layout.model, s.candidate.layout.hardware)
        if key not in seen:
            seen.add(key)
            load_config(s.probe_config(0))


def prepare(spec: PlanSpec) -> tuple[list[Candidate], list[LayoutSearch], RateGrid]:
    workload = workload_section(spec)
    lengths, native = {}, {}
    for m in spec.models:
        name = get_model(m).name
        isl, osl, rate = workload_lengths(workload, m, spec.seed)
        lengths[name], native[name] = (isl, osl), workload["arrivals"].get("rate") or rate
    grid = RateGrid(spec.rates.min_rate, spec.rates.step, spec.rates.max_rate)
    if grid.top < 1:
        raise ConfigError("plan: rates.max_rate must be above rates.min_rate x (1 + step)")
    cands = candidates(spec, spec.base, workload, lengths)
    jump, down = grid.steps_for(spec.rates.jump), grid.steps_for(DESCENT)
    searches = []
    for c in cands:
        if c.status != "search":
            continue
        lay = c.layout
        start = c.start_rate or native[lay.model] * lay.num_gpus / 8    # no closed form: the trace's rate per 8 GPUs
        config = lay.config(spec.base, workload, spec.slo, spec.seed, spec.fidelity)
        searches.append(LayoutSearch(c, RateSearch(grid, grid.index(start), jump, down), config, dict(spec.slo)))
    # the costliest searches first, so that the last probes running are short ones (longest
    # processing time first): a probe's CPU grows with the pipeline depth and with the trace's
    # span at the rate (1 / rate). Only the order probes run in, never the answer.
    def cost(s):
        lay = s.candidate.layout
        return -lay.pp / s.search.grid.rate(s.search.start), lay.model, lay.hardware, lay.name
    searches.sort(key=cost)
    _check_configs(searches)
    return cands, searches, grid


def _row(searches, i, k, key, config, outcome) -> dict:
    s = searches[i]
    lay = s.candidate.layout
    over = slo_violations(outcome, s.slo) if outcome.get("status") == "ok" else {}
    row = {"key": key, "model": lay.model, "hardware": lay.hardware, "layout": lay.name,
           "tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "ep": lay.ep, "chunk_size": lay.chunk_size,
           "max_batch_size": lay.max_batch_size, "rate_index": k, "rate": config["workload"]["arrivals"]["rate"],
           "meets_slo": outcome.get("status") == "ok" and not over,
           "violations": ";".join(f"{m}{'>=' if stopped(outcome) else '='}{v:.4g}>{lim:g}"    # >=: a lower bound
                                  for m, (v, lim) in over.items()),
           "status": outcome.get("status"), "error": outcome.get("error", "")}
    row.update({m: outcome.get(m) for m in METRICS})
    row["cpu_s"] = outcome.get("cpu_s")
    row["stopped_s"] = outcome.get("stopped_s")
    return row


def run_plan(spec: PlanSpec, out_dir: str | Path, workers: int | None = None, ray_address: str | None = None,
             show_progress: bool | None = None, log=None, figures: bool = True) -> PlanResult:
    from simserve.plan.progress import PlanProgress

    start = time.perf_counter()
    out = Path(out_dir)
    cands, searches, grid = prepare(spec)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {workers})")
    store = ProbeStore(out / "probes.csv")
    pool = RayPool(ray_address, workers) if ray_address else LocalPool(workers or os.cpu_count() or 1)
    bar = PlanProgress(len(searches), len(cands) - len(searches), show_progress, log)
    try:
        with bar:
            for wave in waves(searches):
                if spec.bound:
                    set_floors(wave, incumbents(searches, store))
                drive(wave, pool, store, lambda i, k, key, c, o, w=wave: _row(w, i, k, key, c, o),
                      on_probe=lambda i, row, cached, w=wave: bar.probe(w[i], row, cached))
    finally:
        pool.close()
        store.close()
    return finish(spec, out, cands, searches, store, time.perf_counter() - start, figures)


def waves(searches: list[LayoutSearch]) -> list[list[LayoutSearch]]:
    """The searches grouped by pipeline depth, shallowest first (branch and bound, README): a wave
    runs once every shallower one is done, bounded by their best answers only, so which probes run
    depends on the space and the outcomes, never on timing or worker count. Shallow layouts first:
    their probes are the cheapest, and deep pipelines (the costliest probes) are bounded the most."""
    depths = sorted({s.candidate.layout.pp for s in searches})
    return [[s for s in searches if s.candidate.layout.pp == d] for d in depths]


def incumbents(searches: list[LayoutSearch], store: ProbeStore) -> dict[str, float]:
    """model -> the best goodput per GPU of its finished searches that met the SLO."""
    best: dict[str, float] = {}
    for s in searches:
        if s.search.verdict in ("ok", "unbounded"):
            lay = s.candidate.layout
            per_gpu = at_rate(store.get(s.keys[s.search.lo]))[0] / lay.num_gpus
            best[lay.model] = max(best.get(lay.model, 0.0), per_gpu)
    return best


def set_floors(wave: list[LayoutSearch], best: dict[str, float]) -> None:
    """Each search's floor: the lowest grid index whose rate per GPU reaches its model's best
    goodput per GPU so far. Below it a layout's goodput per GPU (at most its rate per GPU) is
    strictly below that best, so it cannot rank first, nor tie the first. The best is taken 1e-9
    low: a goodput equal to its rate (every request good) can come out of report.at_rate an ulp
    above the grid's rate, and a layout that ties must not be bounded out."""
    for s in wave:
        lay, grid = s.candidate.layout, s.search.grid
        target = best.get(lay.model, 0.0) * (1 - 1e-9)
        if target <= 0:
            continue
        k = grid.index(target * lay.num_gpus)
        while k > 0 and grid.rate(k - 1) / lay.num_gpus >= target:
            k -= 1
        while grid.rate(k) / lay.num_gpus < target:
            k += 1
        s.search.floor, s.search.floor_per_gpu = k, target


def finish(spec, out: Path, cands, searches, store, wall_s: float, figures: bool = True) -> PlanResult:
    from simserve.export import atomic_write_bytes
    from simserve.plan.figures import write_plan_figures

    prices = _prices(spec)
    by_cand = {id(s.candidate): s for s in searches}
    rows = []
    for c in cands:
        s = by_cand.get(id(c))
        probes = {}
        if s is not None:
            probes = {k: store.get(s.keys[k]) for k in s.search.ok}
        rows.append(report.layout_row(c, s.search if s else None, probes, prices.get(c.layout.hardware)))
    table = report.rank(pd.DataFrame(rows))
    knee_rows = report.knees(table)
    best = report.best_layouts(table)
    info = {"spec": spec.model_dump(), "best": best, "knees": knee_rows, "prices_per_gpu_hour": prices,
            "layouts": len(cands), "pruned": len(cands) - len(searches),
            "probes_simulated": sum(len(s.search.ok) for s in searches) - store.reused,
            "probes_reused": store.reused, "wall_time_s": wall_s,
            "probe_cpu_s": float(sum(float(r.get("cpu_s") or 0) for r in store.rows.values()))}
    atomic_write_bytes(out / "plan.csv", table.to_csv(index=False).encode())
    atomic_write_bytes(out / "plan.json", json.dumps(info, indent=2, default=_json).encode())
    probes = pd.read_csv(out / "probes.csv")
    try:
        if figures:
            write_plan_figures(out)
    except (SimserveError, ValueError, KeyError) as exc:      # a figure never costs the answer
        info["figure_error"] = str(exc)
    return PlanResult(table, probes, best, knee_rows, info)


def _json(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if np.isnan(value) else float(value)
    if value is pd.NA:
        return None
    return str(value)
