"""Study 4: where scaling stops (seed 002, "LLM inference serving as a distributed system" talk).

Llama-3.1-70B FP8 on 8x H100 nodes (IB NDR between nodes). Add GPUs three ways and watch latency
and throughput per GPU:
- partitioning by TP: 2, 4, 8 inside a node, then 16 and 32 across 2 and 4 nodes;
- partitioning by PP: 2, 4, 8 inside a node, 16 over 2 nodes;
- replication by DP: TP2 replicas x 1..16 (2..32 GPUs).
Latency: one request alone (ISL 1024, OSL 256): its E2E and TPOT. Throughput: 256 such requests
arriving at once, continuous batching (sarathi), output tokens/s per GPU. The knee is the first
GPU count after which doubling the GPUs improves latency by less than 10% or lowers throughput per
GPU by more than 25%. Two worker processes; every run records its fit and preemptions.

    python experiments/study4_scaling_knee.py [--smoke] [--out DIR]
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from multiprocessing import Pool
from pathlib import Path

from common import parse_args, run_health, simulate
from findings import Claim, above, below, near, run_check, valid_runs, publish

TITLE = "Study 4: where scaling stops"
SOURCE = ("seed 002 (talk abstract: partitioning vs replication, "
          "diminishing returns)")

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


def run_point(job):
    family, (tp, pp, dp, nodes), mode, base = job
    cfg = {**base, "parallelism": {"tp": tp, "pp": pp, "dp": dp},
           "cluster": {**base["cluster"], "nodes": nodes}}
    if mode == "throughput":        # the same load per replica (weak scaling for DP), so batches stay full
        cfg["workload"] = {**base["workload"], "num_requests": base["workload"]["num_requests"] * dp}
    else:
        cfg["workload"] = {**base["workload"], "num_requests": 1}
    r = simulate(cfg)
    s = r.summary
    return {"family": family, "tp": tp, "pp": pp, "dp": dp, "nodes": nodes, "gpus": tp * pp * dp, "mode": mode,
            "e2e_p50_s": s["e2e"]["p50"], "tpot_p50_s": s["tpot"]["p50"],
            "throughput_tok_s": s["throughput_output_tokens_per_s"],
            "tok_s_per_gpu": s["throughput_output_tokens_per_s"] / (tp * pp * dp),
            "allreduce_share": s["time_breakdown"]["allreduce"], "p2p_share": s["time_breakdown"]["p2p"],
            "bubble_share": s["time_breakdown"]["bubble"], **run_health(r, static=False)}


def main():
    args = parse_args("study4_scaling_knee", __doc__)
    families = {k: v[:2] for k, v in FAMILIES.items()} if args.smoke else FAMILIES
    base = dict(BASE)
    if args.smoke:
        base["workload"] = {"lengths": {"isl": 256, "osl": 8}, "arrivals": {"process": "batch"}, "num_requests": 16}
    jobs = [(fam, lay, mode, base) for fam, lays in families.items() for lay in lays for mode in ("latency", "throughput")]
    with Pool(2) as pool:
        runs = pd.DataFrame(pool.map(run_point, jobs))
    runs.to_csv(args.out / "runs.csv", index=False)
    plot(runs, args.out)
    publish(args.out, TITLE, SOURCE, claims, args.smoke, args.started, "study4_scaling_knee.py")


def scaling(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per layout: latency-mode E2E/TPOT beside throughput-mode tok/s (valid runs only)."""
    keys = ["family", "tp", "pp", "dp", "nodes", "gpus"]
    ok = valid_runs(runs)
    lat = ok[ok["mode"] == "latency"][keys + ["e2e_p50_s", "tpot_p50_s"]]
    thr = ok[ok["mode"] == "throughput"][keys + ["throughput_tok_s", "tok_s_per_gpu", "allreduce_share",
                                                 "p2p_share", "bubble_share"]]
    return lat.merge(thr, on=keys)


