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

from common import (Findings, fits, fmt_pct, fmt_x, kv_capacity_tokens, parse_args, ratio, simulate,
                    static_config, static_metrics)

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
                    rows.append({**base, "fits": False})
                    continue
                r = simulate(static_config(model, hw, prec, isl, osl, batch, tp=tp, pp=pp, dp=dp, whole_hbm=True))
                m = static_metrics(r)
                gpus = tp * pp * dp
                rows.append({**base, "fits": True, **m,
                             "tps_node_formula": m["tps_formula"] * NODE_GPUS / gpus})
    return pd.DataFrame(rows)


def link_sweeps(smoke: bool) -> pd.DataFrame:
    """Fig. 7a (TP size at batch 32), 7b (PP8 P2P share vs link speed, batch 512), 7c (TP8 TTFT and
    all-reduce vs aggregate link speed), all Llama-3.1-405B FP4, MLPerf, 8x MI355X."""
    isl, osl = (1024, 4) if smoke else (9428, 684)
    model, hw = "llama-3.1-405b", "mi355x"
    rows = []
    for tp in ((1, 8) if smoke else (1, 2, 4, 8)):
        m = static_metrics(simulate(static_config(model, hw, FP4, isl, osl, 4 if smoke else 32, tp=tp, whole_hbm=True)))
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
    axes[0].set(xlabel="TP size", title="7a: 405B FP4, MLPerf, batch 32")
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


