"""The plan's answer: one row per layout (plan.csv), ranked, with cost, and the scaling knee.

Definitions (per model: layouts of different models are not alternatives to each other):
- rate: the highest grid rate whose probe meets the SLO (the search's verdict); its probe gives
  every other column;
- goodput_per_gpu: requests/s meeting the per-request SLO at that offered rate (`at_rate`), / the
  layout's GPUs; output_tokens_per_s_per_gpu likewise;
- cost_per_m_output_tokens: USD per GPU-hour x GPUs / (output tokens per second x 3600) x 1e6;
- steady_state: the workload's arrivals at that rate last at least STEADY_SPANS x the p99 E2E;
  when not, the trace is too short for the rate to be a sustained one (the answer describes a
  burst of that many requests), and the table says so;
- binding_value: the binding metric's value at the lowest failing probe (infeasible layouts) or at
  the next grid rate; a lower bound when that probe was stopped once it failed (simserve.plan.stop);
- status `bounded` (branch and bound, simserve.plan.run.waves): the layout failed at a rate whose
  grid step below, per GPU, is under the best goodput per GPU of shallower layouts: it cannot rank
  first; its rate is not searched (--exhaustive searches it);
- rank: by goodput per GPU (ties: lower cost, fewer GPUs per replica, name); cost_rank by cost;
- the scaling knee (seed 002): for each GPU type, the replica size (GPUs per replica) with the
  best goodput per GPU among the sizes that meet the SLO: beyond it more GPUs per replica stop
  paying (their communication costs more than their share of compute and memory saves).
"""
from __future__ import annotations

import math
import sys

import pandas as pd

PLAN_COLUMNS = ["model", "hardware", "layout", "tp", "pp", "dp", "ep", "chunk_size", "max_batch_size",
                "num_gpus", "replica_gpus", "status", "rank", "cost_rank", "rate", "next_rate",
                "goodput_requests_per_s", "goodput_per_gpu", "output_tokens_per_s_per_gpu",
                "ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "price_per_gpu_hour", "cost_per_m_output_tokens",
                "binding_metric", "binding_value", "binding_limit", "arrival_span_s", "steady_state", "reason",
                "probes"]
STEADY_SPANS = 10     # arrivals must last 10 x the p99 E2E for the offered rate to be a sustained one


def _fmt(value: float, limit: float, metric: str) -> str:
    return f"{value:.3g}" if metric == "rejected" else f"{value:.3g} s"


def layout_row(cand, search, probes: dict[int, dict], price: float | None) -> dict:
    lay = cand.layout
    row = {"model": lay.model, "hardware": lay.hardware, "layout": lay.name, "tp": lay.tp, "pp": lay.pp,
           "dp": lay.dp, "ep": lay.ep, "chunk_size": lay.chunk_size, "max_batch_size": lay.max_batch_size,
           "num_gpus": lay.num_gpus, "replica_gpus": lay.replica_gpus, "price_per_gpu_hour": price,
           "probes": len(probes), "reason": cand.reason}
    if search is None:                                    # pruned before simulating
        row.update(status="infeasible", binding_metric=cand.binding)
        if cand.binding in cand.bounds:
            row.update(binding_value=cand.bounds[cand.binding])
        return row
    if search.verdict == "bounded":
        return row | bounded_row(search, lay.num_gpus)
    if search.over and (search.lo is None):
        metric, value, limit, k = search.binding()
        if metric == "error":
            err = probes[k].get("error", "")
            return row | {"status": "error", "reason": err}
        return row | {"status": "infeasible", "binding_metric": metric, "binding_value": value, "binding_limit": limit,
                      "reason": f"{metric} {_fmt(value, limit, metric)} > {limit:g} at {search.grid.rate(k):.4g} req/s, "
                                f"the lowest rate probed"}
    best = probes[search.lo]
    good_rps, tokens_ps = at_rate(best)
    row.update(status="ok" if search.verdict == "ok" else search.verdict, rate=best["rate"],
               goodput_requests_per_s=good_rps, goodput_per_gpu=good_rps / lay.num_gpus,
               output_tokens_per_s_per_gpu=tokens_ps / lay.num_gpus,
               ttft_p99_s=best["ttft_p99_s"], tpot_p99_s=best["tpot_p99_s"], e2e_p99_s=best["e2e_p99_s"])
    span = float(best["num_requests"]) / best["rate"]
    row.update(arrival_span_s=span, steady_state=bool(span >= STEADY_SPANS * best["e2e_p99_s"]))
    if price is not None and tokens_ps > 0:
        row["cost_per_m_output_tokens"] = price * lay.num_gpus / (tokens_ps * 3600) * 1e6
    if search.hi is not None:
        metric, value, limit, k = _binding_at(search, search.hi)
        row.update(next_rate=search.grid.rate(search.hi), binding_metric=metric, binding_value=value,
                   binding_limit=limit)
    return row