def plot(runs: pd.DataFrame, out: Path):
    res = scaling(runs)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for family, g in res.groupby("family", sort=False):
        axes[0].plot(g.gpus, g.e2e_p50_s, "o-", label=family)
        axes[1].plot(g.gpus, g.tok_s_per_gpu, "o-", label=family)
        axes[2].plot(g.gpus, g.throughput_tok_s, "o-", label=family)
        k, _, _ = knee(list(g.gpus), list(g.e2e_p50_s), list(g.tok_s_per_gpu), replicate=family.startswith("DP"))
        for ax, col in zip(axes, ("e2e_p50_s", "tok_s_per_gpu", "throughput_tok_s")):
            ax.plot([k], [g.set_index("gpus")[col][k]], "k*", ms=12)
    for ax, label in zip(axes, ("single-request E2E (s)", "output tok/s per GPU", "output tok/s (total)")):
        ax.set(xscale="log", xlabel="GPUs", ylabel=label)
        ax.set_xticks(sorted(res.gpus.unique()), [str(x) for x in sorted(res.gpus.unique())])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Llama-3.1-70B FP8 on H100: partitioning (TP, PP) vs replication (DP); star = knee")
    fig.tight_layout()
    fig.savefig(out / "scaling_knee.png", dpi=110)
    plt.close(fig)


def family_claims(res: pd.DataFrame) -> list[Claim]:
    out = []
    for family, g in res.groupby("family", sort=False):
        g = g.sort_values("gpus")
        gpus, lat, tput = list(g.gpus), list(g.e2e_p50_s), list(g.tok_s_per_gpu)
        k, gain, drop = knee(gpus, lat, tput, replicate=family.startswith("DP"))
        keep = tput[-1] / tput[0]
        if family.startswith("DP"):
            out.append(Claim(f"{family}: per-GPU throughput at {gpus[-1]} GPUs / at {gpus[0]}", "replication keeps it",
                             float("nan"), keep, "x", near(1.0),
                             f"DP replicas exchange nothing, so only the per-replica load decides: {tput[0]:.0f} -> "
                             f"{tput[-1]:.0f} tok/s per GPU."))
            continue
        last = 100 * (1 - lat[-1] / lat[-2])
        out.append(Claim(f"{family}: single-request E2E gain of the last doubling ({gpus[-2]} -> {gpus[-1]} GPUs)",
                         "diminishing returns", float("nan"), last, "%", below(100 * LATENCY_GAIN),
                         f"knee at {k} GPUs; the last doubling still gains {last:.0f}% (the 10% threshold is this "
                         f"study's, the seed gives none)."))
        out.append(Claim(f"{family}: per-GPU throughput at {gpus[-1]} GPUs / at {gpus[0]}", "partitioning loses it",
                         float("nan"), keep, "x", below(1.0), f"{tput[0]:.0f} -> {tput[-1]:.0f} tok/s per GPU."))
    return out


def claims(out: Path) -> tuple[list[Claim], list[str], list[str]]:
    runs = pd.read_csv(out / "runs.csv")
    res = scaling(runs)
    found = family_claims(res)
    tp = res[res.family.str.startswith("TP")].set_index("gpus")
    dp = res[res.family.str.startswith("DP")].set_index("gpus")
    if 16 in tp.index and 8 in tp.index:
        d = 100 * (tp.allreduce_share[16] - tp.allreduce_share[8])
        found.append(Claim("TP8 -> TP16 (leaving the NVLink domain): change in all-reduce share of GPU time",
                           "TP confined to one high-bandwidth domain", float("nan"), d, "pts", above(0.0),
                           f"{100 * tp.allreduce_share[8]:.1f}% -> {100 * tp.allreduce_share[16]:.1f}%."))
    top = max(set(tp.index) & set(dp.index), default=None)
    if top:
        found.append(Claim(f"single-request E2E, DP-of-TP2 / TP at {top} GPUs ('partitioning lowers latency')",
                           "TP for latency", float("nan"), float(dp.e2e_p50_s[top] / tp.e2e_p50_s[top]), "x",
                           above(1.0), f"TP {tp.e2e_p50_s[top]:.2f} s vs DP-of-TP2 {dp.e2e_p50_s[top]:.2f} s."))
    wl = BASE["workload"]["lengths"]
    setup = [f"Llama-3.1-70B FP8, 8x H100 per node, IB NDR between nodes; ISL {wl['isl']}, OSL {wl['osl']} (full run; --smoke: 256 / 8).",
             "Latency: one request alone (E2E, TPOT p50). Throughput: 256 requests per replica at t=0, sarathi "
             "continuous batching (max 256 sequences, 2048-token chunks); output tokens/s per GPU.",
             f"Knee: the first GPU count after which the next step improves single-request E2E by < "
             f"{LATENCY_GAIN:.0%} or loses > {TPUT_DROP:.0%} of per-GPU throughput (this study's thresholds; the "
             "seed is a talk abstract with no numbers).",
             run_check({"runs.csv": runs})]
    return found, setup, []


if __name__ == "__main__":
    main()
