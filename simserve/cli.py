"""The `simserve` command. Every subcommand exits 2 with one line on bad input (no traceback)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simserve.errors import SimserveError

DEFAULT_CONFIG = Path(__file__).parent / "examples" / "default.yaml"


def _print_summary(summary: dict, out_dir: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    layout = " ".join(f"{k}{v}" for k, v in summary.get("layout", {}).items() if v != 1) or "one GPU"
    table = Table(title=f"{summary.get('model')} on {summary.get('hardware')}, {layout}", show_edge=False)
    table.add_column("metric")
    for col in ("mean", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="right")
    for key, label in (("ttft", "TTFT (s)"), ("tpot", "TPOT (s)"), ("itl", "ITL (s)"), ("e2e", "E2E (s)"),
                       ("queue_delay", "queue (s)")):
        d = summary[key]
        table.add_row(label, *(f"{d[c]:.4f}" for c in ("mean", "p50", "p90", "p99", "max")))
    console.print(table)
    console.print(
        f"requests {summary['num_completed']}/{summary['num_requests']} completed, "
        f"{summary['num_rejected']} rejected | output {summary['throughput_output_tokens_per_s']:.1f} tok/s | "
        f"{summary['throughput_requests_per_s']:.3f} req/s | goodput {summary['goodput_requests_per_s']:.3f} req/s | "
        f"GPU busy {summary['gpu_utilization']:.1%} | KV peak {summary['kv_peak_utilization']:.1%} | "
        f"preemptions {summary['preemptions']}")
    console.print(f"simulated {summary['sim_time_s']:.1f} s in {summary['wall_time_s']:.2f} s wall, "
                  f"{summary['events']} events" + (f" -> {out_dir}" if out_dir else ""))


def cmd_run(args) -> int:
    from simserve.export import write_results
    from simserve.simulation import simulate

    overrides = list(args.set or [])
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    config = args.config or DEFAULT_CONFIG
    # --- figures and trace (issue 7): check the window before a long run ---
    from simserve.tracing import parse_window
    trace_window = parse_window(args.trace_window)
    # --- end ---
    result = simulate(config, overrides=overrides, show_progress=False if args.quiet else None)
    out = Path(args.out) if args.out else Path("results") / Path(config).stem
    write_results(result, out)
    # --- figures and trace (issue 7) ---
    if args.plots:
        from simserve.plots import write_figures
        write_figures(result, out / "plots", args.format)
    if args.trace or trace_window:
        from simserve.tracing import write_trace
        write_trace(result, out / "trace.json", trace_window)
    # --- end ---
    if not args.quiet:
        _print_summary(result.summary, out)
    return 0


def cmd_estimate(args) -> int:
    from simserve.estimate import estimate

    print(json.dumps(estimate(model=args.model, hardware=args.hardware, tp=args.tp, pp=args.pp, ep=args.ep,
                              precision=args.precision, kv_precision=args.kv_precision, batch=args.batch,
                              isl=args.isl, osl=args.osl, topology=args.topology), indent=2))
    return 0


def extension_points() -> dict[str, str]:
    """Config fields whose values come from a registry, and the names registered now."""
    from simserve.router import ROUTERS
    from simserve.scheduler import POLICIES
    from simserve.workload.processes import ARRIVAL_PROCESSES
    return {"scheduler.policy": ", ".join(POLICIES.names()),
            "router.policy": ", ".join(ROUTERS.names()),
            "workload.arrivals.process": ", ".join(ARRIVAL_PROCESSES.names())}


def cmd_catalog(args) -> int:
    from simserve.catalog import hardware_catalog, model_catalog

    data = {
        "hardware": {n: {"hbm_GB": g.hbm_bytes / 1e9, "hbm_TBps": g.hbm_bw_Bps / 1e12,
                         "bf16_TFLOPs": g.peak_flops.get("bf16", 0) / 1e12,
                         "fp8_TFLOPs": g.peak_flops.get("fp8", 0) / 1e12,
                         "scale_up": f"{g.scale_up.links}x {g.scale_up.kind} {g.scale_up.link_bw_Bps / 1e9:g} GB/s",
                         "default_topology": g.default_topology} for n, g in hardware_catalog().items()},
        "models": {n: {"layers": m.num_layers, "hidden": m.hidden, "heads": m.num_heads,
                       "kv_heads": m.num_kv_heads, "moe": bool(m.moe), "max_context": m.max_context}
                   for n, m in model_catalog().items()},
    }
    try:
        from simserve.network.topology import topology_catalog
        data["topologies"] = {n: getattr(t, "description", "") for n, t in topology_catalog().items()}
    except ImportError:
        data["topologies"] = {}
    from simserve.collectives.allreduce import ALLREDUCE
    data["allreduce_algorithms"] = {n: ALLREDUCE.get(n).description for n in ALLREDUCE}
    data["extension_points"] = extension_points()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for section, entries in data.items():
        print(f"{section}:")
        for name, fields in entries.items():
            desc = ", ".join(f"{k}={v}" for k, v in fields.items()) if isinstance(fields, dict) else fields
            print(f"  {name:<16} {desc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from simserve import __version__

    parser = argparse.ArgumentParser(prog="simserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"simserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="simulate a config (default: the bundled default)",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="registered values:\n" + "\n".join(f"  {k}: {v}" for k, v in extension_points().items()))
    run.add_argument("config", nargs="?", help="YAML config (default: the bundled default)")
    run.add_argument("--out", help="results folder (default: results/CONFIG_NAME)")
    run.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a config value")
    run.add_argument("--seed", type=int)
    run.add_argument("--quiet", action="store_true")
    # --- figures and trace (issue 7) ---
    run.add_argument("--plots", action="store_true", help="write figures into OUT/plots")
    run.add_argument("--format", choices=("png", "svg"), default="png", help="figure format (with --plots)")
    run.add_argument("--trace", action="store_true", help="write OUT/trace.json (Perfetto, chrome://tracing)")
    run.add_argument("--trace-window", metavar="START:END", help="trace only this simulated time (s); implies --trace")
    # --- end ---
    run.set_defaults(func=cmd_run)

    est = sub.add_parser("estimate", help="analytical step times and memory, no simulation")
    est.add_argument("--model", required=True)
    est.add_argument("--hardware", required=True)
    est.add_argument("--tp", type=int, default=1)
    est.add_argument("--pp", type=int, default=1)
    est.add_argument("--ep", type=int, default=1)
    est.add_argument("--precision", default="bf16", help="weight dtype (fp32, bf16, fp16, fp8, fp4)")
    est.add_argument("--kv-precision", default=None, help="KV dtype (default: as --precision, bf16 for fp4)")
    est.add_argument("--batch", type=int, default=1)
    est.add_argument("--isl", type=int, default=1024)
    est.add_argument("--osl", type=int, default=128)
    est.add_argument("--topology", default=None, help="catalog topology (default: the hardware's node)")
    est.set_defaults(func=cmd_estimate)

    cat = sub.add_parser("catalog", help="list hardware, models and topologies")
    cat.add_argument("--json", action="store_true")
    cat.set_defaults(func=cmd_catalog)

    for module in ("simserve.comm.cli", "simserve.workload.cli",
                   "simserve.plots", "simserve.report", "simserve.tracing", "simserve.sweep",
                   "simserve.plan.cli"):   # plot, report, trace (issue 7)
        try:
            mod = __import__(module, fromlist=["add_parser"])
        except ImportError:
            continue
        mod.add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SimserveError as exc:
        print(f"simserve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("simserve: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
