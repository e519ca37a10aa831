"""Study 2: communication patterns of TP, PP and hybrids (seed 000, "Characterizing Communication
Patterns in Distributed LLM Inference", 2025).

Llama-3.1-70B FP8 on 8x H100 (one DGX node) and 16x H100 (two nodes, IB NDR, one 400G NIC per
GPU): bytes moved per request (by link type) and TTFT / TPOT / E2E for a short (128 in, 128 out)
and a long (4096 in, 256 out) request, alone and in a batch of 8.

    python experiments/study2_comm_patterns.py [--smoke] [--out DIR]
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from common import Findings, parse_args, simulate, static_config

FP8 = {"weights": "fp8", "kv": "fp8", "activations": "bf16"}
LAYOUTS = [  # name, tp, pp, nodes
    ("TP8", 8, 1, 1), ("PP8", 1, 8, 1), ("TP4xPP2", 4, 2, 1), ("TP2xPP4", 2, 4, 1),
    ("TP16", 16, 1, 2), ("PP16", 1, 16, 2), ("TP8xPP2", 8, 2, 2),
]
SEQS = {"short": (128, 128), "long": (4096, 256)}


def main():
    args = parse_args("study2_comm_patterns", __doc__)
    seqs = {"short": (128, 4), "long": (1024, 4)} if args.smoke else SEQS
    layouts = [l for l in LAYOUTS if l[0] in ("TP8", "PP8", "TP8xPP2")] if args.smoke else LAYOUTS
    batches = (1,) if args.smoke else (1, 8)
    rows = []
    for seq, (isl, osl) in seqs.items():
        for name, tp, pp, nodes in layouts:
            for batch in batches:
                cfg = static_config("llama-3.1-70b", "h100-sxm", FP8, isl, osl, batch, tp=tp, pp=pp,
                                    nodes=nodes, topology="dgx-h100")
                s = simulate(cfg).summary
                per_req = s["bytes_moved_per_request"]
                rows.append({"seq": seq, "isl": isl, "osl": osl, "layout": name, "tp": tp, "pp": pp,
                             "nodes": nodes, "batch": batch, "gpus": tp * pp,
                             "bytes_per_request": sum(per_req.values()),
                             "network_bytes_per_request": per_req.get("network", 0.0),
                             "scale_up_bytes_per_request": sum(v for k, v in per_req.items() if k != "network"),
                             "ttft_s": s["ttft"]["mean"], "tpot_s": s["tpot"]["mean"], "e2e_s": s["e2e"]["mean"],
                             "allreduce_share": s["time_breakdown"]["allreduce"],
                             "p2p_share": s["time_breakdown"]["p2p"], "bubble_share": s["time_breakdown"]["bubble"]})
    df = pd.DataFrame(rows)
    df.to_csv(args.out / "comm_patterns.csv", index=False)

    one = df[df.batch == 1]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    names = [l[0] for l in layouts]
    x = np.arange(len(names))
    for i, seq in enumerate(seqs):
        d = one[one.seq == seq].set_index("layout").reindex(names)
        axes[0].bar(x + (i - 0.5) * 0.4, d.bytes_per_request / 1e9, 0.4, label=seq)
        axes[1].bar(x + (i - 0.5) * 0.4, d.e2e_s, 0.4, label=seq)
        axes[2].bar(x + (i - 0.5) * 0.4, 1e3 * d.tpot_s, 0.4, label=seq)
    for ax, label in zip(axes, ("GB moved per request", "E2E latency (s)", "TPOT (ms)")):
        ax.set_xticks(x, names, rotation=30)
        ax.set(ylabel=label, yscale="log" if "GB" in label else "linear")
        ax.legend()
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Llama-3.1-70B FP8 on H100 nodes, one request at a time")
    fig.tight_layout()
    fig.savefig(args.out / "comm_patterns.png", dpi=110)
    plt.close(fig)

    f = Findings("Study 2: communication patterns of TP, PP and hybrids",
                 "seed 000 (Characterizing Communication Patterns in Distributed LLM Inference, 2025; abstract only)")
    f.setup = ["Llama-3.1-70B FP8, 8x H100 DGX node (NVSwitch) and two such nodes over IB NDR (400 Gb/s per GPU).",
               f"Sequences: {', '.join(f'{k} ISL {v[0]} / OSL {v[1]}' for k, v in seqs.items())}; "
               f"static batches of {', '.join(map(str, batches))}; fast fidelity, auto all-reduce.",
               "The seed is an abstract: its claims are qualitative, so the table compares trends."]
    for seq in seqs:
        d = one[one.seq == seq].set_index("layout")
        tp_b, pp_b = d.bytes_per_request["TP8"], d.bytes_per_request["PP8"]
        f.claim(f"{seq}: TP moves far more data than PP (8 GPUs)", "TP >> PP",
                f"TP8 {tp_b / 1e9:.2f} GB vs PP8 {pp_b / 1e9:.3f} GB per request ({tp_b / pp_b:.0f}x)", tp_b > 5 * pp_b)
        f.claim(f"{seq}: PP has the highest per-request latency (8 GPUs)", "PP slowest",
                f"E2E TP8 {d.e2e_s['TP8']:.2f} s, PP8 {d.e2e_s['PP8']:.2f} s", d.e2e_s["PP8"] > d.e2e_s["TP8"])
        if "TP4xPP2" in d.index:
            mid = d.loc["TP4xPP2"]
            f.claim(f"{seq}: a hybrid sits between TP and PP in both bytes and latency", "balanced",
                    f"TP4xPP2 {mid.bytes_per_request / 1e9:.2f} GB, E2E {mid.e2e_s:.2f} s",
                    pp_b < mid.bytes_per_request < tp_b and d.e2e_s["TP8"] <= mid.e2e_s <= d.e2e_s["PP8"])
    if "TP16" in one.layout.values:
        for seq in seqs:
            d = one[one.seq == seq].set_index("layout")
            f.claim(f"{seq}: TP across two nodes puts all-reduce on the network; TP8xPP2 keeps TP inside a node",
                    "PP across nodes is cheaper", f"network GB/request TP16 {d.network_bytes_per_request['TP16'] / 1e9:.2f}"
                    f" vs TP8xPP2 {d.network_bytes_per_request['TP8xPP2'] / 1e9:.4f}; TPOT "
                    f"{1e3 * d.tpot_s['TP16']:.1f} vs {1e3 * d.tpot_s['TP8xPP2']:.1f} ms",
                    d.network_bytes_per_request["TP16"] > d.network_bytes_per_request["TP8xPP2"])
    s, l = one[one.seq == "short"].set_index("layout"), one[one.seq == "long"].set_index("layout")
    f.claim("TP's response-time advantage over PP is largest for short sequences", "TP best for brief sequences",
            f"PP8/TP8 E2E: short {s.e2e_s['PP8'] / s.e2e_s['TP8']:.2f}x, long {l.e2e_s['PP8'] / l.e2e_s['TP8']:.2f}x",
            s.e2e_s["PP8"] / s.e2e_s["TP8"] >= l.e2e_s["PP8"] / l.e2e_s["TP8"])
    f.note("The seed gives no numbers in the stored abstract; simserve's magnitudes (bytes per request) follow "
           "from the model shape: TP all-reduces 2 x hidden x 2 bytes per token per layer, PP sends hidden "
           "states + residual once per stage boundary.")
    f.write(args.out, args.smoke, args.started)


if __name__ == "__main__":
    main()
