"""`simserve workload describe FILE_OR_PROFILE [--json] [--plot FILE.png] [--format F]`.

Wired into `simserve.cli` through `add_parser(subparsers)`; `run(args)` returns the exit code and
raises `WorkloadError` on bad input, which the main CLI turns into one line and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from simserve.workload.config import FORMATS


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("workload", help="inspect traces and dataset length profiles")
    sub = parser.add_subparsers(dest="workload_command", metavar="COMMAND", required=True)
    desc = sub.add_parser("describe", help="request count, duration, rate, burstiness, ISL/OSL statistics",
                          description="Statistics of a trace file (path or bundled name) or a length profile.")
    desc.add_argument("source", metavar="FILE_OR_PROFILE")
    desc.add_argument("--json", action="store_true", help="print the statistics as JSON")
    desc.add_argument("--plot", metavar="FILE.png", help="draw length histograms and the arrival rate over time")
    desc.add_argument("--format", choices=FORMATS, default="auto", help="trace format (default: detect)")
    desc.set_defaults(func=run)
    parser.set_defaults(func=run)
    return parser


def _fmt(value, digits=1, unit="") -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return f"{text} {unit}" if unit else text


def format_table(stats: dict) -> str:
    lines = [f"{stats['name']}  [{stats['kind']}, format {stats['format']}]"]
    if stats.get("description"):
        lines.append(f"  {stats['description']}; source: {stats['source']}")
    lines += [f"  requests          {_fmt(stats['requests'])}",
              f"  duration          {_fmt(stats['duration_s'], 1, 's')}",
              f"  arrival rate      {_fmt(stats['rate_per_s'], 3, 'req/s')}"
              f" (peak minute {_fmt(stats['peak_1min_rate_per_s'], 2, 'req/s')})",
              f"  inter-arrival CV  {_fmt(stats['interarrival_cv'], 2)}"]
    for key, label in (("isl", "ISL"), ("osl", "OSL")):
        s = stats[key]
        lines.append(f"  {label} tokens        mean {s['mean']:,.1f}  p50 {s['p50']:,}  p99 {s['p99']:,}  "
                     f"min {s['min']:,}  max {s['max']:,}")
    for note in stats.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def run(args) -> int:
    from simserve.workload.stats import describe

    if getattr(args, "workload_command", None) != "describe":
        print("usage: simserve workload describe FILE_OR_PROFILE [--json] [--plot FILE.png]", file=sys.stderr)
        return 2
    if args.plot:
        from simserve.export import check_writable_file
        check_writable_file(args.plot, "--plot")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # the notes are part of the output instead
        stats = describe(args.source, args.format)
        if args.plot:
            from simserve.workload.plot import plot_workload
            plot_workload(args.source, args.format, args.plot)
    print(json.dumps(stats, indent=2) if args.json else format_table(stats))
    return 0
