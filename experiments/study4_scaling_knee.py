"""Study 4: where scaling stops (seed 002, "LLM inference serving as a distributed system" talk).

Llama-3.1-70B FP8 on 8x H100 nodes (IB NDR between nodes). Add GPUs three ways and watch latency
and throughput per GPU:
- partitioning by TP: 2, 4, 8 inside a node, then 16 and 32 across 2 and 4 nodes;
- partitioning by PP: 2, 4, 8 inside a node, 16 over 2 nodes;
- replication by DP: TP2 replicas x 1..16 (2..32 GPUs).
Latency: one request alone (ISL 1024, OSL 256): its E2E and TPOT. Throughput: 256 such requests
arriving at once, continuous batching (sarathi), output tokens/s per GPU. The knee is the first
GPU count after which doubling the GPUs improves latency by less than 10% or lowers throughput per
GPU by more than 25%. Runs through `simserve.sweep.run_sweep` (two worker processes).

    python experiments/study4_scaling_knee.py [--smoke] [--out DIR]
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from common import Findings, parse_args
from simserve.sweep import run_sweep

BASE = {"model": "llama-3.1-70b", "precision": {"weights": "fp8", "kv": "fp8", "activations": "bf16"},
        "cluster": {"hardware": "h100-sxm", "topology": "dgx-h100"},
        "scheduler": {"policy": "sarathi", "max_batch_size": 256, "max_batched_tokens": 8192, "chunk_size": 2048},
        "router": {"policy": "least_outstanding"},
        "workload": {"lengths": {"isl": 1024, "osl": 256}, "arrivals": {"process": "batch"}, "num_requests": 256},
        "fidelity": "fast"}
FAMILIES = {  # name: list of (tp, pp, dp, nodes)
    "TP (partition)": [(2, 1, 1, 1), (4, 1, 1, 1), (8, 1, 1, 1), (16, 1, 1, 2), (32, 1, 1, 4)],
    "PP (partition)": [(1, 2, 1, 1), (1, 4, 1, 1), (1, 8, 1, 1), (1, 16, 1, 2)],
    "DP of TP2 (replicate)": [(2, 1, 1, 1), (2, 1, 2, 1), (2, 1, 4, 1), (2, 1, 8, 2), (2, 1, 16, 4)],
}
LATENCY_GAIN, TPUT_DROP = 0.10, 0.25


def knee(gpus, latency, tput_per_gpu, replicate=False):
    """First GPU count after which one more step gains < 10% latency (partitioning only: replication
    never changes one request's latency) or loses > 25% per-GPU throughput."""
    for i in range(len(gpus) - 1):
        gain = 1 - latency[i + 1] / latency[i]
        drop = 1 - tput_per_gpu[i + 1] / tput_per_gpu[i]
        if (gain < LATENCY_GAIN and not replicate) or drop > TPUT_DROP:
            return gpus[i], gain, drop
    return gpus[-1], None, None


def main():
    args = parse_args("study4_scaling_knee", __doc__)
    families = {k: v[:2] for k, v in FAMILIES.items()} if args.smoke else FAMILIES
    base = dict(BASE)
    if args.smoke:
        base["workload"] = {"lengths": {"isl": 256, "osl": 8}, "arrivals": {"process": "batch"}, "num_requests": 16}
    points = []
    for family, layouts in families.items():
        for tp, pp, dp, nodes in layouts:
            # throughput: the same load per replica (weak scaling for DP), so batches stay full
            for mode, n in (("latency", 1), ("throughput", base["workload"]["num_requests"] * dp)):
                points.append({"parallelism.tp": tp, "parallelism.pp": pp, "parallelism.dp": dp,
                               "cluster.nodes": nodes, "workload.num_requests": n, "seed": 0})
    sweep_dir = args.out / "sweep"
    if sweep_dir.exists():            # a fresh sweep each time the study runs
        for p in sweep_dir.iterdir():
            p.unlink()
    df = run_sweep({"base": base, "points": points}, sweep_dir, workers=2)

    rows = []
    for family, layouts in families.items():
        for tp, pp, dp, nodes in layouts:
            sel = df[(df["parallelism.tp"] == tp) & (df["parallelism.pp"] == pp) & (df["parallelism.dp"] == dp)
                     & (df["cluster.nodes"] == nodes)]
            lat = sel[sel["workload.num_requests"] == 1].iloc[0]
            thr = sel[sel["workload.num_requests"] != 1].iloc[0]
            rows.append({"family": family, "tp": tp, "pp": pp, "dp": dp, "nodes": nodes, "gpus": tp * pp * dp,
                         "status": f"{lat.status}/{thr.status}",
                         "e2e_alone_s": lat.e2e_p50_s, "tpot_alone_s": lat.tpot_p50_s,
                         "throughput_tok_s": thr.throughput_output_tokens_per_s,
                         "tok_s_per_gpu": thr.output_tokens_per_s_per_gpu,
                         "allreduce_share": thr.allreduce_share, "p2p_share": thr.p2p_share,
                         "bubble_share": thr.bubble_share})
    res = pd.DataFrame(rows)
    res.to_csv(args.out / "scaling.csv", index=False)

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    f = Findings("Study 4: where scaling stops", "seed 002 (talk abstract: partitioning vs replication, diminishing returns)")
    f.setup = ["Llama-3.1-70B FP8, 8x H100 per node, IB NDR between nodes; ISL 1024, OSL 256.",
               "Latency: one request alone (E2E, TPOT p50). Throughput: 256 requests per replica at t=0, sarathi continuous "
               "batching (max 256 sequences, 2048-token chunks); output tokens/s per GPU.",
               f"Knee: the first GPU count after which the next step improves single-request E2E by < "
               f"{LATENCY_GAIN:.0%} or loses > {TPUT_DROP:.0%} of per-GPU throughput."]
    for family, g in res.groupby("family", sort=False):
        axes[0].plot(g.gpus, g.e2e_alone_s, "o-", label=family)
        axes[1].plot(g.gpus, g.tok_s_per_gpu, "o-", label=family)
        axes[2].plot(g.gpus, g.throughput_tok_s, "o-", label=family)
        k, gain, drop = knee(list(g.gpus), list(g.e2e_alone_s), list(g.tok_s_per_gpu),
                               replicate=family.startswith("DP"))
        for ax, col in zip(axes, ("e2e_alone_s", "tok_s_per_gpu", "throughput_tok_s")):
            ax.plot([k], [g.set_index("gpus")[col][k]], "k*", ms=12)
        why = ("no knee within the range" if gain is None else
               f"next step: latency {100 * gain:+.0f}% better, per-GPU throughput {100 * drop:+.0f}% lost")
        f.claim(f"{family}: adding GPUs hits diminishing returns", "a knee exists",
                f"knee at {k} GPUs ({why})", gain is not None if not family.startswith("DP") else None)
    for ax, label in zip(axes, ("single-request E2E (s)", "output tok/s per GPU", "output tok/s (total)")):
        ax.set(xscale="log", xlabel="GPUs", ylabel=label)
        ax.set_xticks(sorted(res.gpus.unique()), [str(x) for x in sorted(res.gpus.unique())])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Llama-3.1-70B FP8 on H100: partitioning (TP, PP) vs replication (DP); star = knee")
    fig.tight_layout()
    fig.savefig(args.out / "scaling_knee.png", dpi=110)
    plt.close(fig)

    tp = res[res.family.str.startswith("TP")].set_index("gpus")
    dp = res[res.family.str.startswith("DP")].set_index("gpus")
    if 16 in tp.index and 8 in tp.index:
        f.claim("TP across nodes: all-reduce cost grows once TP leaves the NVLink domain",
                "TP confined to one high-bandwidth domain",
                f"all-reduce share TP8 {tp.allreduce_share[8]:.1%} -> TP16 {tp.allreduce_share[16]:.1%}; "
                f"E2E alone {tp.e2e_alone_s[8]:.2f} -> {tp.e2e_alone_s[16]:.2f} s",
                tp.allreduce_share[16] > tp.allreduce_share[8])
    common = sorted(set(tp.index) & set(dp.index))
    if common:
        top = max(common)
        f.claim(f"replication keeps per-GPU throughput where partitioning loses it ({top} GPUs)",
                "partitioning != replication", f"DP {dp.tok_s_per_gpu[top]:.0f} vs TP {tp.tok_s_per_gpu[top]:.0f} tok/s/GPU",
                dp.tok_s_per_gpu[top] > tp.tok_s_per_gpu[top])
        f.claim(f"partitioning lowers single-request latency, replication does not ({top} GPUs)",
                "TP for latency", f"E2E alone TP {tp.e2e_alone_s[top]:.2f} s vs DP-of-TP2 {dp.e2e_alone_s[top]:.2f} s",
                tp.e2e_alone_s[top] < dp.e2e_alone_s[top])
    f.note("The seed is a talk abstract with no numbers; the knee thresholds (10% latency, 25% per-GPU "
           "throughput) are this study's choice, stated above, not the seed's.")
    f.write(args.out, args.smoke, args.started)


if __name__ == "__main__":
    main()
