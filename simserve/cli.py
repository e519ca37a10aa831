"""The `simserve` command. Every subcommand exits 2 with one line on bad input (no traceback)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simserve.errors import CapacityError, ConfigError, SimserveError

EXAMPLES = Path(__file__).parent / "examples"
PROGRESS_LINE_S = 10.0      # without a progress bar (--quiet, not a terminal): a line this often
DEFAULT_CONFIG = EXAMPLES / "default.yaml"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`simserve CMD: error: ...`) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def resolve_config(name: str | None) -> Path:
    """A config path, or the name of a bundled example (`default`, `llama70b-tp8-h100`)."""
    if name is None:
        return DEFAULT_CONFIG
    path = Path(name)
    if path.exists():
        return path
    bundled = EXAMPLES / f"{path.stem if path.suffix in ('.yaml', '.yml') else name}.yaml"
    if path.parent == Path(".") or path.parts[:1] == ("examples",):
        if bundled.is_file():
            return bundled
    names = ", ".join(sorted(p.stem for p in EXAMPLES.glob("*.yaml")))
    raise ConfigError(f"config file not found: {name} (bundled examples by name: {names})")


def _print_summary(summary: dict, out_dir: Path | None) -> None:
    """The summary as a table; every label is a summary.json key (metrics.flat_summary's scheme)."""
    from rich.console import Console
    from rich.table import Table

    from simserve.metrics import DISTRIBUTIONS

    console = Console()
    def text(par):
        return " ".join(f"{k}{v}" for k, v in par.items() if v != 1) or "one GPU"
    pools = summary.get("disaggregation")
    layout = text(summary.get("layout", {})) if pools is None else \
        f"prefill {text(pools['prefill']['layout'])} / decode {text(pools['decode']['layout'])}"
    table = Table(title=f"{summary.get('model')} on {summary.get('hardware')}, {layout} (seconds)", show_edge=False)
    table.add_column("metric")
    for col in ("mean", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="right")
    for key in DISTRIBUTIONS:
        d = summary[key]
        table.add_row(key, *(f"{d[c]:.4f}" for c in ("mean", "p50", "p90", "p99", "max")))
    console.print(table)
    console.print(
        f"num_completed {summary['num_completed']}/{summary['num_requests']}, num_rejected "
        f"{summary['num_rejected']} | throughput_output_tokens_per_s {summary['throughput_output_tokens_per_s']:.1f} "
        f"| throughput_total_tokens_per_s {summary['throughput_total_tokens_per_s']:.1f} | throughput_requests_per_s "
        f"{summary['throughput_requests_per_s']:.3f} | goodput_requests_per_s {summary['goodput_requests_per_s']:.3f}")
    console.print(
        f"gpu_utilization {summary['gpu_utilization']:.1%} | kv_peak_utilization "
        f"{summary['kv_peak_utilization']:.1%} | preemptions {summary['preemptions']}")
    console.print(f"sim_time_s {summary['sim_time_s']:.1f} in wall_time_s {summary['wall_time_s']:.2f}, "
                  f"events {summary['events']}" + (f" -> {out_dir}" if out_dir else ""))


def cmd_run(args) -> int:
    from simserve.config import load_config
    from simserve.export import check_out_dir, clear_dir, write_results
    from simserve.simulation import simulate

    overrides = list(args.set or [])
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    config = resolve_config(args.config)
    # --- figures and trace (issue 7): check the window before a long run ---
    from simserve.tracing import parse_window
    trace_window = parse_window(args.trace_window)
    overrides = _timeline_overrides(args, trace_window) + overrides
    # --- end ---
    formats = set(args.format or ())
    figure_format = next((f for f in reversed(args.format or ()) if f in ("png", "svg")), "png")
    if "parquet" in formats:
        _need_pyarrow()
    cfg = load_config(config, overrides)          # every bad key or value refused before anything runs
    out = Path(args.out) if args.out else Path("results") / Path(config).stem
    check_out_dir(out, args.force)                # and the results folder, before the simulation
    from simserve import progress
    saved, progress.LINES_EVERY_S = progress.LINES_EVERY_S, PROGRESS_LINE_S   # no bar: still a line (stderr)
    try:
        result = simulate(cfg, show_progress=False if args.quiet else None)
    finally:
        progress.LINES_EVERY_S = saved
    if args.force:
        clear_dir(out)
    write_results(result, out)
    if "vllm" in formats:
        from simserve.export import write_vllm
        write_vllm(result, out / "vllm.json")
    if "parquet" in formats:
        from simserve.export import write_parquet
        write_parquet(result, out)
    # --- figures and trace (issue 7) ---
    if args.plots:
        from simserve.plots import write_figures
        write_figures(result, out / "plots", figure_format)
    if args.trace or trace_window:
        from simserve.tracing import DEFAULT_WINDOW_S, default_window, write_trace
        window = default_window(result.summary["sim_time_s"], trace_window)
        if window != trace_window and not args.quiet:
            print(f"trace: the first {DEFAULT_WINDOW_S:g} s of {result.summary['sim_time_s']:.0f} s simulated "
                  f"(--trace-window START:END for another span)", flush=True)
        write_trace(result, out / "trace.json", window)
    # --- end ---
    if not args.quiet:
        _print_summary(result.summary, out)
    return 0


def _timeline_overrides(args, trace_window) -> list[str]:
    """--timeline-window as engine.timeline_window_s; a trace is drawn from the timeline: record it."""
    from simserve.tracing import parse_window
    window = parse_window(args.timeline_window, "--timeline-window")
    if window is not None:
        end = min(window[1], 1e300)                   # an open end: the config takes finite numbers
        return [f"engine.timeline_window_s=[{window[0]!r}, {end!r}]"]
    return ["engine.timeline=true"] if args.trace or trace_window else []


def _need_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ConfigError("--format parquet needs pyarrow (pip install 'simserve[parquet]')") from None


def _estimate_args(args) -> dict:
    """The estimate flags through the config schema's own fields and bounds (one schema)."""
    from pydantic import ValidationError, create_model

    from simserve.config import MAX_BATCH, ParallelismConfig, PrecisionConfig, Strict
    from simserve.workload.config import MAX_TOKENS
    from pydantic import Field

    par, prec = ParallelismConfig.model_fields, PrecisionConfig.model_fields
    schema = create_model(
        "EstimateFlags", __base__=Strict,
        tp=(int, par["tp"]), pp=(int, par["pp"]), ep=(int, par["ep"]),
        precision=(prec["weights"].annotation, ...), kv_precision=(prec["kv"].annotation | None, None),
        batch=(int, Field(..., ge=1, le=MAX_BATCH)),
        isl=(int, Field(..., ge=1, le=MAX_TOKENS)), osl=(int, Field(..., ge=1, le=MAX_TOKENS)))
    values = {k: getattr(args, k) for k in ("tp", "pp", "ep", "precision", "kv_precision", "batch", "isl", "osl")}
    try:
        return schema.model_validate(values).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-")
        raise ConfigError(f"{flag}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})") from None


def _not_fitting(d: dict) -> str:
    """The memory line `run` prints for a layout that does not fit, from estimate's memory plan."""
    m = d["memory"]
    where = f"{d['model']} ({d['precision']['weights']} weights) on {d['hardware']} with tp={d['tp']} pp={d['pp']}"
    if not m.get("max_batch"):
        short = m["weights_GiB"] + m["activation_GiB"] + m["reserved_GiB"] - m["usable_GiB"]
        return (f"{where} does not fit: weights {m['weights_GiB']:.1f} GiB + activations {m['activation_GiB']:.1f} "
                f"GiB + reserved {m['reserved_GiB']:.1f} GiB leave {m['kv_capacity_GiB']:.1f} GiB for the KV cache "
                f"out of {m['usable_GiB']:.1f} GiB usable per GPU (short by {max(short, 0) + 0.05:.1f} GiB)")
    need = d["batch"] * (d["isl"] + d["osl"])
    return (f"{where} does not fit a batch of {d['batch']} x {d['isl'] + d['osl']} tokens: the KV cache holds "
            f"{m['kv_capacity_tokens']:,} tokens, {need:,} needed (at most --batch {m['max_batch']})")


def cmd_estimate(args) -> int:
    from simserve.catalog import get_model
    from simserve.estimate import estimate

    flags = _estimate_args(args)
    model = get_model(args.model)
    if flags["isl"] + flags["osl"] > model.max_context:
        raise ConfigError(f"--isl {flags['isl']} + --osl {flags['osl']} exceeds {model.name}'s "
                          f"{model.max_context:,}-token context")
    if flags["pp"] > model.num_layers:
        raise ConfigError(f"--pp {flags['pp']}: {model.name} has only {model.num_layers} layers")
    result = estimate(model=args.model, hardware=args.hardware, topology=args.topology, runtime=args.runtime,
                      **flags)
    if not result["memory"]["fits"]:
        raise CapacityError(_not_fitting(result))
    print(json.dumps(result, indent=2))
    return 0


def extension_points() -> dict[str, str]:
    """Config fields whose values come from a registry, and the names registered now."""
    from simserve.router import ROUTERS
    from simserve.runtime import runtime_catalog
    from simserve.scheduler import ADMISSIONS, POLICIES
    from simserve.workload.processes import ARRIVAL_PROCESSES
    return {"scheduler.policy": ", ".join(POLICIES.names()), "scheduler.admission": ", ".join(ADMISSIONS.names()),
            "engine.runtime": ", ".join(runtime_catalog()),
            "router.policy": ", ".join(ROUTERS.names()),
            "workload.arrivals.process": ", ".join(ARRIVAL_PROCESSES.names())}


def cmd_catalog(args) -> int:
    from simserve.catalog import hardware_catalog, model_catalog
    from simserve.profile.check import profile_note   # measured profile + held-out error (issue 14)

    data = {
        "hardware": {n: {"hbm_GB": g.hbm_bytes / 1e9, "hbm_TBps": g.hbm_bw_Bps / 1e12,
                         "bf16_TFLOPs": g.peak_flops.get("bf16", 0) / 1e12,
                         "fp8_TFLOPs": g.peak_flops.get("fp8", 0) / 1e12,
                         "scale_up": f"{g.scale_up.links}x {g.scale_up.kind} {g.scale_up.link_bw_Bps / 1e9:g} GB/s",
                         "default_topology": g.default_topology,
                         "profile": profile_note(g)} for n, g in hardware_catalog().items()},
        "models": {n: {"layers": m.num_layers, "hidden": m.hidden, "heads": m.num_heads,
                       "kv_heads": m.num_kv_heads, "moe": bool(m.moe), "max_context": m.max_context}
                   for n, m in model_catalog().items()},
    }
    from simserve.network.topology import topology_catalog
    data["topologies"] = {n: getattr(t, "description", "") for n, t in topology_catalog().items()}
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

    parser = OneLineParser(prog="simserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"simserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="simulate a config (default: the bundled default)",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="registered values:\n" + "\n".join(f"  {k}: {v}" for k, v in extension_points().items()))
    run.add_argument("config", nargs="?", help="YAML config, or a bundled example by name (default, "
                     "llama70b-tp8-h100, ...; default: the bundled default)")
    run.add_argument("--out", help="results folder (default: results/CONFIG_NAME); must be empty unless --force")
    run.add_argument("--force", action="store_true", help="replace what --out holds (it is cleared first)")
    run.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a config value")
    run.add_argument("--seed", type=int)
    run.add_argument("--quiet", action="store_true")
    # --- figures and trace (issue 7) ---
    run.add_argument("--plots", action="store_true", help="write figures into OUT/plots")
    run.add_argument("--format", action="append", choices=("png", "svg", "vllm", "parquet"), default=None,
                     help="png or svg: figure format (with --plots); vllm: also write OUT/vllm.json with vLLM "
                          "benchmark_serving's fields; parquet: also requests.parquet and timeline.parquet "
                          "(needs pyarrow); repeatable")
    run.add_argument("--trace", action="store_true", help="write OUT/trace.json (Perfetto, chrome://tracing)")
    run.add_argument("--trace-window", metavar="START:END", help="trace only this simulated time (s); implies --trace")
    run.add_argument("--timeline-window", metavar="START:END",
                     help="record the timeline (timeline.csv.gz) only for this simulated time (s); by default "
                          "it is recorded whole for runs of up to 20,000 requests per pipeline stage, not at all above")
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
    est.add_argument("--runtime", default=None, help="serving runtime whose host time and CUDA graphs "
                     "the steps include (vllm-v1, vllm-v0, sglang, trtllm, ideal, a YAML file; "
                     "default: the config's, vllm-v1)")
    est.set_defaults(func=cmd_estimate)

    cat = sub.add_parser("catalog", help="list hardware, models and topologies")
    cat.add_argument("--json", action="store_true")
    cat.set_defaults(func=cmd_catalog)

    for module in ("simserve.comm.cli", "simserve.workload.cli",
                   "simserve.plots", "simserve.report", "simserve.tracing", "simserve.sweep",
                   "simserve.plan.cli", "simserve.profile.cli"):   # plot, report, trace (issue 7)
        # every one ships with the package: an import error is a bug to see, not a command to hide
        __import__(module, fromlist=["add_parser"]).add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SimserveError as exc:
        print(f"simserve: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:          # the disk, not the input: still one line, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"simserve: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("simserve: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