def bounded_row(search, gpus: int) -> dict:
    """A layout the branch and bound left unsearched: its lowest failing rate bounds its goodput."""
    grid = search.grid
    most = grid.rate(search.hi - 1) / gpus if search.hi is not None and search.hi > 0 else 0.0
    row = {"status": "bounded", "reason": f"bounded out: at most {most:.3g} req/s per GPU, below the best "
                                          f"of shallower layouts ({search.floor_per_gpu:.3g})"}
    if search.hi is not None:
        metric, value, limit, k = _binding_at(search, search.hi)
        row.update(next_rate=grid.rate(k), binding_metric=metric, binding_value=value, binding_limit=limit)
        row["reason"] += f"; {metric} {_fmt(value, limit, metric)} > {limit:g} at {grid.rate(k):.4g} req/s"
    else:
        row["reason"] = (f"bounded out: the grid's top rate, {grid.rate(grid.top) / gpus:.3g} req/s per GPU, "
                         f"is below the best of shallower layouts ({search.floor_per_gpu:.3g})")
    return row


def at_rate(probe: dict) -> tuple[float, float]:
    """(goodput req/s, output tokens/s) at the probe's offered rate: the rate x the fraction of
    requests that completed within the per-request SLO, and x their output tokens per request.
    The summary's own throughputs divide by first arrival to last finish, which for a short trace
    at a high rate is mostly the drain after the last arrival; at the offered rate they are what a
    replica set sustains, provided the arrivals last long against the latencies (steady_state)."""
    n, done = float(probe["num_requests"] or 0), float(probe["num_completed"] or 0)
    rps = float(probe["throughput_requests_per_s"] or 0)
    if not n or not rps:
        return 0.0, 0.0
    # both summary rates divide by the same span, so their ratio is the count of requests within
    # the SLO over those completed: recovered as the integer it is, so that two layouts serving
    # the same requests within the SLO tie exactly (their spans differ in the last bits)
    good = round(float(probe["goodput_requests_per_s"]) / rps * done)
    return (probe["rate"] * good / n,
            probe["rate"] * done / n * float(probe["throughput_output_tokens_per_s"]) / rps)


def _binding_at(search, k):
    from simserve.plan.search import worst
    metric, _ = worst(search.over[k])
    value, limit = search.over[k][metric]
    return metric, value, limit, k


def rank(table: pd.DataFrame) -> pd.DataFrame:
    table = table.reindex(columns=PLAN_COLUMNS)
    meets = table.status.isin(["ok", "unbounded"])
    table["rank"] = pd.NA
    table["cost_rank"] = pd.NA
    for _, idx in table[meets].groupby("model").groups.items():
        sub = table.loc[idx].assign(_cost=table.loc[idx, "cost_per_m_output_tokens"].fillna(math.inf))
        order = sub.sort_values(["goodput_per_gpu", "_cost", "replica_gpus", "layout"],
                                ascending=[False, True, True, True], kind="stable").index
        table.loc[order, "rank"] = range(1, len(order) + 1)
        costed = sub[sub._cost < math.inf].sort_values(["_cost", "goodput_per_gpu", "layout"],
                                                       ascending=[True, False, True], kind="stable").index
        table.loc[costed, "cost_rank"] = range(1, len(costed) + 1)
    key = table["rank"].fillna(10**9).astype(int)
    return table.assign(_k=key).sort_values(["model", "_k", "hardware", "layout"], kind="stable").drop(columns="_k")


