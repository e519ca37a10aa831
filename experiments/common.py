"""Shared helpers for the study scripts: arguments, static-batch runs, fit checks.

Every study script takes `--smoke` (tiny sizes, seconds; used by tests/test_experiments.py) and
`--out DIR` (default experiments/results/<study>/) and writes CSV, PNG figures and findings.md; its
`claims(out)` rebuilds the findings table from the CSVs alone (experiments/findings.py).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from simserve.errors import SimserveError  # noqa: E402
from simserve.simulation import simulate  # noqa: E402

HERE = Path(__file__).resolve().parent
BLOCK_TOKENS = 16


def parse_args(study: str, doc: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds); for tests")
    parser.add_argument("--out", type=Path, default=HERE / "results" / study, help="results folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.started = time.perf_counter()
    return args


def static_config(model, hardware, precision, isl, osl, batch, tp=1, pp=1, dp=1, topology=None,
                  links=None, allreduce="auto", max_batched_tokens=16384, nodes=1, stage_layers="even",
                  whole_hbm=False):
    """A fixed batch of `batch` requests (over all DP copies) arriving at t=0, run to completion
    (seed 003's setting: average ISL/OSL of the dataset, one static batch)."""
    cluster = {"hardware": hardware, "nodes": nodes}
    if topology:
        cluster["topology"] = topology
    if links:
        cluster["links"] = links
    per_replica = max(1, batch // dp)
    # whole_hbm: seed 003's memory accounting (HBM - weights = KV), not vLLM's 90% utilisation
    engine = {"gpu_memory_utilization": 1.0, "reserved_GiB": 0.0} if whole_hbm else {}
    return {"engine": engine,"model": model, "precision": precision, "cluster": cluster,
            "parallelism": {"tp": tp, "pp": pp, "dp": dp, "stage_layers": stage_layers},
            "collectives": {"allreduce": allreduce},
            "scheduler": {"policy": "static", "batch_size": per_replica, "max_batch_size": per_replica,
                          "max_batched_tokens": max_batched_tokens},
            "router": {"policy": "round_robin"},
            "workload": {"lengths": {"isl": isl, "osl": osl}, "arrivals": {"process": "batch"},
                         "num_requests": batch},
            "fidelity": "fast"}


def kv_capacity_tokens(cfg) -> int | None:
    """KV tokens one replica holds under cfg's memory plan (None: the model does not fit)."""
    probe = {**cfg, "workload": {"lengths": {"isl": 16, "osl": 2}, "arrivals": {"process": "batch"},
                                 "num_requests": 1},
             "scheduler": {**cfg["scheduler"], "batch_size": 1}}
    try:
        r = simulate(probe)
    except SimserveError:
        return None
    return min(m["kv_capacity_tokens"] for m in r.summary["memory_per_gpu"])


def fits(kv_tokens: int | None, batch_per_replica: int, isl: int, osl: int) -> bool:
    if kv_tokens is None:
        return False
    per_seq = math.ceil((isl + osl) / BLOCK_TOKENS) * BLOCK_TOKENS
    return batch_per_replica * per_seq <= kv_tokens


def run_health(result, static: bool = True) -> dict:
    """What every study records beside a run's numbers, so no claim rests on an invalid baseline:
    the KV room per replica (tokens), what the largest replica batch needs, whether it fits (the
    memory plan fits and, for a static batch, the whole batch's KV is in the cache at once; a
    continuously batched run only needs the plan to fit) and the run's preemptions."""
    s, req = result.summary, result.requests
    kv = min(m["kv_capacity_tokens"] for m in s["memory_per_gpu"])
    per_replica = int(req.groupby("replica").size().max()) if "replica" in req else len(req)
    tokens_per_seq = int((req.isl + req.osl).max())
    need = per_replica * math.ceil(tokens_per_seq / BLOCK_TOKENS) * BLOCK_TOKENS if static else 0
    return {"kv_capacity_tokens": kv, "kv_needed_tokens": need, "fits": bool(kv > 0 and need <= kv),
            "preemptions": int(s["preemptions"]), "completed": int((req.status == "completed").sum())}


def static_metrics(result) -> dict:
    """Seed 003's quantities from one static batch: prefill latency (the batch's TTFT: admission to
    the last first token), decode latency (one decode step: from the last first token to the last
    finish, over OSL - 1 steps; with PP, one lane's step through the whole pipeline), the paper's
    TPS formula and the simulated TPS, and the shares of the prefill spent in all-reduce (of the
    replica's GPU-time in prefill iterations) and in pipeline P2P (along one lane's path)."""
    req, tl, s = result.requests, result.timeline, result.summary
    done = req[req.status == "completed"]
    start = float(done.scheduled_s.min())
    first = float(done.first_token_s.max())
    prefill_s = first - start
    osl = int(done.osl.iloc[0])
    decode_s = float(done.finish_s.max() - first) / max(osl - 1, 1)
    batch = len(done)
    eps = 1e-9 * max(first, 1.0)
    it = tl[(tl.kind == "iteration") & (tl.replica == 0) & (tl.end_s <= first + eps)]
    busy = float((it.end_s - it.start_s).sum())
    allreduce = float(it.allreduce_s.sum())
    p2p = tl[(tl.kind == "p2p") & (tl.replica == 0) & (tl.end_s <= first + eps)]
    lanes = max(1, int(s["layout"]["pp"]))
    p2p_path_s = float((p2p.end_s - p2p.start_s).sum()) / lanes
    return {
        "batch_done": batch, "prefill_s": prefill_s, "decode_s": decode_s,
        "ttft_mean_s": float(done.ttft_s.mean()), "tpot_mean_s": float(done.tpot_s.mean()),
        "tps_formula": batch * osl / (prefill_s + osl * decode_s),
        "tps_sim": float(s["throughput_output_tokens_per_s"]),
        "allreduce_share_prefill": allreduce / busy if busy > 0 else 0.0,
        "allreduce_prefill_s": allreduce * (prefill_s / busy) if busy > 0 else 0.0,
        "p2p_share_prefill": p2p_path_s / prefill_s if prefill_s > 0 else 0.0,
        "allreduce_share": s["time_breakdown"]["allreduce"], "p2p_share": s["time_breakdown"]["p2p"],
        "bubble_share": s["time_breakdown"]["bubble"],
        "bytes_moved": float(sum(s["bytes_moved"].values())), "num_gpus": s["num_gpus"],
        "sim_wall_s": s["wall_time_s"], **run_health(result),
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def fmt_x(x: float) -> str:
    return f"{x:.2f}x"


def fmt_pct(x: float) -> str:
    return f"{100 * x:.1f}%"
