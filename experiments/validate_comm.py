"""Validate the collective model against published measurements (issue 12 part 8).

Each point: a measured nccl-tests / rccl-tests figure with its source, and whether a catalog number
was fitted to it ("fit") or it was kept out of every fit ("held-out"). Modelled as nccl-tests runs
(`launch: eager`, the tests' default without CUDA graphs, and no engine kernels: `auto` is the
library's own tuner). Small single-node points of the first sources name `ring` (NCCL's tuner picks
ring/LL there, NVIDIA/nccl-tests#309).

The two worst points are inconsistent with their own systems' 8 B points under any protocol, so
no physical parameter closes them without moving a fitted point (numbers from table.md):
- 8x A100, 1 MiB: measured 51 us, model 65.9 us (+29%). The 8 B run takes 45 us (the launch cost is
  fitted to it), which leaves 6 us to move 2 x 7/8 x 1 MiB = 1.84 MB per GPU: 306 GB/s of bus
  bandwidth, above A100's NVLink 3 line rate (300 GB/s per direction) and 1.3x what NCCL reaches at
  1 GiB (232). The model's LL ring is capped at NCCL's llMaxBw for SM80 (87.7 GB/s): 45 + 20.9 us.
  The 1 MiB run must have had a cheaper launch (about 15 us less) than the 8 B one.
- 8x MI300X, 1 MiB: measured 82 us, model 56.1 us (-32%). After the 45 us of the 8 B run, 37 us
  move 1.84 MB: 50 GB/s, 15% of the 7 x 48 GB/s xGMI links. The model's RCCL LL runs at half the
  link rate (168 GB/s: RCCL's tuning_model_5 quotes no llMaxBw cap, comm.md 1.3). Physically RCCL's
  LL (8-byte data+flag stores across xGMI) reaches about a third of what NCCL's LL factor implies
  here; a cap near 60 GB/s would make the tuner pick Simple (about 74 us, -10%), but no source
  gives one, and fitting it to this held-out point would hide the error, so it stays reported.
Two NVLS_TREE points are off for reasons the model keeps on purpose:
- 2x8 H20, 8 B with NCCL_ALGO=NVLSTree: measured 47.5 us, model 76.8 us (+62%): simserve takes
  NCCL's own NVLS_TREE latency (25 + 2 x 20.9 us, tuning.cc) so that `auto` weighs it as NCCL's
  tuner does; the real kernel is faster than NCCL's model of it at small sizes.
- 4x8 H100 RoCE, NVLS on: measured 320 GB/s, model 363 (+13%): the run reports the same busbw as
  with NVLS off, so NCCL 2.19's tuner most likely kept the ring; simserve's `auto` picks NVLS_TREE
  by its modelled time (NCCL's tuner does not see RoCE's lower efficiency).
NVLS on fewer GPUs than the node (NVIDIA/nccl#1455): simserve's in-switch reduction gives every
group size the algbw of 8 GPUs (274 GB/s), so busbw 274 on 2 GPUs (measured 367, -25%; `auto`
takes the ring there, 370), 410 on 4 (+12%; `auto` picks NVLS, measured NVLS is no better than
the ring's 370 at 4) and 438 on 5 (+4%). Reported, not tuned: the measured algbw falls from 2 to 4
GPUs and rises from 5 to 8, which one switch efficiency cannot follow.
Writes, under --out (default
experiments/results/validate_comm): points.csv, table.md, parity.png and curves.png, and prints
the error per system, held-out points separately.

    python experiments/validate_comm.py [--out DIR]
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from simserve.comm import collective_time
from simserve.comm.cli import busbw_factor
from simserve.comm.compile import compiled
from simserve.network import build_topology

GiB, MiB, KiB = 2**30, 2**20, 2**10

_SWEEP_4X_H100 = ("nccl-tests all_reduce_perf -b 8 -e 1G -f 2 -g 4 on 4x H100 80GB HBM3 (NCCL 2.26.2, graph 0), "
                  "out-of-place time: a public benchmark write-up's log")

# (system, hardware, nodes, gpus, op, algo, bytes, metric, measured, role, source)
POINTS = [
    ("8x H100", "h100-sxm", 1, 2, "allreduce", "ring", GiB, "busbw_GBps", 329.0, "held-out",
     "comm.md 2: real 8x H100 node, NCCL, NVLS off"),
    ("8x H100", "h100-sxm", 1, 4, "allreduce", "ring", GiB, "busbw_GBps", 355.0, "held-out",
     "comm.md 2: real 8x H100 node, NCCL, NVLS off"),
    ("8x H100", "h100-sxm", 1, 8, "allreduce", "ring", GiB, "busbw_GBps", 361.0, "held-out",
     "comm.md 2: real 8x H100 node, NCCL, NVLS off (link rate from NCCL topo.h, not fitted)"),
    ("8x H100", "h100-sxm", 1, 8, "allreduce", "nvls", 4 * GiB, "busbw_GBps", 480.0, "fit",
     "NVIDIA/nccl-tests#212 (sjeaugey): ~480 GB/s NVLS busbw; nvls_efficiency fitted to it"),
    # NVLS on part of a node: NVIDIA/nccl#1455, 8x H100 SXM, NCCL_ALGO=NVLS, 2-4 GiB: busbw 365-370 GB/s
    # on 2 to 4 GPUs, then 420, 440, 460, 480 on 5 to 8 (algbw 258 on 5 up to about 273 on 8)
    ("8x H100", "h100-sxm", 1, 2, "allreduce", "nvls", 4 * GiB, "busbw_GBps", 367.0, "held-out",
     "NVIDIA/nccl#1455: NVLS on 2 GPUs, busbw 365-370 GB/s"),
    ("8x H100", "h100-sxm", 1, 4, "allreduce", "nvls", 4 * GiB, "busbw_GBps", 367.0, "held-out",
     "NVIDIA/nccl#1455: NVLS on 4 GPUs, busbw 365-370 GB/s"),
    ("8x H100", "h100-sxm", 1, 5, "allreduce", "nvls", 4 * GiB, "busbw_GBps", 420.0, "held-out",
     "NVIDIA/nccl#1455: NVLS on 5 GPUs, busbw 420 GB/s"),
    ("8x H100", "h100-sxm", 1, 8, "allreduce", "ring", 8, "time_us", 25.0, "fit",
     "comm.md 5 notes: ~25 us small AR without graphs; eager_launch_us fitted to it"),
    ("8x H100", "h100-sxm", 1, 8, "allreduce", "ring", MiB, "time_us", 42.0, "held-out",
     "issue 12: nccl-tests default (no graph) 1 MiB on 8x H100"),
    ("8x A100", "a100", 1, 8, "allreduce", "ring", GiB, "busbw_GBps", 232.0, "fit",
     "comm.md 5: Azure 8x A100 AR busbw; scale-up efficiency 0.773 fitted to it"),
    ("8x A100", "a100", 1, 8, "allreduce", "ring", 8, "time_us", 45.0, "fit",
     "comm.md 5: ~45 us nccl-tests small AR on A100; eager_launch_us fitted to it"),
    ("8x A100", "a100", 1, 8, "allreduce", "ring", MiB, "time_us", 51.0, "held-out",
     "issue 12: nccl-tests 1 MiB AR on 8x A100"),
    ("8x MI300X", "mi300x", 1, 8, "allreduce", "ring", GiB, "busbw_GBps", 317.0, "held-out",
     "comm.md 5: 8x MI300X RCCL AR busbw (link efficiency from the ROCm blog's 48 of 64 GB/s)"),
    ("8x MI300X", "mi300x", 1, 8, "allreduce", "ring", 8, "time_us", 45.0, "fit",
     "comm.md 5: ~45 us rccl-tests-style small AR; eager_launch_us fitted to it"),
    ("8x MI300X", "mi300x", 1, 8, "allreduce", "ring", MiB, "time_us", 82.0, "held-out",
     "issue 12: rccl-tests 1 MiB AR on 8x MI300X"),
    ("8x B200", "b200", 1, 8, "allreduce", "nvls", 4 * GiB, "busbw_GBps", 830.0, "fit",
     "comm.md 5: 830 GB/s NVLS AR busbw on 8x B200; nvls_efficiency fitted to it"),
    ("2x8 H100", "h100-sxm", 2, 16, "allreduce", "auto", 128 * KiB, "time_us", 45.0, "held-out",
     "comm.md 5 (NVIDIA/nccl#1244): ~45 us small AR on 2 nodes, IB NDR"),
    ("2x8 H100", "h100-sxm", 2, 2, "sendrecv", "direct", GiB, "busbw_GBps", 47.0, "fit",
     "NVIDIA/nccl-tests#290: 46-48 GB/s per NDR NIC; scale-out efficiency 0.94 fitted to it"),
    ("4x8 H100", "h100-sxm", 4, 32, "allreduce", "auto", GiB, "busbw_GBps", 366.0, "held-out",
     "issue 12: NCCL on 4 nodes x 8 H100, 8 NDR NICs each"),
    ("8x H800", "h800", 1, 8, "allreduce", "ring", GiB, "busbw_GBps", 160.0, "held-out",
     "DeepSeek-V3 technical report (arXiv 2412.19437) 3.2.2: H800 'NVLink offers a bandwidth of 160 GB/s'"),
    # RoCE v2 400G (dgx-h100-roce) and NVLS_TREE: NVIDIA/nccl#1221, 8x H100 nodes with 8 x 400G RoCE
    # NICs, NCCL 2.19.3, all_reduce_perf -b 4G -e 8G; the algorithm NCCL ran is not in the log
    ("4x8 H100 RoCE", "h100-sxm@dgx-h100-roce", 4, 32, "allreduce", "ring", 8 * GiB, "busbw_GBps", 320.0, "fit",
     "NVIDIA/nccl#1221: 4 nodes, NVLS off, 320 GB/s; the RoCE efficiency 0.81 fitted to it"),
    ("4x8 H100 RoCE", "h100-sxm@dgx-h100-roce", 4, 32, "allreduce", "auto", 8 * GiB, "busbw_GBps", 320.0,
     "held-out", "NVIDIA/nccl#1221: 4 nodes, NVLS on, the same 320 GB/s (NCCL 2.19's tuner kept the ring)"),
    ("2x8 H100 RoCE", "h100-sxm@dgx-h100-roce", 2, 16, "allreduce", "ring", 8 * GiB, "busbw_GBps", 330.0,
     "held-out", "NVIDIA/nccl#1221: 2 nodes, NVLS off, 330 GB/s"),
    ("2x8 H100 RoCE", "h100-sxm@dgx-h100-roce", 2, 16, "allreduce", "nvls_tree", 8 * GiB, "busbw_GBps", 430.0,
     "held-out", "NVIDIA/nccl#1221: 2 nodes, NVLS on (NVLS_TREE across nodes), 430 GB/s"),
    ("2x8 H20", "h20", 2, 16, "allreduce", "nvls_tree", 8, "time_us", 47.5, "held-out",
     "NVIDIA/nccl#1244: 2 nodes x 8 H20, 8 CX7 NDR each, NCCL 2.21.5, NCCL_ALGO=NVLSTree, 8 B: 47.5 us"),
] + [
    ("4x H100", "h100-sxm", 1, 4, "allreduce", "auto", size, "time_us", us, "held-out", _SWEEP_4X_H100)
    for size, us in ((64 * KiB, 24.56), (256 * KiB, 26.80), (MiB, 28.06), (4 * MiB, 45.05), (16 * MiB, 104.4),
                     (64 * MiB, 326.6), (256 * MiB, 1184.9), (GiB, 4525.6))
]


def _topology(hardware, nodes):
    # nccl-tests time the library alone: no engine kernels (auto = NCCL's / RCCL's own tuner);
    # "gpu@topology" names a topology other than the GPU's default one
    gpu, _, name = hardware.partition("@")
    return build_topology(gpu, nodes=nodes, name=name or None, launch="eager", kernels="none")


def _ranks(topo, nodes, gpus, op):
    per = gpus // nodes
    ranks = [m * topo.gpus_per_node + i for m in range(nodes) for i in range(per)]
    return [0, topo.gpus_per_node] if op == "sendrecv" else ranks


def model(point) -> tuple[float, str]:
    system, hw, nodes, gpus, op, algo, nbytes, metric, *_ = point
    topo = _topology(hw, nodes)
    ranks = _ranks(topo, nodes, gpus, op)
    t, used = collective_time(topo, op, algo, ranks, nbytes)
    proto = compiled(topo, op, used, ranks, nbytes).protocol
    value = t * 1e6 if metric == "time_us" else nbytes / t * busbw_factor(op, len(ranks)) / 1e9
    return value, f"{used}{'/' + proto if proto else ''}"


def _write(out: Path, rows) -> None:
    with open(out / "points.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["| system | op | GPUs | size | metric | measured | modelled | error | algorithm | role | source |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['op']} | {r['gpus']} | {r['bytes']} | {r['metric']} | {r['measured']:g} | "
                     f"{r['modelled']:.1f} | {r['error']:+.1%} | {r['algorithm']} | {r['role']} | {r['source']} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def _plots(out: Path, rows) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 5))
    for k, metric in enumerate(("busbw_GBps", "time_us")):
        for role, marker in (("fit", "s"), ("held-out", "o")):
            pts = [r for r in rows if r["metric"] == metric and r["role"] == role]
            ax[k].scatter([r["measured"] for r in pts], [r["modelled"] for r in pts], marker=marker, label=role)
            for r in pts:
                ax[k].annotate(f"{r['system']} {r['bytes']}", (r["measured"], r["modelled"]), fontsize=6)
        lim = max(max(r["measured"], r["modelled"]) for r in rows if r["metric"] == metric) * 1.1
        ax[k].plot([0, lim], [0, lim], "k--", lw=0.8)
        ax[k].set(xlabel=f"measured {metric}", ylabel=f"modelled {metric}", title=metric)
        ax[k].legend()
    fig.tight_layout()
    fig.savefig(out / "parity.png", dpi=120)
    plt.close(fig)
    systems = [("8x H100", "h100-sxm", 1, 8), ("8x A100", "a100", 1, 8), ("8x MI300X", "mi300x", 1, 8),
               ("2x8 H100", "h100-sxm", 2, 16), ("4x8 H100", "h100-sxm", 4, 32),
               ("2x8 H100 RoCE", "h100-sxm@dgx-h100-roce", 2, 16), ("4x8 H100 RoCE", "h100-sxm@dgx-h100-roce", 4, 32)]
    fig, ax = plt.subplots(figsize=(8, 5))
    sizes = [2.0**e for e in range(3, 34)]
    for name, hw, nodes, gpus in systems:
        topo = _topology(hw, nodes)
        ranks = _ranks(topo, nodes, gpus, "allreduce")
        ys = [s / collective_time(topo, "allreduce", "auto", ranks, s)[0] * busbw_factor("allreduce", gpus) / 1e9
              for s in sizes]
        line, = ax.plot(sizes, ys, label=f"{name} (model, auto)")
        for r in rows:
            if r["system"] == name and r["op"] == "allreduce":
                bw = r["measured"] if r["metric"] == "busbw_GBps" else \
                    r["bytes"] / (r["measured"] * 1e-6) * busbw_factor("allreduce", r["gpus"]) / 1e9
                ax.scatter([r["bytes"]], [bw], color=line.get_color(), marker="o" if r["role"] == "held-out" else "s")
    ax.set(xscale="log", yscale="log", xlabel="message size (B)", ylabel="all-reduce busbw (GB/s)",
           title="modelled (lines) vs measured (o held out, s fitted), nccl-tests style, no CUDA graphs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "validate_comm"))
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in POINTS:
        value, used = model(p)
        rows.append({"system": p[0], "op": p[4], "gpus": p[3], "bytes": p[6], "metric": p[7], "measured": p[8],
                     "modelled": value, "error": value / p[8] - 1, "algorithm": used, "role": p[9], "source": p[10]})
    _write(out, rows)
    if not args.no_plots:
        _plots(out, rows)
    held = [r for r in rows if r["role"] == "held-out"]
    print(f"{len(held)} of {len(rows)} points held out of every fit")
    for system in dict.fromkeys(r["system"] for r in rows):
        for role in ("held-out", "fit"):
            errs = [abs(r["error"]) for r in rows if r["system"] == system and r["role"] == role]
            if errs:
                print(f"{system:10s} {role:9s} n={len(errs)} mean |error| {sum(errs) / len(errs):6.1%}  "
                      f"max {max(errs):6.1%}")
    errs = [abs(r["error"]) for r in held]
    print(f"all held-out: mean |error| {sum(errs) / len(errs):.1%}, max {max(errs):.1%}, "
          f"rms {math.sqrt(sum(e * e for e in errs) / len(errs)):.1%}")


if __name__ == "__main__":
    main()