def best_layouts(table: pd.DataFrame) -> dict[str, dict]:
    """model -> the rank-1 row."""
    top = table[table["rank"] == 1]
    return {r["model"]: {k: _clean(v) for k, v in r.items()} for r in top.to_dict("records")}


def _clean(value):
    """JSON-safe: NaN and pandas NA become None, numpy scalars plain Python."""
    if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def knees(table: pd.DataFrame) -> list[dict]:
    """Per (model, hardware): best goodput per GPU by replica size, and the knee."""
    out = []
    ok = table[table.status.isin(["ok", "unbounded"])]
    for (model, hw), sub in ok.groupby(["model", "hardware"], sort=True):
        by_size = sub.groupby("replica_gpus").goodput_per_gpu.max().sort_index()
        knee = int(by_size.idxmax())
        best = sub[sub.replica_gpus == knee].sort_values("goodput_per_gpu", ascending=False).iloc[0]
        larger = by_size[by_size.index > knee]
        text = (f"{model} on {hw}: more GPUs per replica stop paying beyond {knee} "
                f"({best['layout']}: {by_size[knee]:.3g} req/s per GPU")
        if len(larger):
            text += f"; {int(larger.index[0])} GPUs per replica: {larger.iloc[0]:.3g}"
        else:
            text += "; no larger replica size was searched"
        out.append({"model": model, "hardware": hw, "knee_replica_gpus": knee, "layout": best["layout"],
                    "goodput_per_gpu_by_replica_gpus": {int(k): float(v) for k, v in by_size.items()},
                    "text": text + ")"})
    return out


def print_table(table: pd.DataFrame, knee_rows: list[dict], out_dir, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 200)
    for model, sub in table.groupby("model", sort=False):
        t = Table(title=f"{model}: layouts by goodput per GPU at the SLO", show_edge=False)
        for col in ("rank", "hardware", "layout", "GPUs", "rate req/s", "goodput/GPU", "tok/s/GPU",
                    "TTFT p99", "TPOT p99", "$/M tok", "verdict"):
            t.add_column(col, justify="left" if col in ("hardware", "layout", "verdict") else "right",
                         no_wrap=col != "verdict")
        for r in sub.to_dict("records"):
            ok = r["status"] in ("ok", "unbounded")
            num = (lambda v, f="{:.3g}": "" if v is None or (isinstance(v, float) and math.isnan(v)) else f.format(v))
            note = (f"next step fails {r['binding_metric']}" if ok and isinstance(r["binding_metric"], str)
                    else r["status"] if ok else f"{r['status']}: {r['reason']}")
            t.add_row(num(r["rank"], "{}") if ok else "-", r["hardware"], r["layout"], str(r["num_gpus"]),
                      num(r["rate"]), num(r["goodput_per_gpu"]), num(r["output_tokens_per_s_per_gpu"], "{:.0f}"),
                      num(r["ttft_p99_s"]), num(r["tpot_p99_s"]), num(r["cost_per_m_output_tokens"], "{:.3f}"), note)
        console.print(t)
    short = table[table.steady_state.astype(str) == "False"]
    if len(short):
        console.print(f"warning: {len(short)} layout(s) meet the SLO at rates where the workload's arrivals last under "
                      f"{STEADY_SPANS}x their p99 E2E (e.g. {short.iloc[0]['layout']}: "
                      f"{short.iloc[0]['arrival_span_s']:.3g} s of arrivals): a burst, not a sustained rate; "
                      f"use more requests (--requests) or a longer trace")
    for k in knee_rows:
        console.print(f"scaling knee: {k['text']}")
    console.print(f"-> {out_dir}/plan.csv, probes.csv, plan.json, pareto.png")
