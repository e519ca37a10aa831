"""Study 5: techniques from the survey (seed 004, a survey of communication in distributed LLM
inference).

Part 1: direct all-reduce (one-shot "DDA flat", two-shot "DDA tree") vs ring on an 8x MI300X xGMI
full mesh: collective times for decode-sized (8 KB-1 MB) and prefill-sized (4-256 MB) messages, and
the TPOT of Llama-3.1-70B BF16 with TP8 under each algorithm (static batch decode).
Part 2: expert load balancing under skewed routing, Mixtral-8x7B with EP8: round-robin vs balanced
expert placement as the Zipf skew grows. Runs only when simserve supports `parallelism.ep` and
`moe.placement`; otherwise it reports "skipped: EP not available".

    python experiments/study5_survey_techniques.py [--smoke] [--out DIR]
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from common import Findings, parse_args, simulate, static_config
from simserve.comm import collective_time
from simserve.errors import SimserveError
from simserve.network import build_topology

ALGOS = ("ring", "one_shot", "two_shot")


def ep_available() -> bool:
    try:
        simulate({"model": "mixtral-8x7b", "parallelism": {"ep": 8},
                  "workload": {"lengths": {"isl": 128, "osl": 8}, "num_requests": 4, "arrivals": {"process": "batch"}}})
        return True
    except SimserveError:
        return False


def main():
    args = parse_args("study5_survey_techniques", __doc__)
    f = Findings("Study 5: techniques from the survey", "seed 004 (survey of communication in distributed LLM inference)")

    # Part 1a: collective times
    topo = build_topology("mi300x", 1, 8, "mi300x-mesh")
    sizes = [2 ** k for k in range(13, 29, 5 if args.smoke else 1)]
    rows = []
    for nbytes in sizes:
        for algo in (*ALGOS, "auto"):
            t, used = collective_time(topo, "allreduce", algo, list(range(8)), float(nbytes))
            rows.append({"bytes": nbytes, "algo": algo, "used": used, "time_s": t})
    coll = pd.DataFrame(rows)
    coll.to_csv(args.out / "mi300x_allreduce.csv", index=False)
    p = coll.pivot(index="bytes", columns="algo", values="time_s")
    direct = p[["one_shot", "two_shot"]].min(axis=1)
    gain = 1 - direct / p["ring"]

    # Part 1b: TPOT of 70B TP8 under each algorithm
    isl, osl, batch = (512, 4, 8) if args.smoke else (2048, 128, 32)
    tp_rows = []
    for algo in (*ALGOS, "auto"):
        cfg = static_config("llama-3.1-70b", "mi300x", {"weights": "bf16", "kv": "bf16", "activations": "bf16"},
                            isl, osl, batch, tp=8, topology="mi300x-mesh", allreduce=algo)
        r = simulate(cfg)
        done = r.requests
        first = float(done.first_token_s.max())
        tp_rows.append({"algo": algo, "prefill_s": first,
                        "decode_step_s": float(done.finish_s.max() - first) / (osl - 1),
                        "allreduce_share": r.summary["time_breakdown"]["allreduce"]})
    tpot = pd.DataFrame(tp_rows).set_index("algo")
    tpot.to_csv(args.out / "mi300x_tp8_tpot.csv")

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for algo in ALGOS:
        axes[0].plot(p.index, 1e6 * p[algo], marker=".", label=algo)
    axes[0].set(xscale="log", yscale="log", xlabel="bytes", ylabel="all-reduce time (us)", title="8x MI300X xGMI mesh")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    axes[1].bar(tpot.index, 1e3 * tpot.decode_step_s)
    axes[1].set(ylabel="decode step / TPOT (ms)", title=f"Llama-3.1-70B BF16 TP8, batch {batch}, ISL {isl}")
    fig.tight_layout()
    fig.savefig(args.out / "mi300x_direct_allreduce.png", dpi=110)
    plt.close(fig)

    f.setup = ["Part 1: 8x MI300X, xGMI full mesh (7 links per GPU); collective times on simserve's idle network; "
               f"Llama-3.1-70B BF16 TP8, static batch {batch}, ISL {isl}, OSL {osl}.",
               "Part 2: Mixtral-8x7B, EP8, Zipf-skewed expert popularity, round_robin vs balanced placement."]
    dec = gain[(gain.index >= 8 * 1024) & (gain.index <= 1024 ** 2)]
    pre = gain[gain.index >= 4 * 1024 ** 2]
    f.claim("direct all-reduce vs ring, decode sizes (8 KB-1 MB)", "10-50% better",
            f"{100 * dec.min():.0f}-{100 * dec.max():.0f}% less time", dec.min() > 0)
    if len(pre):
        f.claim("direct all-reduce vs ring, prefill sizes (>= 4 MB)", "10-30% better",
                f"{100 * pre.min():.0f}-{100 * pre.max():.0f}% less time", pre.min() > 0)
    best_direct = tpot.decode_step_s[["one_shot", "two_shot"]].min()
    cut = 1 - best_direct / tpot.decode_step_s["ring"]
    f.claim("TPOT with direct all-reduce vs ring (70B TP8)", "about 10% lower", f"{100 * cut:.1f}% lower", cut > 0)

    # Part 2: expert load balancing
    if ep_available():
        skews = (0.0, 1.2) if args.smoke else (0.0, 0.6, 1.0, 1.4, 1.8)
        moe_rows = []
        for s in skews:
            for placement in ("round_robin", "balanced", "balanced+8"):
                routing = {"routing": "uniform"} if s == 0 else {"routing": "zipf", "zipf_s": s}
                moe_cfg = {**routing, "placement": placement.split("+")[0]}
                if "+" in placement:       # 8 redundant copies of the hottest experts (one per EP rank)
                    moe_cfg["redundant_experts"] = 8
                cfg = {"model": "mixtral-8x7b", "parallelism": {"ep": 8, "tp": 1},
                       "cluster": {"hardware": "h100-sxm", "topology": "dgx-h100"},
                       "moe": moe_cfg,
                       "scheduler": {"policy": "static", "batch_size": 64, "max_batch_size": 64},
                       "workload": {"lengths": {"isl": 512 if not args.smoke else 128, "osl": 64 if not args.smoke else 4},
                                    "arrivals": {"process": "batch"}, "num_requests": 64 if not args.smoke else 8}}
                try:
                    sm = simulate(cfg).summary
                except SimserveError as exc:
                    moe_rows.append({"zipf_s": s, "placement": placement, "error": str(exc)})
                    continue
                moe_rows.append({"zipf_s": s, "placement": placement, "e2e_s": sm["e2e"]["mean"],
                                 "tpot_s": sm["tpot"]["mean"], "ttft_s": sm["ttft"]["mean"],
                                 "alltoall_share": sm["time_breakdown"]["alltoall"]})
        moe = pd.DataFrame(moe_rows)
        moe.to_csv(args.out / "moe_ep8_balance.csv", index=False)
        ok = moe.dropna(subset=["tpot_s"]) if "tpot_s" in moe else moe.iloc[0:0]
        if len(ok):
            fig, ax = plt.subplots(figsize=(6, 3.6))
            for placement, g in ok.groupby("placement"):
                ax.plot(g.zipf_s, 1e3 * g.tpot_s, "o-", label=placement)
            ax.set(xlabel="Zipf skew s (0 = uniform)", ylabel="TPOT (ms)", title="Mixtral-8x7B EP8")
            ax.legend()
            fig.tight_layout()
            fig.savefig(args.out / "moe_ep8_balance.png", dpi=110)
            plt.close(fig)
            piv = ok.pivot(index="zipf_s", columns="placement", values="tpot_s")
            top = piv.index.max()
            f.claim("EP all-to-all / expert time grows with routing skew (round robin)", "skew hurts",
                    f"TPOT {1e3 * piv.round_robin.iloc[0]:.1f} -> {1e3 * piv.round_robin[top]:.1f} ms",
                    piv.round_robin[top] > piv.round_robin.iloc[0])
            if "balanced" in piv:
                f.claim(f"load-balanced expert placement recovers latency under skew (s={top})",
                        "balancing helps", f"TPOT / round-robin: balanced {piv.balanced[top] / piv.round_robin[top]:.2f}x"
                        + (f", balanced + 8 redundant experts {piv['balanced+8'][top] / piv.round_robin[top]:.2f}x"
                           if "balanced+8" in piv else ""),
                        bool(piv.min(axis=1)[top] < piv.round_robin[top]))
                f.note("Mixtral-8x7B has 8 experts: with EP8 each rank holds exactly one, so placement alone cannot "
                       "balance load (balanced = round robin); redundant copies of hot experts spread the tokens but add "
                       "expert weights to read per rank, which at small decode batches can cost more than the imbalance. "
                       "EP/MoE is another helper's work in progress (issue 5): rerun when it lands.")
        else:
            f.claim("expert load balancing under skew (EP8)", "balancing helps",
                    "skipped: EP runs failed: " + "; ".join(moe.get("error", pd.Series()).astype(str).unique()[:1]), None)
    else:
        f.claim("expert load balancing under skew (EP8)", "balancing helps", "skipped: EP not available", None)
        f.note("Part 2 skipped: EP not available (simserve refuses parallelism.ep > 1 in this build; "
               "MoE/EP is issue 5). Re-run this script once it lands.")
    f.note("The survey's 10-50% / 10-30% figures are Meta's DDA measured against RCCL on MI300X; "
           "simserve's ring is an idealised multi-channel ring on the full mesh, so the measured RCCL "
           "baseline's own inefficiencies are not in simserve's ring.")
    f.write(args.out, args.smoke, args.started)


if __name__ == "__main__":
    main()
