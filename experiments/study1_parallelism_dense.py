"""Study 1: parallelisation strategies for dense LLMs (seed 003, Topcu et al. 2026, arXiv:2603.05692).

Llama-3.1-70B FP8 on one 8x MI325X node (LongAlpaca and BBH+GSM8K+HumanEval average lengths) and
Llama-3.1-405B FP4 on one 8x MI355X node (MLPerf and the short mix); layouts NoPar, TP2/4/8,
PP2/4/8, TP2xPP2, TP4xPP2, TP2xPP4 and NoPar data-parallel copies (DP8); every power-of-two batch
that fits the KV cache; one static batch per point, as the paper (Table 2 averages, its TPS formula).

    python experiments/study1_parallelism_dense.py [--smoke] [--out DIR]
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from common import fits, kv_capacity_tokens, parse_args, simulate, static_config, static_metrics
from findings import publish
from study1_claims import claims, fp4_batch_7a

TITLE = "Study 1: parallelisation strategies for dense LLMs"
SOURCE = ("seed 003 (Topcu et al., arXiv:2603.05692): Llama-3.1-70B FP8 on 8x MI325X, "
          "Llama-3.1-405B FP4 on 8x MI355X")

FP8 = {"weights": "fp8", "kv": "fp8", "activations": "bf16"}
FP4 = {"weights": "fp4", "kv": "fp8", "activations": "bf16"}   # KV in FP8: the paper's "32 MLPerf prompts per GPU" needs 8-bit KV
SETTINGS = [  # model, hardware, precision, dataset, ISL, OSL, largest batch (seed 003 Table 2, Fig. 5/6/8)
    ("llama-3.1-70b", "mi325x", FP8, "LongAlpaca", 9092, 208, 1024),
    ("llama-3.1-70b", "mi325x", FP8, "BBH+GSM8K+HumanEval", 106, 26, 1024),
    ("llama-3.1-405b", "mi355x", FP4, "MLPerf", 9428, 684, 512),
    ("llama-3.1-405b", "mi355x", FP4, "BBH+GSM8K+HumanEval", 89, 20, 512),
]
LAYOUTS = {  # name: (tp, pp, dp)
    "NoPar": (1, 1, 1), "TP2": (2, 1, 1), "TP4": (4, 1, 1), "TP8": (8, 1, 1),
    "PP2": (1, 2, 1), "PP4": (1, 4, 1), "PP8": (1, 8, 1),
    "TP2_PP2": (2, 2, 1), "TP4_PP2": (4, 2, 1), "TP2_PP4": (2, 4, 1), "DP8": (1, 1, 8),
}
NODE_GPUS = 8


def run_grid(settings, layouts, batches_for) -> pd.DataFrame:
    rows = []
    for model, hw, prec, dataset, isl, osl, max_batch in settings:
        for name, (tp, pp, dp) in layouts.items():
            kv = kv_capacity_tokens(static_config(model, hw, prec, isl, osl, dp, tp=tp, pp=pp, dp=dp, whole_hbm=True))
            for batch in batches_for(max_batch, dp):
                base = {"model": model, "dataset": dataset, "layout": name, "tp": tp, "pp": pp, "dp": dp,
                        "batch": batch, "isl": isl, "osl": osl}
                if not fits(kv, batch // dp, isl, osl):
                    rows.append({**base, "fits": False, "kv_capacity_tokens": kv if kv is not None else 0})
                    continue
                r = simulate(static_config(model, hw, prec, isl, osl, batch, tp=tp, pp=pp, dp=dp, whole_hbm=True))
                m = static_metrics(r)
                gpus = tp * pp * dp
                rows.append({**base, **m, "tps_node_formula": m["tps_formula"] * NODE_GPUS / gpus})
    return pd.DataFrame(rows)


def link_sweeps(smoke: bool) -> pd.DataFrame:
    """Fig. 7a (TP size, at the largest power-of-two batch up to the paper's 32 that fits TP1's KV
    cache: 32 since capacities are stored in binary units, 16 before), 7b (PP8 P2P share vs link speed, batch 512), 7c (TP8 TTFT and
    all-reduce vs aggregate link speed, batch 32), all Llama-3.1-405B FP4, MLPerf, 8x MI355X."""
    isl, osl = (1024, 4) if smoke else (9428, 684)
    model, hw = "llama-3.1-405b", "mi355x"
    kv_tp1 = kv_capacity_tokens(static_config(model, hw, FP4, isl, osl, 1, whole_hbm=True))
    batch_7a = fp4_batch_7a(kv_tp1, 4 if smoke else 32, isl, osl)
    rows = []
    for tp in ((1, 8) if smoke else (1, 2, 4, 8)):
        m = static_metrics(simulate(static_config(model, hw, FP4, isl, osl, batch_7a, tp=tp, whole_hbm=True)))
        rows.append({"figure": "7a", "tp": tp, "pp": 1, "link_GBps": None, **m})
    # 7b: "link speed" is one xGMI link, bidirectional, as the paper's Table 3 (153.6 GB/s); simserve's
    # scale_up_GBps is per GPU per direction over its 7 links: 7 x speed / 2
    for speed in ((153.6, 32.0) if smoke else (153.6, 128.0, 96.0, 64.0, 32.0)):
        cfg = static_config(model, hw, FP4, isl, osl, 16 if smoke else 512, pp=8,
                            links={"scale_up_GBps": 7 * speed / 2}, whole_hbm=True)
        rows.append({"figure": "7b", "tp": 1, "pp": 8, "link_GBps": speed, **static_metrics(simulate(cfg))})
    # 7c: aggregate link speed per GPU (the paper's 256-608 GB/s), taken as per direction
    for agg in ((256, 512) if smoke else (256, 304, 352, 400, 448, 512, 560, 608)):
        cfg = static_config(model, hw, FP4, isl, osl, 4 if smoke else 32, tp=8, links={"scale_up_GBps": agg}, whole_hbm=True)
        rows.append({"figure": "7c", "tp": 8, "pp": 1, "link_GBps": agg, **static_metrics(simulate(cfg))})
    return pd.DataFrame(rows)


def get(df, **where):
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return sel.iloc[0] if len(sel) and bool(sel.iloc[0].get("fits", True)) else None


def plot_latency(df: pd.DataFrame, out):
    groups = list(df.groupby(["model", "dataset"], sort=False))
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.2 * len(groups)), squeeze=False)
    for row, ((model, dataset), g) in enumerate(groups):
        ok = g[g.fits]
        ref = get(ok, layout="NoPar", batch=1)
        for name, lg in ok[ok.dp == 1].groupby("layout", sort=False):
            for col, key in ((0, "prefill_s"), (1, "decode_s")):
                norm = ref[key] if ref is not None else 1.0
                axes[row, col].plot(lg.batch, lg[key] / norm, marker="o", ms=3, label=name)
        for col, label in ((0, "TTFT (batch prefill)"), (1, "TPOT (decode step)")):
            ax = axes[row, col]
            ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel=f"{label} / NoPar@1",
                   title=f"{model} {dataset}")
            ax.grid(alpha=0.3)
        axes[row, 1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "fig5_6_latency_normalised.png", dpi=110)
    plt.close(fig)


def plot_tps(df: pd.DataFrame, out):
    groups = list(df.groupby(["model", "dataset"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
    for col, ((model, dataset), g) in enumerate(groups):
        ok = g[g.fits]
        ref = get(ok, layout="NoPar", batch=1)
        ax = axes[0, col]
        for name, lg in ok.groupby("layout", sort=False):
            ax.plot(lg.batch, lg.tps_formula / (ref.tps_formula if ref is not None else 1), marker="o", ms=3,
                    label=name)
        ax.set(xscale="log", yscale="log", xlabel="global batch size", ylabel="output TPS / NoPar@1",
               title=f"{model}\n{dataset}")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "fig8_tps.png", dpi=110)
    plt.close(fig)


def plot_fig7(links: pd.DataFrame, out):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    a = links[links.figure == "7a"]
    t1 = a[a.tp == 1].prefill_s.iloc[0]
    axes[0].bar([str(t) for t in a.tp], a.prefill_s / t1, color="C0", label="TTFT / TP1")
    axes[0].plot([str(t) for t in a.tp], a.allreduce_share_prefill, "o-", color="C3", label="all-reduce / TTFT")
    axes[0].set(xlabel="TP size", title=f"7a: 405B FP4, MLPerf, batch {int(a.batch_done.iloc[0])}")
    axes[0].legend(fontsize=8)
    b = links[links.figure == "7b"]
    axes[1].plot(b.link_GBps, 100 * b.p2p_share_prefill, "o-")
    axes[1].set(xlabel="xGMI link speed (GB/s, bidirectional)", ylabel="P2P / TTFT (%)",
                title="7b: PP8, batch 512")
    c = links[links.figure == "7c"]
    axes[2].plot(c.link_GBps, c.prefill_s / c.prefill_s.iloc[0], "o-", label="TTFT (norm.)")
    axes[2].plot(c.link_GBps, c.allreduce_prefill_s / c.allreduce_prefill_s.iloc[0], "s-", label="all-reduce (norm.)")
    axes[2].plot(c.link_GBps, c.allreduce_share_prefill, "^--", label="all-reduce / TTFT")
    axes[2].set(xlabel="aggregate link speed per GPU (GB/s)", title="7c: TP8, batch 32")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "fig7_links.png", dpi=110)
    plt.close(fig)


def main():
    args = parse_args("study1_parallelism_dense", __doc__)
    if args.smoke:
        settings = [("llama-3.1-70b", "mi325x", FP8, "LongAlpaca", 1024, 4, 8),
                    ("llama-3.1-70b", "mi325x", FP8, "BBH+GSM8K+HumanEval", 106, 4, 8)]
        layouts = {k: LAYOUTS[k] for k in ("NoPar", "TP8", "PP8")}
    else:
        settings, layouts = SETTINGS, LAYOUTS

    def batches_for(max_batch, dp):
        """Powers of two up to the paper's largest batch; DP8: 1..64 requests per copy."""
        if dp == 1:
            return [2 ** i for i in range(max_batch.bit_length()) if 2 ** i <= max_batch]
        return [dp * 2 ** i for i in range(4 if args.smoke else 7)]

    df = run_grid(settings, layouts, batches_for)
    df.to_csv(args.out / "points.csv", index=False)
    links = link_sweeps(args.smoke)
    links.to_csv(args.out / "fig7_links.csv", index=False)
    plot_latency(df, args.out)
    plot_tps(df, args.out)
    plot_fig7(links, args.out)

    publish(args.out, TITLE, SOURCE, claims, args.smoke, args.started, "study1_parallelism_dense.py")


if __name__ == "__main__":
    main()
