"""Figures of a run (or several side by side) with matplotlib, headless.

Every figure is drawn on a `matplotlib.figure.Figure` directly (no pyplot, no global backend
state; PNG and SVG go through Agg), from a `RunData`: the summary, the per-request table, the
timeline and the config of one run, taken from a `Result` in memory or read back from a results
folder (`summary.json`, `requests.csv`, `timeline.csv.gz`, `config.yaml`).

What each figure shows:

- `latency_cdfs`: empirical CDFs over completed requests of TTFT, TPOT (per request, vLLM's
  definition), per-request *maximum* inter-token gap (requests.csv keeps only the max; the
  summary's ITL percentiles, taken over every gap, are drawn as grey dotted lines for reference)
  and E2E. p50/p90/p99 are computed by `simserve.metrics.distribution`, the same code that fills
  summary.json, so the p99 line of TTFT, TPOT and E2E sits exactly at the summary's p99. The SLO
  (config `slo.ttft_s`, `slo.tpot_s`) is drawn in red where it applies.
- `latency_over_time`: requests binned by arrival time (by finish time when they all arrive at
  once); per bin p50 and p99 of TTFT and TPOT
  (the p99 of a bin with fewer than 100 requests is its maximum, give or take); beneath, the
  arrival rate per bin and the queue length (requests arrived but not yet admitted, from the
  per-request timestamps; preempted requests waiting again are not counted).
- `time_breakdown`: stacked bars, fractions of simulated time, for the whole cluster (summary
  `time_breakdown`) and for one GPU of each pipeline stage (summary `stages`, with compute and
  collectives split from the timeline when it is there).
- `kv_and_batch`: KV blocks in use (percent of the replica's blocks) and running requests, per
  replica, at the end of each iteration / decode run (max per bin when there are many rows).
- `sweep_figure`: p99 latency against throughput, one line per layout; best goodput per GPU.
"""
from __future__ import annotations

import gzip
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from simserve.errors import SimserveError
from simserve.metrics import distribution

FORMATS = ("png", "svg")
PCT_STYLE = {"p50": ("#2b8a3e", "--"), "p90": ("#e67700", "-."), "p99": ("#862e9c", ":")}
SLO_COLOR = "#d6336c"
KIND_COLORS = {"compute": "#4c6ef5", "allreduce": "#f59f00", "allgather": "#fab005", "reducescatter": "#ffd43b",
               "alltoall": "#12b886", "p2p": "#7950f2", "bubble": "#fa5252", "host": "#868e96", "swap": "#e64980",
               "busy": "#748ffc", "idle": "#dee2e6"}
KIND_LABELS = {"compute": "compute", "allreduce": "all-reduce", "allgather": "all-gather",
               "reducescatter": "reduce-scatter", "alltoall": "all-to-all", "p2p": "P2P",
               "bubble": "bubble", "host": "host (CPU)", "swap": "KV swap (PCIe)", "busy": "busy (compute + collectives)",
               "idle": "idle"}
# (summary key, requests column, axis label, SLO key)
LATENCIES = (("ttft", "ttft_s", "TTFT (s)", "ttft_s"), ("tpot", "tpot_s", "TPOT (s)", "tpot_s"),
             ("itl", "itl_max_s", "max inter-token latency per request (s)", None),
             ("e2e", "e2e_s", "E2E latency (s)", None))
MAX_POINTS = 20000      # longer time series are reduced to per-bin maxima before drawing


