"""One self-contained HTML page per run, for sharing: the config, the summary and the figures.

Everything is inline: CSS in a <style> element, figures as base64 PNG data: URIs (or inline SVG
with `fmt="svg"`), no scripts, fonts or stylesheets fetched from anywhere, so the file opens
offline and can be mailed or attached to an issue as is.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from simserve.plots import RunData, all_figures, as_runs, figure_bytes

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1180px;
       color: #212529; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.8em;
     border-bottom: 1px solid #dee2e6; padding-bottom: 0.2em; }
.sub { color: #868e96; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #e9ecef; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f1f3f5; }
.grid { display: flex; flex-wrap: wrap; gap: 2.5em; align-items: flex-start; }
figure { margin: 1em 0; } figure img, figure svg { max-width: 100%; height: auto; }
figcaption { color: #495057; font-size: 0.9em; }
pre { background: #f8f9fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""

CAPTIONS = {
    "latency_cdf": "Latency distributions over completed requests: p50/p90/p99 as vertical lines, the SLO "
                   "in red. The ITL panel shows each request's largest inter-token gap; the summary's ITL "
                   "percentiles (over every gap) are the grey dotted lines.",
    "latency_over_time": "TTFT and TPOT p50/p99 of requests grouped by arrival time; beneath, the arrival "
                         "rate and the number of requests waiting for admission.",
    "time_breakdown": "Where the time went, as fractions of simulated time: the whole cluster, then one GPU "
                      "of each pipeline stage (bubble: waiting for a neighbouring stage).",
    "kv_batch": "KV cache blocks in use and requests running, per replica, at the end of each iteration.",
}


def _table(header: list[str], rows: list[list]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return "\n".join(out) + "</table>"


def _ms(x) -> str:
    return f"{float(x) * 1e3:,.2f}"


def summary_tables(run: RunData) -> str:
    s = run.summary
    parts = ["<h2>Latency (ms)</h2>"]
    rows = []
    for key, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL (every gap)"), ("e2e", "E2E"),
                       ("queue_delay", "queue delay")):
        d = s.get(key) or {}
        rows.append([label] + [_ms(d.get(c, 0.0)) for c in ("mean", "p50", "p90", "p99", "max")])
    parts.append(_table(["metric", "mean", "p50", "p90", "p99", "max"], rows))
    slo = run.slo
    slo_text = ", ".join(f"{k.replace('_s', '')} &le; {_ms(v)} ms" for k, v in slo.items() if v is not None)
    rows = [["requests completed / total", f"{s.get('num_completed', 0)} / {s.get('num_requests', 0)}"],
            ["rejected", s.get("num_rejected", 0)],
            ["output throughput (tok/s)", f"{s.get('throughput_output_tokens_per_s', 0.0):,.1f}"],
            ["request throughput (req/s)", f"{s.get('throughput_requests_per_s', 0.0):,.3f}"],
            ["goodput (req/s meeting the SLO)", f"{s.get('goodput_requests_per_s', 0.0):,.3f}"],
            ["GPUs", s.get("num_gpus", "")],
            ["GPU utilization", f"{s.get('gpu_utilization', 0.0):.1%}"],
            ["KV cache peak", f"{s.get('kv_peak_utilization', 0.0):.1%}"],
            ["preemptions", s.get("preemptions", 0)],
            ["simulated time (s)", f"{s.get('sim_time_s', 0.0):,.2f}"],
            ["wall time (s)", f"{s.get('wall_time_s', 0.0):,.2f}"],
            ["events", f"{s.get('events', 0):,}"]]
    parts.append("<div class='grid'><div><h2>Throughput</h2>" + _table(["", "value"], rows))
    if slo_text:
        parts.append(f"<p class='sub'>SLO: {slo_text}</p>")
    breakdown = s.get("time_breakdown") or {}
    parts.append("</div><div><h2>Where the time went</h2>" +
                 _table(["kind", "share of GPU time"], [[k, f"{v:.2%}"] for k, v in breakdown.items()]))
    moved = s.get("bytes_moved") or {}
    if moved:
        parts.append(_table(["link", "bytes moved"], [[k, f"{v / 1e9:,.3f} GB"] for k, v in moved.items()]))
    parts.append("</div></div>")
    stages = s.get("stages") or []
    if stages:
        parts.append("<h2>Pipeline stages (seconds, one GPU of the stage)</h2>")
        parts.append(_table(["replica", "stage", "GPUs", "layers", "busy", "P2P", "waiting for input",
                             "waiting for output", "waiting for host", "idle"],
                            [[st["replica"], st["stage"], ",".join(map(str, st.get("gpus", []))), st.get("layers", ""),
                              f"{st['busy_s']:.3f}", f"{st.get('p2p_s', 0):.3f}",
                              f"{st.get('waiting_for_input_s', 0):.3f}", f"{st.get('waiting_for_output_s', 0):.3f}",
                              f"{st.get('waiting_for_host_s', 0):.3f}", f"{st.get('idle_s', 0):.3f}"] for st in stages]))
    return "\n".join(parts)


def _figure_html(name: str, data: bytes, fmt: str) -> str:
    if fmt == "svg":
        svg = data.decode()
        svg = svg[svg.index("<svg"):]                   # drop the XML prolog and DOCTYPE
        body = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    else:
        body = f"<img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
    caption = CAPTIONS.get(name, "")
    return f"<figure id='{name}'>{body}<figcaption>{html.escape(caption)}</figcaption></figure>"


def render(run, fmt: str = "png") -> str:
    """The report of one run (a RunData, a Result, or a list of them compared) as an HTML string."""
    import yaml

    runs = as_runs(run)
    first = runs[0]
    s = first.summary
    layout = " ".join(f"{k}{v}" for k, v in (s.get("layout") or {}).items() if v != 1) or "1 GPU"
    title = (f"{s.get('model', '')} on {s.get('hardware', '')}, {layout}" if len(runs) == 1
             else "comparison: " + ", ".join(r.label for r in runs))
    body = [f"<h1>simserve report: {html.escape(title)}</h1>",
            f"<p class='sub'>{html.escape(first.label if len(runs) == 1 else '')} "
            f"{html.escape(str(s.get('workload', '')))}</p>"]
    for r in runs:
        if len(runs) > 1:
            body.append(f"<h2 style='border:none'>{html.escape(r.label)}</h2>")
        body.append(summary_tables(r))
    body.append("<h2>Figures</h2>")
    for name, fig in all_figures(runs).items():
        body.append(_figure_html(name, figure_bytes(fig, fmt), fmt))
    for r in runs:
        if r.config:
            body.append(f"<h2>Config{': ' + html.escape(r.label) if len(runs) > 1 else ''}</h2><details open>"
                        f"<summary>resolved config.yaml</summary><pre>"
                        f"{html.escape(yaml.safe_dump(r.config, sort_keys=False))}</pre></details>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>simserve: {html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(run, path: str | Path, fmt: str = "png") -> Path:
    from simserve.export import atomic_write_text

    path = Path(path)
    atomic_write_text(path, render(run, fmt))
    return path


# -- CLI: simserve report ----------------------------------------------------------------------
def cmd_report(args) -> int:
    from simserve.errors import SimserveError

    dirs = [Path(d) for d in args.dirs]
    labels = args.labels.split(",") if args.labels else [None] * len(dirs)
    if len(labels) != len(dirs):
        raise SimserveError(f"--labels has {len(labels)} names for {len(dirs)} folders")
    runs = [RunData.from_dir(d, lab) for d, lab in zip(dirs, labels)]
    out = Path(args.out) if args.out else dirs[0] / "report.html"
    print(write_report(runs if len(runs) > 1 else runs[0], out, args.format))
    return 0


def add_parser(sub) -> None:
    report = sub.add_parser("report", help="one self-contained HTML page (config, summary, figures)")
    report.add_argument("dirs", nargs="+", metavar="RESULTS_DIR")
    report.add_argument("--labels", help="comma-separated names, one per folder")
    report.add_argument("--format", choices=("png", "svg"), default="png", help="how figures are embedded")
    report.add_argument("--out", help="output file (default: RESULTS_DIR/report.html)")
    report.set_defaults(func=cmd_report)
