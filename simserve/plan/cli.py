"""`simserve plan [PLAN.yaml] --model M --hardware H[,H...] --gpus N --workload W --slo ... --out DIR`."""
from __future__ import annotations

from pathlib import Path

from simserve.plan.spec import load_plan, parse_ints, parse_pairs, read_plan_file


def spec_from_args(args):
    raw = read_plan_file(args.plan) if args.plan else {}
    if args.model:
        raw["models"] = [m.strip() for m in args.model.split(",") if m.strip()]
    if args.hardware:
        raw["hardware"] = [h.strip() for h in args.hardware.split(",") if h.strip()]
    for key in ("gpus", "workload", "requests", "seed"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    if args.exhaustive:
        raw["bound"] = False
    if args.slo:
        raw["slo"] = parse_pairs(args.slo, "--slo", seconds=True)
    if args.price:
        raw["prices"] = {**(raw.get("prices") or {}), **parse_pairs(args.price, "--price", seconds=False)}
    space = dict(raw.get("space") or {})
    for key in ("tp", "pp", "ep", "chunk_size", "max_batch_size"):
        value = getattr(args, key)
        if value:
            space[key] = parse_ints(value, f"--{key.replace('_', '-')}")
    if space:
        raw["space"] = space
    rates = dict(raw.get("rates") or {})
    if args.rate_step is not None:
        rates["step"] = args.rate_step
    if rates:
        raw["rates"] = rates
    for key in ("models", "hardware", "gpus"):
        if key not in raw:
            from simserve.errors import ConfigError
            raise ConfigError(f"plan: --{key.rstrip('s') if key != 'gpus' else key} is required (or give it in the plan YAML)")
    return load_plan(raw)


def cmd_plan(args) -> int:
    from simserve.plan.report import print_table
    from simserve.plan.run import run_plan

    spec = spec_from_args(args)
    out = Path(args.out) if args.out else Path("results") / ("plan_" + "_".join(spec.models))
    result = run_plan(spec, out, workers=args.workers, ray_address=args.ray,
                      show_progress=False if args.quiet else None, log=False if args.quiet else None)
    if not args.quiet:
        print_table(result.table, result.knees, out)
        info = result.info
        print(f"{info['layouts']} layouts ({info['pruned']} pruned), {info['probes_simulated']} probes simulated, "
              f"{info['probes_reused']} reused; {info['wall_time_s']:.1f} s wall, {info['probe_cpu_s']:.1f} s CPU in probes")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="search layouts for the highest rate meeting an SLO; rank by goodput per GPU and cost")
    p.add_argument("plan", nargs="?", help="plan YAML (keys: models, hardware, gpus, workload, slo, space, rates, prices, base)")
    p.add_argument("--model", help="model name(s), comma-separated")
    p.add_argument("--hardware", help="GPU type(s), comma-separated (e.g. h100,h200,mi300x)")
    p.add_argument("--gpus", type=int, help="GPUs to lay out")
    p.add_argument("--workload", help="bundled trace (azure-conv, azure-code), trace file, length profile or workload YAML")
    p.add_argument("--requests", type=int, help="use the first N requests of the workload")
    p.add_argument("--slo", help="limits, e.g. ttft_p99=2s,tpot_p99=100ms (also e2e_p99, *_p50, rejected=0.01)")
    p.add_argument("--price", help="USD per GPU-hour overrides, e.g. h100=3.0,mi300x=2.1")
    p.add_argument("--tp", help="tensor-parallel degrees to search, e.g. 1,2,4,8 (default: powers of 2 in a node)")
    p.add_argument("--pp", help="pipeline degrees (default: powers of 2 up to --gpus)")
    p.add_argument("--ep", help="expert-parallel degrees (MoE)")
    p.add_argument("--chunk-size", dest="chunk_size", help="chunked-prefill token budgets, e.g. 512,2048")
    p.add_argument("--max-batch-size", dest="max_batch_size", help="batch caps, e.g. 64,256")
    p.add_argument("--rate-step", type=float, help="rate grid step (0.1: rates 10%% apart)")
    p.add_argument("--seed", type=int)
    p.add_argument("--exhaustive", action="store_true",
                   help="search every layout's rate (default: skip layouts that cannot rank first)")
    p.add_argument("--out", help="plan folder (default: results/plan_MODEL); re-running resumes it")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: CPU count)")
    p.add_argument("--ray", metavar="ADDRESS", default=None, help="run probes as Ray tasks on this cluster")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_plan)