@dataclass
class RunData:
    """What the figures, the trace and the report need from one run."""
    summary: dict
    requests: pd.DataFrame
    timeline: pd.DataFrame | None = None
    config: dict = field(default_factory=dict)
    label: str = "run"

    @property
    def slo(self) -> dict:
        return dict(self.config.get("slo") or {})

    @property
    def completed(self) -> pd.DataFrame:
        return self.requests[self.requests.status == "completed"]

    @classmethod
    def from_result(cls, result, label: str = "run") -> "RunData":
        config = result.config.model_dump(mode="json") if hasattr(result.config, "model_dump") else dict(result.config or {})
        return cls(result.summary, result.requests, getattr(result, "timeline", None), config, label)

    @classmethod
    def from_dir(cls, path: str | Path, label: str | None = None) -> "RunData":
        import yaml
        path = Path(path)
        if not (path / "summary.json").is_file() or not (path / "requests.csv").is_file():
            raise SimserveError(f"{path}: not a results folder (needs summary.json and requests.csv)")
        try:
            summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise SimserveError(f"{path / 'summary.json'}: not a valid summary ({str(exc).splitlines()[0]})") from None
        requests = pd.read_csv(path / "requests.csv", keep_default_na=False,
                               na_values={c: ["", "nan", "NaN"] for c in
                                          ("scheduled_s", "first_token_s", "finish_s", "ttft_s", "tpot_s",
                                           "e2e_s", "queue_delay_s", "itl_max_s")})
        timeline = None
        if (path / "timeline.csv.gz").is_file():
            with gzip.open(path / "timeline.csv.gz", "rt") as f:
                timeline = pd.read_csv(f)
        config = {}
        if (path / "config.yaml").is_file():
            config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        return cls(summary, requests, timeline, config, label or path.resolve().name)


def as_runs(runs) -> list[RunData]:
    if isinstance(runs, RunData):
        return [runs]
    if hasattr(runs, "summary") and hasattr(runs, "requests"):
        return [RunData.from_result(runs)]
    return [r if isinstance(r, RunData) else RunData.from_result(r) for r in runs]