def findings(df: pd.DataFrame, links: pd.DataFrame, f: Findings):
    ok = df[df.fits]
    la = ok[(ok.model == "llama-3.1-70b") & (ok.dataset == "LongAlpaca")]
    ml = ok[(ok.model == "llama-3.1-405b") & (ok.dataset == "MLPerf")]
    b = int(la.batch.max()) if len(la) else 0
    ref_b = 256 if (la.batch == 256).any() else b

    def speedups(sub, a, others, batch):
        x = get(sub, layout=a, batch=batch)
        out = {}
        for o in others:
            y = get(sub, layout=o, batch=batch)
            out[o] = None if x is None or y is None else (ratio(y.prefill_s, x.prefill_s), ratio(y.decode_s, x.decode_s))
        return out

    def pair(v):
        return "does not fit" if v is None else f"({v[0]:.2f}x, {v[1]:.2f}x)"

    # TP lowers latency at every batch
    for label, sub in (("70B LongAlpaca", la), ("405B MLPerf", ml)):
        if not len(sub):
            continue
        wins = 0
        total = 0
        for batch, g in sub[sub.dp == 1].groupby("batch"):
            best = g.loc[g.prefill_s.idxmin()].layout
            bestd = g.loc[g.decode_s.idxmin()].layout
            total += 1
            wins += best == "TP8" and bestd == "TP8"
        f.claim(f"{label}: TP8 has the lowest TTFT and TPOT at every batch size (Fig. 5/6)",
                "TP8 best everywhere", f"TP8 best for both at {wins}/{total} batch sizes", wins == total)
    s70 = speedups(la, "TP8", ("TP4", "TP2"), ref_b)
    f.claim(f"70B LongAlpaca batch {ref_b}: TP8 (prefill, decode) speed-up over TP4 / TP2",
            "(1.87x, 1.67x) / (3.61x, 3.01x)", f"{pair(s70['TP4'])} / {pair(s70['TP2'])}",
            all(v is not None and v[0] > v[1] > 1 for v in s70.values()))
    s405 = speedups(ml, "TP8", ("TP4", "TP4_PP2", "TP2"), 256)
    tp2_fit = s405["TP2"]
    if tp2_fit is None:
        top = int(ml[ml.layout == "TP2"].batch.max()) if (ml.layout == "TP2").any() else None
        alt = speedups(ml, "TP8", ("TP2",), top)["TP2"] if top else None
        tp2_text = f"TP2 does not fit 256; at batch {top}: {pair(alt)}"
    else:
        tp2_text = pair(tp2_fit)
    f.claim("405B MLPerf batch 256: TP8 (prefill, decode) speed-up over TP4 / TP4_PP2 / TP2",
            "(1.89x, 1.61x) / (1.90x, 1.62x) / (3.67x, 2.81x)",
            f"{pair(s405['TP4'])} / {pair(s405['TP4_PP2'])} / {tp2_text}",
            all(v is not None and v[0] > 1 and v[1] > 1 for v in (s405["TP4"], s405["TP4_PP2"])))
    if s405["TP4"] and s405["TP4_PP2"]:
        f.claim("405B batch 256: TP4 slightly faster than TP4_PP2 (P2P delay)", "TP4 < TP4_PP2",
                f"TP4_PP2/TP4 prefill {s405['TP4_PP2'][0] / s405['TP4'][0]:.3f}x",
                s405["TP4_PP2"][0] >= s405["TP4"][0])
    short = ok[(ok.model == "llama-3.1-70b") & (ok.dataset != "LongAlpaca")]
    x, y = get(la, layout="TP8", batch=256), get(short, layout="TP8", batch=256)
    if x is not None and y is not None:
        f.claim("70B TP8 batch 256: short prompts prefill faster than LongAlpaca", "1.63x",
                fmt_x(ratio(x.prefill_s, y.prefill_s)), x.prefill_s > y.prefill_s)
    pp_only = la[la.layout.isin(["PP2", "PP4", "PP8"]) & (la.batch == 1)]
    nopar1 = get(la, layout="NoPar", batch=1)
    if len(pp_only) and nopar1 is not None:
        worst = pp_only.prefill_s.max() / nopar1.prefill_s
        f.claim("PP alone gives no latency benefit (70B LongAlpaca, batch 1)", "PP ~ NoPar TTFT/TPOT",
                f"PP TTFT / NoPar up to {worst:.3f}x; TPOT {pp_only.decode_s.max() / nopar1.decode_s:.3f}x",
                worst >= 0.99)

    # Fig. 7
    a = links[links.figure == "7a"].set_index("tp")
    if {1, 2, 4, 8} <= set(a.index):
        red8, red4 = 1 - a.prefill_s[8] / a.prefill_s[1], 1 - a.prefill_s[4] / a.prefill_s[1]
        f.claim("7a: TP8 / TP4 reduce TTFT vs TP1 (405B, MLPerf, batch 32)", "68% / 38%",
                f"{fmt_pct(red8)} / {fmt_pct(red4)}", red8 > red4 > 0)
        f.claim("7a: TP2 prefills slower than TP1 (all-reduce on one link)", "TP2 > TP1",
                f"TP2/TP1 = {a.prefill_s[2] / a.prefill_s[1]:.3f}x", a.prefill_s[2] > a.prefill_s[1])
        shares = [a.allreduce_share_prefill[t] for t in (2, 4, 8)]
        f.claim("7a: all-reduce-to-TTFT ratio almost unchanged across TP2/4/8", "almost unchanged",
                " / ".join(fmt_pct(s) for s in shares), max(shares) - min(shares) < 0.15)
    bb = links[links.figure == "7b"].set_index("link_GBps")
    if len(bb):
        f.claim("7b: PP8 batch 512 P2P share of TTFT, even at 32 GB/s links", "< 0.5%",
                f"{fmt_pct(bb.p2p_share_prefill.iloc[0])} at {bb.index[0]} GB/s, "
                f"{fmt_pct(bb.p2p_share_prefill.iloc[-1])} at {bb.index[-1]} GB/s",
                bb.p2p_share_prefill.max() < 0.005)
    c = links[links.figure == "7c"].set_index("link_GBps")
    if 256 in c.index and 512 in c.index:
        ttft_cut = 1 - c.prefill_s[512] / c.prefill_s[256]
        share_cut = c.allreduce_share_prefill[256] - c.allreduce_share_prefill[512]
        f.claim("7c: doubling aggregate link speed (256 -> 512 GB/s) cuts TP8 TTFT", "34%", fmt_pct(ttft_cut),
                ttft_cut > 0)
        f.claim("7c: ... and the all-reduce-to-TTFT ratio", "by 7.7%",
                f"{fmt_pct(c.allreduce_share_prefill[256])} -> {fmt_pct(c.allreduce_share_prefill[512])} "
                f"({100 * share_cut:.1f} points)", share_cut > 0)

    # Fig. 8
    for label, sub, ds in (("70B LongAlpaca", la, "LongAlpaca"), ("405B MLPerf", ml, "MLPerf")):
        if not len(sub):
            continue
        best_pp = sub[sub.layout.str.startswith("PP")].tps_node_formula.max()
        best_tp = sub[sub.layout.str.startswith("TP")].tps_node_formula.max()
        f.claim(f"{label}: PP delivers more throughput than TP (node-filled, best batch; Fig. 8)", "PP > TP",
                f"PP {best_pp:.0f} vs TP/hybrid {best_tp:.0f} tok/s per node", best_pp > best_tp)
    dp = ml[(ml.layout == "DP8")]
    pp8 = get(ml, layout="PP8", batch=512)
    if len(dp) and pp8 is not None:
        d = dp.loc[dp.batch.idxmax()]
        f.claim("405B MLPerf: max batch NoPar per GPU (data-parallel)", "32 per GPU",
                f"{int(d.batch) // 8} per GPU", int(d.batch) // 8 == 32)
        f.claim("405B MLPerf: PP8 batch 512 TPS over DP8 at its largest batch", "1.35x",
                fmt_x(ratio(pp8.tps_formula, d.tps_formula)), pp8.tps_formula > d.tps_formula)
        f.claim("... PP8 prefill and decode latency over DP8's", "16.03x and 4.24x",
                f"{ratio(pp8.prefill_s, d.prefill_s):.2f}x and {ratio(pp8.decode_s, d.decode_s):.2f}x", True)
    for label, model, datasets, bmax, paper in (
            ("70B", "llama-3.1-70b", ("LongAlpaca", "BBH+GSM8K+HumanEval"), 1024, ("4.2x", "37x")),
            ("405B", "llama-3.1-405b", ("MLPerf", "BBH+GSM8K+HumanEval"), 512, ("13.8x", "44x"))):
        got = []
        for ds in datasets:
            sub = ok[(ok.model == model) & (ok.dataset == ds)]
            top = get(sub, layout="PP8", batch=bmax)
            ref = get(sub, layout="NoPar", batch=1)
            got.append(None if top is None or ref is None else ratio(top.tps_formula, ref.tps_formula))
        if all(g is not None for g in got):
            f.claim(f"{label} PP8 batch {bmax} TPS over NoPar batch 1 (long / short dataset)",
                    f"{paper[0]} / {paper[1]}", f"{got[0]:.1f}x / {got[1]:.1f}x", got[1] > got[0] > 1)


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

    f = Findings("Study 1: parallelisation strategies for dense LLMs",
                 "seed 003 (Topcu et al., arXiv:2603.05692): Llama-3.1-70B FP8 on 8x MI325X, Llama-3.1-405B FP4 on 8x MI355X")
    f.setup = [
        "One static batch per point (all requests at t=0, run to completion), average ISL/OSL of each "
        "dataset (paper Table 2), fast fidelity, auto all-reduce algorithm; prefill chunks of 32k tokens.",
        "TTFT = the batch's prefill latency (admission to last first token); TPOT = one decode step "
        "(last first token to last finish over OSL-1); TPS = the paper's formula B x OSL / (TTFT + OSL x TPOT).",
        "Node-filled TPS multiplies a layout's TPS by 8 / its GPUs (data-parallel copies, as the paper's N_DP).",
        "405B FP4 weights with FP8 KV cache (the paper's '32 MLPerf prompts per GPU' implies 8-bit KV).",
        "Points that do not fit the KV cache are listed in points.csv with fits=False.",
    ]
    findings(df, links, f)
    f.note("P2P share of TTFT (7b): seed 003 reports under 0.5% for PP8 even at 32 GB/s. simserve sends "
           "hidden states + residual (vLLM's IntermediateTensors, bf16) for every prefill token over the one "
           "xGMI link between consecutive stages, so the share is a few percent at full speed and grows as "
           "links slow. The paper likely counts a smaller payload or overlaps transfers with compute; "
           "simserve does not overlap a stage's send with its next micro-batch's compute.")
    f.note("PP and batch latency (Fig. 5/6 'TP8 best everywhere', 'TP4 faster than TP4_PP2', PP8 vs DP8 "
           "latency ratios): simserve runs PP as vLLM does, with the batch split over pp micro-batches (virtual "
           "engines) that flow through the stages concurrently, so a PP8 batch prefills ~8x faster than the same "
           "batch on one GPU. Seed 003 treats a PP batch as passing the stages one after another (no latency "
           "benefit at any batch). Hence at batches >= 32 simserve's PP8 has the lowest batch TTFT, TP4_PP2 beats "
           "TP4, and PP8's latency penalty over DP8 is smaller (4.3x/1.5x vs 16x/4.2x). This is a modelling "
           "difference in how PP schedules a batch, not a tuning matter; TP8 still wins TPOT up to batch 128-256 "
           "and everything at batch 1-16.")
    f.note("TP2 vs TP1 (7a) at batch 32 x 9428 tokens: prefill is compute-bound and simserve's two-shot "
           "all-reduce over the single xGMI link between two GPUs costs less than half the compute saved, so TP2 "
           "is faster than TP1 here; simserve does reproduce TP2 > TP1 at smaller prefills (ISL 2048, batch 8; "
           "tests/test_parallelism.py). The paper's ring all-reduce and its MI355X kernel model make all-reduce "
           "relatively more expensive.")
    f.note("Short vs long prompts (TP8, batch 256): the paper's 1.63x is far below the ~86x ratio of prompt "
           "tokens (9092 vs 106); simserve's prefill scales with tokens (92x). The paper's figure is likely a "
           "different quantity (e.g. per-request TTFT inside a larger run); we report it as a disagreement.")
    f.note("Memory: seed 003's accounting (HBM minus weights = KV) is used (engine.gpu_memory_utilization=1, "
           "no reserve); simserve still keeps an activation workspace for 16k-token prefill chunks, so NoPar "
           "405B holds 27 MLPerf sequences per GPU (power-of-two batch 16) where the paper says 32.")
    f.note("Absolute speed-ups differ from the paper's: simserve's MI325X/MI355X efficiencies are borrowed from "
           "MI300X (not measured on these GPUs), and all-reduce uses the tuner's best algorithm on the mesh "
           "(direct one-/two-shot), not only ring. No constant was tuned to these figures.")
    f.note("TP2 at batch 256 on 405B MLPerf: with FP8 KV (258 KB/token) 256 x 10112 tokens need ~668 GB, "
           "more than the 374 GB two MI355X leave after FP4 weights; the paper's figure includes TP2 at 256, "
           "so it must assume a smaller KV cache there (inconsistent with its 32-per-GPU DP figure). "
           "simserve compares at TP2's largest batch instead.")
    f.note("NoPar-at-batch-1 normalisation: the paper does not say whether its TPS baseline is one GPU or a "
           "node of data-parallel copies; simserve uses one GPU at batch 1 (the figures' stated baseline).")
    f.write(args.out, args.smoke, args.started)


if __name__ == "__main__":
    main()
