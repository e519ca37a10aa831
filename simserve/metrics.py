"""Summary metrics of a run, defined as vLLM's benchmark defines them (DESIGN.md section 5).

TTFT = first token - arrival; TPOT = (finish - first token) / (OSL - 1); ITL = every gap between
consecutive tokens of a request; E2E = finish - arrival; queue delay = first admission - arrival.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

TIME_KINDS = ("compute", "allreduce", "allgather", "reducescatter", "alltoall", "p2p", "bubble")
REQUEST_COLUMNS = ["request_id", "replica", "status", "arrival_s", "isl", "osl", "scheduled_s",
                   "first_token_s", "finish_s", "ttft_s", "tpot_s", "e2e_s", "queue_delay_s",
                   "itl_max_s", "preemptions", "reject_reason"]


def distribution(values) -> dict[str, float]:
    """mean and percentiles of a sample; order-independent (sorted first), NaN-free; zeros if empty."""
    arr = np.sort(np.asarray(values, dtype=float))
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"mean": math.fsum(arr) / arr.size, "p50": float(p50), "p90": float(p90),
            "p99": float(p99), "max": float(arr[-1])}


def requests_frame(requests) -> pd.DataFrame:
    rows = []
    for r in requests:
        completed = not r.reject_reason and not math.isnan(r.finish_s)
        tpot = (r.finish_s - r.first_token_s) / (r.osl - 1) if completed and r.osl > 1 else math.nan
        rows.append((r.id, r.replica, "completed" if completed else ("rejected" if r.reject_reason else "unfinished"),
                     r.arrival_s, r.isl, r.osl, r.scheduled_s, r.first_token_s, r.finish_s,
                     r.first_token_s - r.arrival_s, tpot, r.finish_s - r.arrival_s,
                     r.scheduled_s - r.arrival_s, r.itl_max_s if completed else math.nan,
                     r.preemptions, r.reject_reason))
    return pd.DataFrame(rows, columns=REQUEST_COLUMNS).sort_values("request_id", kind="stable").reset_index(drop=True)


def summarize(df: pd.DataFrame, itl_gaps: np.ndarray, *, busy_s: dict[str, float], num_gpus: int,
              sim_time_s: float, slo_ttft_s: float | None, slo_tpot_s: float | None) -> dict:
    done = df[df.status == "completed"]
    start = float(df.arrival_s.min()) if len(df) else 0.0
    end = float(done.finish_s.max()) if len(done) else start
    duration = max(end - start, 1e-12)
    good = np.ones(len(done), dtype=bool)
    if slo_ttft_s is not None:
        good &= done.ttft_s.to_numpy() <= slo_ttft_s
    if slo_tpot_s is not None:
        good &= ~(done.tpot_s.to_numpy() > slo_tpot_s)      # NaN TPOT (one-token outputs) passes
    gpu_time = num_gpus * sim_time_s
    breakdown = {k: (busy_s.get(k, 0.0) / gpu_time if gpu_time > 0 else 0.0) for k in TIME_KINDS}
    breakdown["idle"] = max(0.0, 1.0 - math.fsum(breakdown.values()))
    return {
        "num_requests": int(len(df)),
        "num_completed": int(len(done)),
        "num_rejected": int((df.status == "rejected").sum()),
        "ttft": distribution(done.ttft_s), "tpot": distribution(done.tpot_s),
        "itl": distribution(itl_gaps), "e2e": distribution(done.e2e_s),
        "queue_delay": distribution(done.queue_delay_s),
        "throughput_output_tokens_per_s": float(done.osl.sum()) / duration if len(done) else 0.0,
        "throughput_requests_per_s": len(done) / duration if len(done) else 0.0,
        "goodput_requests_per_s": float(good.sum()) / duration if len(done) else 0.0,
        "time_breakdown": breakdown,
        "gpu_utilization": 1.0 - breakdown["idle"],
        "sim_time_s": sim_time_s,
    }


def static_batch_formula(df: pd.DataFrame) -> dict | None:
    """Seed 003's analytical throughput for a static batch, from the first batch the simulation ran:
    output tokens / (prefill latency + OSL x decode latency), where prefill latency runs from the
    batch's admission to its last first token and decode latency is one decode step (the decode
    phase, in which the whole batch steps together, divided by its OSL - 1 steps)."""
    done = df[df.status == "completed"]
    if done.empty:
        return None
    first = done[done.scheduled_s == done.scheduled_s.min()]
    osl = int(first.osl.iloc[0])
    if (first.osl != osl).any() or osl < 2:
        return None
    start = float(first.scheduled_s.min())
    prefill_s = float(first.first_token_s.max()) - start
    decode_s = (float(first.finish_s.max()) - float(first.first_token_s.max())) / (osl - 1)
    batch = len(first)
    return {"batch_size": batch, "prefill_latency_s": prefill_s, "decode_latency_s": decode_s,
            "formula_output_tokens_per_s": batch * osl / (prefill_s + osl * decode_s),
            "simulated_output_tokens_per_s": batch * osl / (float(first.finish_s.max()) - start)}