def _colors(n: int) -> list[str]:
    palette = ["#1c7ed6", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599", "#c2255c", "#5c940d"]
    return [palette[i % len(palette)] for i in range(n)]


def _use_log(values: np.ndarray) -> bool:
    pos = values[values > 0]
    return pos.size > 1 and pos.min() > 0 and pos.max() / pos.min() > 300


# -- latency CDFs ------------------------------------------------------------------------------
def latency_cdfs(runs) -> Figure:
    """2x2 CDFs (TTFT, TPOT, per-request max ITL, E2E); see the module docstring.

    Lines carry gids tests and users can find: `{metric}-{pct}` for a percentile of a single run
    (its x is the percentile), `{metric}-slo`, `{metric}-cdf-{i}` for run i's curve."""
    runs = as_runs(runs)
    single = len(runs) == 1
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    colors = _colors(len(runs))
    for ax, (key, column, xlabel, slo_key) in zip(axes, LATENCIES):
        all_values = []
        for i, run in enumerate(runs):
            values = np.sort(run.completed[column].to_numpy(dtype=float))
            values = values[~np.isnan(values)]
            all_values.append(values)
            if values.size == 0:
                continue
            y = np.arange(1, values.size + 1) / values.size
            (line,) = ax.step(np.concatenate(([values[0]], values)), np.concatenate(([0.0], y)), where="post",
                              color=colors[i] if not single else "#1c7ed6", lw=1.6,
                              label=run.label if not single else f"{values.size} requests")
            line.set_gid(f"{key}-cdf-{i}")
            pcts = distribution(values)
            if single:
                for name, (color, style) in PCT_STYLE.items():
                    vline = ax.axvline(pcts[name], color=color, ls=style, lw=1.3,
                                       label=f"{name} {_fmt_s(pcts[name])}")
                    vline.set_gid(f"{key}-{name}")
            else:
                (dot,) = ax.plot([pcts["p99"]], [0.99], "o", color=colors[i], ms=5)
                dot.set_gid(f"{key}-p99-{i}")
        if key == "itl":
            for i, run in enumerate(runs):
                gaps = run.summary.get("itl") or {}
                for name in ("p50", "p99"):
                    if gaps.get(name):
                        ref = ax.axvline(gaps[name], color="#868e96", ls=(0, (1, 2)), lw=1.0,
                                         label=f"every gap {name} {_fmt_s(gaps[name])} (summary)" if single else None)
                        ref.set_gid(f"itl-allgaps-{name}-{i}")
        values = np.concatenate(all_values) if all_values else np.array([])
        slo = runs[0].slo.get(slo_key) if slo_key else None
        if slo is not None and all(r.slo.get(slo_key) == slo for r in runs):
            if values.size and slo > 3 * values.max():
                # an SLO far beyond every sample would squash the curve against the left edge
                ax.text(0.98, 0.5, f"SLO {_fmt_s(slo)} (off scale) \u2192", color=SLO_COLOR, ha="right",
                        va="center", transform=ax.transAxes, fontsize=8, gid=f"{key}-slo-offscale")
            else:
                sline = ax.axvline(slo, color=SLO_COLOR, lw=2.0, label=f"SLO {_fmt_s(slo)}")
                sline.set_gid(f"{key}-slo")
        if values.size == 0:
            ax.text(0.5, 0.5, "no completed requests", ha="center", va="center", transform=ax.transAxes)
        elif _use_log(values):
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(_title(runs, "latency distributions (completed requests)"))
    return fig


def _fmt_s(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{seconds * 1e3:.3g} ms"


def _title(runs: list[RunData], what: str) -> str:
    if len(runs) > 1:
        return f"{what}: " + ", ".join(r.label for r in runs)
    s = runs[0].summary
    layout = " ".join(f"{k}{v}" for k, v in (s.get("layout") or {}).items() if v != 1) or "1 GPU"
    return f"{what}\n{s.get('model', '')} on {s.get('hardware', '')}, {layout}"


# -- latency over time -------------------------------------------------------------------------
def _bins(runs: list[RunData], num_bins: int) -> tuple[np.ndarray, str]:
    """Equal bins from the first arrival to the last finish, and the request time latencies are
    grouped by: arrival, or finish when (nearly) all requests arrive at once (a batch), since
    grouping by arrival would then put every request in one bin."""
    start = min(float(r.requests.arrival_s.min()) for r in runs)
    last_arrival = max(float(r.requests.arrival_s.max()) for r in runs)
    end = max(last_arrival, max(float(np.nanmax(r.requests.finish_s.to_numpy(dtype=float), initial=start))
                                for r in runs))
    width = max((end - start) / num_bins, 1e-6)
    by = "arrival_s" if last_arrival - start > 0.05 * (end - start) else "finish_s"
    return start + width * np.arange(num_bins + 1), by


def binned_percentiles(arrival_s: np.ndarray, values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, ...]:
    """(bin centres, p50, p99, count) of `values` grouped by arrival bin; NaN where a bin is empty."""
    idx = np.clip(np.searchsorted(edges, arrival_s, side="right") - 1, 0, len(edges) - 2)
    n = len(edges) - 1
    p50 = np.full(n, np.nan)
    p99 = np.full(n, np.nan)
    count = np.zeros(n, dtype=int)
    ok = ~np.isnan(values)
    order = np.argsort(idx[ok], kind="stable")
    sorted_idx, sorted_vals = idx[ok][order], values[ok][order]
    bounds = np.searchsorted(sorted_idx, np.arange(n + 1))
    for b in range(n):
        chunk = sorted_vals[bounds[b]:bounds[b + 1]]
        if chunk.size:
            p50[b], p99[b] = np.percentile(np.sort(chunk), [50, 99])
            count[b] = chunk.size
    return (edges[:-1] + edges[1:]) / 2, p50, p99, count


def queue_length(requests: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(times, requests waiting) as a step function: +1 at arrival, -1 at first admission."""
    accepted = requests[requests.status != "rejected"]
    arrivals = accepted.arrival_s.to_numpy(dtype=float)
    admitted = accepted.scheduled_s.to_numpy(dtype=float)
    admitted = admitted[~np.isnan(admitted)]
    times = np.concatenate((arrivals, admitted))
    delta = np.concatenate((np.ones(arrivals.size), -np.ones(admitted.size)))
    order = np.lexsort((-delta, times))         # at equal times, the arrival (+1) first
    return times[order], np.cumsum(delta[order])


def _envelope(t: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most max_points points: the maximum of y in equal time bins (keeps peaks visible)."""
    if t.size <= max_points:
        return t, y
    edges = np.linspace(t[0], t[-1], max_points // 2 + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, edges.size - 2)
    out = np.full(edges.size - 1, np.nan)
    np.fmax.at(out, idx, y)
    keep = ~np.isnan(out)
    return edges[:-1][keep], out[keep]


def latency_over_time(runs, num_bins: int | None = None) -> Figure:
    runs = as_runs(runs)
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    ax_ttft, ax_tpot, ax_rate = fig.subplots(3, 1, sharex=True, height_ratios=[2, 2, 1.4])
    ax_queue = ax_rate.twinx()
    have = [r for r in runs if len(r.requests)]
    if not have:
        ax_ttft.text(0.5, 0.5, "no requests", ha="center", va="center", transform=ax_ttft.transAxes)
        return fig
    if num_bins is None:     # about 10 requests a bin, 5 to 60 bins
        num_bins = int(np.clip(max(len(r.requests) for r in have) // 10, 5, 60))
    edges, by = _bins(have, num_bins)
    width = edges[1] - edges[0]
    colors = _colors(len(runs))
    single = len(runs) == 1
    for i, run in enumerate(have):
        done = run.completed
        prefix = "" if single else f"{run.label} "
        for ax, column in ((ax_ttft, "ttft_s"), (ax_tpot, "tpot_s")):
            centres, p50, p99, _ = binned_percentiles(done[by].to_numpy(dtype=float),
                                                      done[column].to_numpy(dtype=float), edges)
            ax.plot(centres, p50, ".-", ms=3, color=colors[i], lw=1.4, label=f"{prefix}p50")
            ax.plot(centres, p99, ".--", ms=3, color=colors[i] if not single else "#862e9c", lw=1.4, label=f"{prefix}p99")
        arrivals = run.requests.arrival_s.to_numpy(dtype=float)
        counts, _ = np.histogram(arrivals, bins=edges)
        ax_rate.stairs(counts / width, edges, color=colors[i], lw=1.2, label=f"{prefix}arrivals")
        qt, qn = queue_length(run.requests)
        qt, qn = _envelope(qt, qn, max_points=800)     # per-bin peaks: readable at any run length
        ax_queue.step(qt, qn, where="post", color=colors[i], lw=1.0, ls=":", alpha=0.9, label=f"{prefix}queue")
    for ax, slo_key, label in ((ax_ttft, "ttft_s", "TTFT (s)"), (ax_tpot, "tpot_s", "TPOT (s)")):
        slo = runs[0].slo.get(slo_key)
        top = max((float(np.nanmax(r.completed[slo_key].to_numpy(dtype=float), initial=0.0)) for r in have), default=0.0)
        if slo is not None and slo <= 3 * top:
            ax.axhline(slo, color=SLO_COLOR, lw=1.5, label="SLO")
        elif slo is not None:
            ax.text(0.98, 0.92, f"SLO {_fmt_s(slo)} (off scale) \u2191", color=SLO_COLOR, ha="right", va="top",
                    transform=ax.transAxes, fontsize=8)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
    ax_rate.set_ylabel("arrivals (req/s)")
    ax_rate.set_ylim(bottom=0)
    ax_queue.set_ylabel("queued requests")
    ax_queue.set_ylim(bottom=0)
    ax_queue.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_rate.set_xlabel(f"simulated time (s); latencies grouped by {by.replace('_s', '')} time in {width:.3g} s bins")
    ax_rate.grid(True, alpha=0.3)
    handles = ax_rate.get_legend_handles_labels()[0] + ax_queue.get_legend_handles_labels()[0]
    ax_rate.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper left", ncol=2)
    fig.suptitle(_title(runs, "latency over time"))
    return fig


# -- where the time went -----------------------------------------------------------------------
BAR_KINDS = ("compute", "allreduce", "allgather", "reducescatter", "alltoall", "p2p", "bubble", "host", "swap", "busy",
             "idle")


def breakdown_rows(run: RunData) -> list[tuple[str, dict[str, float]]]:
    """(label, {kind: fraction of simulated time}) for the cluster and for one GPU of each stage."""
    s = run.summary
    rows = [("all GPUs", {k: float(v) for k, v in (s.get("time_breakdown") or {}).items()})]
    sim = float(s.get("sim_time_s") or 0.0)
    split = {}
    tl = run.timeline
    if tl is not None and len(tl):
        work = tl[tl.kind != "p2p"].groupby(["replica", "stage"])[["compute_s", "allreduce_s", "allgather_s"]].sum()
        split = {key: row for key, row in zip(work.index, work.to_dict("records"))}
    for st in s.get("stages") or []:
        if sim <= 0:
            break
        gpus = st.get("gpus") or []
        label = f"r{st['replica']} s{st['stage']} GPU{'s' if len(gpus) > 1 else ''} {_gpu_list(gpus)}"
        frac = {}
        key = (st["replica"], st["stage"])
        if key in split:
            frac.update({"compute": split[key]["compute_s"] / sim, "allreduce": split[key]["allreduce_s"] / sim,
                         "allgather": split[key]["allgather_s"] / sim})
        else:
            frac["busy"] = st["busy_s"] / sim
        frac["p2p"] = st.get("p2p_s", 0.0) / sim
        frac["bubble"] = st.get("waiting_for_input_s", 0.0) / sim
        frac["host"] = st.get("waiting_for_host_s", 0.0) / sim      # CPU time and KV swaps
        frac["idle"] = st.get("idle_s", 0.0) / sim
        rows.append((label, frac))
    return rows


def _gpu_list(gpus) -> str:
    gpus = list(gpus)
    if len(gpus) > 2 and gpus == list(range(gpus[0], gpus[-1] + 1)):
        return f"{gpus[0]}-{gpus[-1]}"
    return ",".join(str(g) for g in gpus)


def time_breakdown(runs, max_bars: int = 48) -> Figure:
    runs = as_runs(runs)
    rows = []
    for run in runs:
        for label, frac in breakdown_rows(run):
            rows.append((label if len(runs) == 1 else f"{run.label}: {label}", frac))
    dropped = max(0, len(rows) - max_bars)
    rows = rows[:max_bars]
    fig = Figure(figsize=(11, 2.4 + 0.4 * len(rows)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for kind in BAR_KINDS:
        widths = np.array([frac.get(kind, 0.0) for _, frac in rows])
        if not widths.any():
            continue
        bars = ax.barh(y, widths, left=left, color=KIND_COLORS[kind], label=KIND_LABELS[kind], height=0.7)
        for bar in bars:
            bar.set_gid(f"breakdown-{kind}")
        left += widths
    ax.set_yticks(y, [label for label, _ in rows], fontsize=8)
    ax.set_xlim(0, max(1.0, float(left.max()) if len(left) else 1.0))
    ax.set_xlabel("fraction of simulated time" + (f" ({dropped} more stages not shown)" if dropped else ""))
    ax.grid(True, axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=8, ncol=len(handles), loc="outside lower center")
    fig.suptitle(_title(runs, "where the time went (stages: one GPU of the stage)"))
    return fig


# -- KV cache and batch ------------------------------------------------------------------------
def kv_and_batch(runs) -> Figure | None:
    """None when no run has a timeline."""
    runs = [r for r in as_runs(runs) if r.timeline is not None and len(r.timeline)]
    if not runs:
        return None
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    ax_kv, ax_run = fig.subplots(2, 1, sharex=True)
    colors = _colors(sum(int(r.timeline.replica.nunique()) for r in runs))
    c = 0
    for run in runs:
        work = run.timeline[run.timeline.kind != "p2p"]
        replicas = sorted(work.replica.unique())
        for rep in replicas:
            rows = work[work.replica == rep].sort_values("end_s", kind="stable")
            t = rows.end_s.to_numpy(dtype=float)
            kv = 100.0 * rows.kv_used_blocks.to_numpy(dtype=float) / rows.kv_total_blocks.to_numpy(dtype=float)
            running = rows.running.to_numpy(dtype=float)
            label = (f"{run.label} " if len(runs) > 1 else "") + (f"replica {rep}" if len(replicas) > 1 or len(runs) == 1 else "")
            legend = label.strip() if len(replicas) <= 8 or rep == replicas[0] else None
            ax_kv.step(*_envelope(t, kv), where="post", color=colors[c], lw=1.1, label=legend)
            ax_run.step(*_envelope(t, running), where="post", color=colors[c], lw=1.1, label=legend)
            c += 1
    ax_kv.set_ylabel("KV blocks in use (%)")
    ax_kv.set_ylim(0, min(100.0, max(1.0, ax_kv.get_ylim()[1])))
    ax_run.set_ylabel("running requests")
    ax_run.set_ylim(bottom=0)
    ax_run.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_run.set_xlabel("simulated time (s)")
    for ax in (ax_kv, ax_run):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(_title(runs, "KV cache and batch"))
    return fig


# -- sweeps ------------------------------------------------------------------------------------
def sweep_figure(df: pd.DataFrame, *, layout: str = "layout", throughput: str = "throughput",
                 latency: str = "p99_latency", goodput: str = "goodput", num_gpus: str = "num_gpus",
                 latency_label: str = "p99 latency (s)", throughput_label: str = "throughput",
                 slo_s: float | None = None) -> Figure:
    """Latency-throughput curves, one line per layout (points sorted by throughput), and each
    layout's best goodput per GPU. Column names are arguments so any sweep table fits."""
    missing = [c for c in (layout, throughput, latency, goodput, num_gpus) if c not in df.columns]
    if missing:
        raise SimserveError(f"sweep table lacks column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))})")
    fig = Figure(figsize=(12, 5), layout="constrained")
    ax_curve, ax_good = fig.subplots(1, 2, width_ratios=[3, 2])
    layouts = list(dict.fromkeys(df[layout].astype(str)))
    colors = _colors(len(layouts))
    best = []
    for color, name in zip(colors, layouts):
        rows = df[df[layout].astype(str) == name].sort_values(throughput, kind="stable")
        (line,) = ax_curve.plot(rows[throughput], rows[latency], "o-", color=color, lw=1.5, ms=4, label=name)
        line.set_gid(f"sweep-{name}")
        per_gpu = rows[goodput].to_numpy(dtype=float) / rows[num_gpus].to_numpy(dtype=float)
        best.append(float(np.nanmax(per_gpu)) if per_gpu.size else 0.0)
    if slo_s is not None:
        ax_curve.axhline(slo_s, color=SLO_COLOR, lw=1.5, label="SLO")
    ax_curve.set_xlabel(throughput_label)
    ax_curve.set_ylabel(latency_label)
    ax_curve.grid(True, alpha=0.3)
    if layouts:
        ax_curve.legend(fontsize=8)
    order = np.argsort(best)[::-1]
    ax_good.barh(np.arange(len(layouts))[::-1], [best[i] for i in order], color=[colors[i] for i in order])
    ax_good.set_yticks(np.arange(len(layouts))[::-1], [layouts[i] for i in order], fontsize=8)
    ax_good.set_xlabel("best goodput per GPU")
    ax_good.grid(True, axis="x", alpha=0.3)
    fig.suptitle("latency-throughput by layout")
    return fig


# -- writing -----------------------------------------------------------------------------------
def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = 110) -> bytes:
    if fmt not in FORMATS:
        raise SimserveError(f"unknown figure format {fmt!r} (choose {' or '.join(FORMATS)})")
    buf = io.BytesIO()
    # no timestamps in the files: the same run gives the same bytes
    metadata = {"Date": None} if fmt == "svg" else {}
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
    return buf.getvalue()


def all_figures(runs) -> dict[str, Figure]:
    """name -> figure for one run or several compared."""
    runs = as_runs(runs)
    figures = {"latency_cdf": latency_cdfs(runs), "latency_over_time": latency_over_time(runs),
               "time_breakdown": time_breakdown(runs)}
    kv = kv_and_batch(runs)
    if kv is not None:
        figures["kv_batch"] = kv
    return figures


def write_figures(runs, out_dir: str | Path, fmt: str = "png") -> dict[str, Path]:
    from simserve.export import atomic_write_bytes

    out = Path(out_dir)
    paths = {}
    for name, fig in all_figures(runs).items():
        paths[name] = out / f"{name}.{fmt}"
        atomic_write_bytes(paths[name], figure_bytes(fig, fmt))
    return paths


# -- CLI: simserve plot ------------------------------------------------------------------------
def cmd_plot(args) -> int:
    from simserve.export import atomic_write_bytes

    dirs = [Path(d) for d in args.dirs]
    labels = args.labels.split(",") if args.labels else [None] * len(dirs)
    if len(labels) != len(dirs):
        raise SimserveError(f"--labels has {len(labels)} names for {len(dirs)} folders")
    written: dict[str, Path] = {}
    plans = [d for d in dirs if (d / "plan.csv").is_file()]      # simserve plan folders (issue 16)
    if plans:
        from simserve.plan.figures import write_plan_figures
        for d in plans:
            written.update(write_plan_figures(d, args.out, args.format))
    labels = [lab for d, lab in zip(dirs, labels) if d not in plans]
    dirs = [d for d in dirs if d not in plans]
    sweeps = [d for d in dirs if (d / "results.csv").is_file() and not (d / "summary.json").is_file()]
    for d in sweeps:
        from simserve.sweep import FIGURE_COLUMNS, figure_table
        df = pd.read_csv(d / "results.csv")
        columns = {}
        if "status" in df.columns:          # a `simserve sweep` folder; else a table with sweep_figure's names
            df, columns = figure_table(df), FIGURE_COLUMNS
        path = Path(args.out or d) / f"sweep.{args.format}"
        print(f"drawing {len(df)} sweep points from {d / 'results.csv'}", flush=True)
        atomic_write_bytes(path, figure_bytes(sweep_figure(df, **columns), args.format))
        written[f"sweep ({d})"] = path
    run_dirs = [(d, lab) for d, lab in zip(dirs, labels) if d not in sweeps]
    if run_dirs:
        runs = [RunData.from_dir(d, lab) for d, lab in run_dirs]
        if len(runs) == 1:
            out = Path(args.out) if args.out else run_dirs[0][0] / "plots"
        else:
            out = Path(args.out) if args.out else run_dirs[0][0].parent / ("compare_" + "_vs_".join(r.label for r in runs))
        written.update(write_figures(runs, out, args.format))
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def add_parser(sub) -> None:
    plot = sub.add_parser("plot", help="draw figures from results folders (several: compared side by side)")
    plot.add_argument("dirs", nargs="+", metavar="RESULTS_DIR")
    plot.add_argument("--labels", help="comma-separated names, one per folder (default: folder names)")
    plot.add_argument("--format", choices=FORMATS, default="png")
    plot.add_argument("--out", help="where to write (default: DIR/plots, or a compare_* folder beside the first)")
    plot.set_defaults(func=cmd_plot)
