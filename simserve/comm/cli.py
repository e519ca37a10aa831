"""`simserve collective`: one collective played on an idle network, as nccl-tests would report it.

algbw = S / t and busbw = algbw x factor (nccl-tests doc/PERFORMANCE.md, comm.md 1.1): all-reduce
2(n-1)/n; all-gather, reduce-scatter, all-to-all (n-1)/n; send/recv 1. GB = 1e9 bytes.
With --nodes N the --gpus are spread evenly over N nodes (the first gpus/N GPUs of each).
"""
from __future__ import annotations

import json
import re

from simserve.errors import ConfigError

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "tb": 1e12}
PLOT_ALGOS = {"allreduce": ("ring", "recursive_doubling", "halving_doubling", "tree", "two_shot", "nvls",
                            "hierarchical", "auto"),
              "allgather": ("ring", "recursive_doubling", "direct", "auto"),
              "reducescatter": ("ring", "halving_doubling", "direct", "auto"),
              "alltoall": ("direct", "pairwise"), "sendrecv": ("direct",)}


def parse_size(text: str) -> float:
    """'8B', '1KiB', '1MiB', '1GiB' (powers of 2), '1KB', '1MB' (powers of 10), '4096'."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ConfigError(f"cannot read size {text!r}; use e.g. 8B, 1KiB, 1MiB, 1GiB, 1KB")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def busbw_factor(op: str, n: int) -> float:
    if op == "allreduce":
        return 2 * (n - 1) / n
    if op in ("allgather", "reducescatter", "alltoall"):
        return (n - 1) / n
    return 1.0


def sweep_sizes(spec: str) -> list[float]:
    """'8B:1GiB' -> 8, 16, ..., 1 GiB (x2 steps, as nccl-tests -f 2)."""
    try:
        lo_text, hi_text = spec.split(":")
    except ValueError:
        raise ConfigError(f"--sweep takes MIN:MAX, e.g. 8B:1GiB; got {spec!r}") from None
    lo, hi = parse_size(lo_text), parse_size(hi_text)
    if not 0 < lo <= hi <= 2 ** 50:
        raise ConfigError(f"--sweep needs 0 < MIN <= MAX <= 1PiB; got {spec!r}")
    sizes, size = [], lo
    while size <= hi * (1 + 1e-12):
        sizes.append(size)
        size *= 2
    return sizes


def _setup(args):
    from simserve.catalog import get_hardware
    from simserve.network.topology import build_topology, get_topology_spec

    if args.gpus < 1:
        raise ConfigError(f"--gpus must be >= 1; got {args.gpus}")
    nodes = args.nodes
    if nodes < 1 or args.gpus % nodes:
        raise ConfigError(f"--gpus {args.gpus} does not spread evenly over --nodes {nodes}")
    if args.topology:
        spec = get_topology_spec(args.topology)
        gpu = get_hardware(args.hardware or spec.hardware)
    else:
        gpu = get_hardware(args.hardware or "h100-sxm")
        spec = get_topology_spec(gpu.default_topology)
    per_node = args.gpus // nodes
    if per_node > spec.gpus_per_node:
        raise ConfigError(f"topology {spec.name} has {spec.gpus_per_node} GPUs per node; "
                          f"--gpus {args.gpus} over {nodes} node(s) needs {per_node}")
    topo = build_topology(gpu, nodes=nodes, name=spec.name, scale_up_GBps=args.scale_up_GBps,
                          scale_out_GBps=args.scale_out_GBps, latency_us=args.latency_us, launch=args.launch,
                          kernels=args.kernels, quick_reduce=args.quick_reduce)
    ranks = [node * topo.gpus_per_node + i for node in range(nodes) for i in range(per_node)]
    if args.op == "sendrecv":
        ranks = [ranks[0], ranks[-1]]
    return topo, ranks


def measure(topo, op: str, algo: str, ranks, nbytes: float) -> dict:
    from simserve.comm.compile import compiled
    from simserve.comm.tuner import collective_time

    time_s, used = collective_time(topo, op, algo, ranks, nbytes)
    program = compiled(topo, op, used, ranks, nbytes)
    algbw = nbytes / time_s / 1e9 if time_s > 0 else 0.0
    return {"op": op, "algorithm": used, "protocol": program.protocol or "-", "notes": program.notes,
            "launch": topo.comm.launch, "requested": algo, "bytes": nbytes, "gpus": len(ranks),
            "nodes": topo.nodes, "topology": topo.name, "hardware": topo.gpu.name, "time_s": time_s,
            "time_us": time_s * 1e6, "algbw_GBps": algbw, "busbw_GBps": algbw * busbw_factor(op, len(ranks))}


def _table(rows) -> str:
    lines = [f"{'size(B)':>14} {'count':>12} {'type':>6} {'redop':>6} {'time(us)':>11} {'algbw(GB/s)':>12} "
             f"{'busbw(GB/s)':>12}  algorithm protocol  channels"]
    for r in rows:
        count = int(r["bytes"] // 2)          # elements of bf16, as nccl-tests -d bfloat16
        redop = "sum" if r["op"] in ("allreduce", "reducescatter") else "none"
        lines.append(f"{r['bytes']:>14.0f} {count:>12d} {'bf16':>6} {redop:>6} {r['time_us']:>11.2f} "
                     f"{r['algbw_GBps']:>12.2f} {r['busbw_GBps']:>12.2f}  {r['algorithm']:<9} "
                     f"{r['protocol']:<9} {r['notes'].split('; ')[-1]}")
    return "\n".join(lines)


def _plot(topo, op, ranks, sizes, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simserve.collectives.select import candidates

    fig, ax = plt.subplots(figsize=(8, 5))
    for algo in PLOT_ALGOS[op]:
        xs, ys = [], []
        for size in sizes:
            if algo != "auto" and algo not in candidates(op, topo, ranks, float("inf")) + ["one_shot", "two_shot"]:
                continue
            try:
                row = measure(topo, op, algo, ranks, size)
            except ConfigError:
                continue
            xs.append(size)
            ys.append(row["busbw_GBps"])
        if xs:
            ax.plot(xs, ys, marker=".", label=algo, linestyle="--" if algo == "auto" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("bus bandwidth (GB/s, nccl-tests definition)")
    ax.set_title(f"{op} on {len(ranks)}x {topo.gpu.name}, {topo.name}, {topo.nodes} node(s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_parser(subparsers) -> None:
    from simserve.collectives.algorithms import ALGORITHMS

    algos = "; ".join(f"{op}: {', '.join(ALGORITHMS[op])}" for op in ALGORITHMS)
    p = subparsers.add_parser("collective", help="time one collective on the modelled network (nccl-tests style)")
    p.add_argument("--op", default="allreduce", choices=list(ALGORITHMS))
    p.add_argument("--algo", default="auto", help=f"algorithm or auto (default); {algos}")
    p.add_argument("--bytes", default="1MiB", help="message size: 8B, 1KiB, 1MiB, 1GiB, 1KB ...")
    p.add_argument("--gpus", type=int, default=8, help="GPUs in the group (in all nodes together)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--topology", default=None, help="catalog topology (default: the hardware's node)")
    p.add_argument("--hardware", default=None, help="catalog GPU (default: the topology's)")
    p.add_argument("--scale-up-GBps", dest="scale_up_GBps", type=float, default=None)
    p.add_argument("--scale-out-GBps", dest="scale_out_GBps", type=float, default=None)
    p.add_argument("--latency-us", dest="latency_us", type=float, default=None)
    p.add_argument("--launch", default="eager", choices=["eager", "graph"],
                   help="eager: a host launch per call, as nccl-tests (default); graph: CUDA graphs")
    p.add_argument("--kernels", default=None, help="engine-kernel platform (engine_kernels.yaml: vllm-rocm, "
                   "trtllm, none, ...); default the topology's")
    p.add_argument("--quick-reduce", default="none", choices=["none", "fp", "int8", "int6", "int4"],
                   help="vLLM's ROCm QuickReduce codec (default none, as vLLM)")
    p.add_argument("--sweep", default=None, metavar="MIN:MAX", help="sizes MIN, 2 MIN, ... MAX")
    p.add_argument("--json", action="store_true", help="with --sweep: a JSON list instead of a table")
    p.add_argument("--explain", action="store_true",
                   help="list auto's candidates and each protocol's modelled time at --bytes")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="busbw vs size for several algorithms")
    p.set_defaults(func=run)


def check_flags(args) -> None:
    """Link overrides and sizes through the config schema's own bounds (cluster.links, cluster.nodes):
    a NaN, negative or zero bandwidth, a negative latency or a huge node count is refused at once."""
    import math

    from pydantic import ValidationError

    from simserve.config import MAX_NODES, LinksConfig

    links = {k: getattr(args, k) for k in ("scale_up_GBps", "scale_out_GBps", "latency_us")}
    try:
        LinksConfig(**links)
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-")
        raise ConfigError(f"{flag} {err.get('input')}: {err['msg']}") from None
    if not 1 <= args.nodes <= MAX_NODES:
        raise ConfigError(f"--nodes {args.nodes}: must be 1..{MAX_NODES} (a bigger network takes minutes to build)")
    if args.sweep is None:
        size = parse_size(args.bytes)
        if not 0 < size <= 2 ** 50 or not math.isfinite(size):
            raise ConfigError(f"--bytes {args.bytes}: must be above 0 and at most 1 PiB")
    if args.plot:
        from simserve.export import check_writable_file
        check_writable_file(args.plot, "--plot")


def run(args) -> int:
    check_flags(args)
    topo, ranks = _setup(args)
    if args.sweep or args.plot:
        sizes = sweep_sizes(args.sweep or "8B:1GiB")
        if args.plot:
            _plot(topo, args.op, ranks, sizes, args.plot)
        if args.sweep:
            rows = [measure(topo, args.op, args.algo, ranks, size) for size in sizes]
            print(json.dumps(rows, indent=2) if args.json else _table(rows))
        return 0
    if args.explain:
        print(explain(topo, args.op, ranks, parse_size(args.bytes)))
        return 0
    print(json.dumps(measure(topo, args.op, args.algo, ranks, parse_size(args.bytes)), indent=2))
    return 0


def explain(topo, op: str, ranks, nbytes: float) -> str:
    """What `auto` weighs (NCCL's tuner rule: least modelled time): every candidate algorithm in
    every protocol, on the idle network."""
    from simserve.collectives.select import candidates
    from simserve.comm.compile import idle_time, protocol_options
    from simserve.comm.tuner import collective_time

    _, chosen = collective_time(topo, op, "auto", ranks, nbytes)
    lines = [f"{op} of {nbytes:g} B over {len(ranks)} GPUs on {topo.nodes}x {topo.name} "
             f"(launch {topo.comm.launch}, library {topo.comm.library}); auto -> {chosen}",
             f"  {'algorithm':<20} {'protocol':<9} {'time(us)':>10}  notes"]
    for algo in candidates(op, topo, ranks, nbytes):
        for program in protocol_options(topo, op, algo, ranks, nbytes):
            lines.append(f"  {algo:<20} {program.protocol or '-':<9} {idle_time(topo, program) * 1e6:>10.2f}  "
                         f"{program.notes}")
    return "\n".join(lines)
