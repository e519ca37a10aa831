"""The plan's figure: p99 latency against throughput per GPU for every probe run to its end, the
Pareto front of the probes that meet the SLO, the SLO limit, and the chosen layout's point marked
(`pareto.png`). Throughput is output tokens per second at the probe's offered rate
(simserve.plan.report.at_rate).

One row of panels per model, one panel per latency metric of the SLO (p99 preferred). A probe is
on the front when no other probe meeting the SLO has both higher throughput per GPU and lower
latency in that panel's metric. Drawn from plan.csv and probes.csv alone, so `simserve plot DIR`
redraws it from a plan folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

LATENCY = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "E2E"}


def _metrics(slo: dict) -> list[str]:
    out = []
    for m in LATENCY:
        if f"{m}_p99" in slo or f"{m}_p50" in slo:
            out.append(m)
    return out or ["ttft", "tpot"]


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated (higher x and lower y), sorted by x."""
    order = np.lexsort((y, -x))             # x descending, then y ascending
    front, best_y = [], np.inf
    for i in order:
        if y[i] < best_y:
            front.append(i)
            best_y = y[i]
    return np.array(sorted(front, key=lambda i: x[i]), dtype=int)


def pareto_figure(plan: pd.DataFrame, probes: pd.DataFrame, slo: dict) -> Figure:
    models = list(dict.fromkeys(plan.model))
    metrics = _metrics(slo)
    fig = Figure(figsize=(5.2 * len(metrics), 4.2 * max(1, len(models))), layout="constrained")
    axes = np.atleast_2d(fig.subplots(max(1, len(models)), len(metrics), squeeze=False))
    for r, model in enumerate(models):
        # a probe stopped once it failed (simserve.plan.stop) measured no throughput: not drawn
        sub = probes[(probes.model == model) & (probes.status == "ok") & probes.stopped_s.isna()].copy()
        # output tokens/s at the offered rate (simserve.plan.report.at_rate), per GPU
        sub["x"] = (sub.rate * sub.num_completed / sub.num_requests * sub.throughput_output_tokens_per_s
                    / sub.throughput_requests_per_s / sub.num_gpus)
        best = plan[(plan.model == model) & (plan["rank"] == 1)]
        names = list(dict.fromkeys(sub.hardware + " " + sub.layout))
        colors = _colors(len(names))
        for c, metric in enumerate(metrics):
            ax = axes[r, c]
            col = f"{metric}_p99_s"
            for color, name in zip(colors, names):
                pts = sub[(sub.hardware + " " + sub.layout) == name].sort_values("x")
                ax.plot(pts.x, pts[col], "o-", color=color, ms=3, lw=0.8, alpha=0.7, label=name)
            good = sub[sub.meets_slo.astype(str) == "True"]
            if len(good):
                idx = pareto_front(good.x.to_numpy(float), good[col].to_numpy(float))
                front = good.iloc[idx]
                ax.step(front.x, front[col], where="pre", color="black", lw=1.6, label="Pareto front (meets SLO)")
            limit = slo.get(f"{metric}_p99", slo.get(f"{metric}_p50"))
            if limit is not None and np.isfinite(limit):
                ax.axhline(limit, color="#c92a2a", ls="--", lw=1.2, label=f"SLO {limit:g} s")
            if len(best):
                b = best.iloc[0]
                ax.plot([b.output_tokens_per_s_per_gpu], [b[col]], "*", color="gold", mec="black", ms=16,
                        zorder=5, label=f"chosen: {b.hardware} {b.layout}")
            ax.set_xlabel("output tokens/s per GPU")
            ax.set_ylabel(f"p99 {LATENCY[metric]} (s)")
            ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
            ax.set_title(f"{model}: p99 {LATENCY[metric]}", fontsize=10)
            if c == len(metrics) - 1:
                ax.legend(fontsize=6, loc="upper left", ncol=1 + len(names) // 12)
    return fig


def _colors(n: int) -> list:
    from matplotlib import colormaps
    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def write_plan_figures(plan_dir: str | Path, out_dir: str | Path | None = None, fmt: str = "png") -> dict[str, Path]:
    from simserve.export import atomic_write_bytes
    from simserve.plots import figure_bytes

    plan_dir = Path(plan_dir)
    plan = pd.read_csv(plan_dir / "plan.csv")
    probes = pd.read_csv(plan_dir / "probes.csv")
    info = json.loads((plan_dir / "plan.json").read_text()) if (plan_dir / "plan.json").exists() else {}
    slo = (info.get("spec") or {}).get("slo") or {"ttft_p99": None, "tpot_p99": None}
    slo = {k: v for k, v in slo.items() if v is not None} or {"ttft_p99": np.nan, "tpot_p99": np.nan}  # no plan.json: no limit lines
    path = Path(out_dir or plan_dir) / f"pareto.{fmt}"
    atomic_write_bytes(path, figure_bytes(pareto_figure(plan, probes, slo), fmt))
    return {f"pareto ({plan_dir})": path}
