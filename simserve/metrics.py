"""Summary metrics of a run, defined as vLLM's benchmark defines them (docs/architecture.md (contracts)).

TTFT = first token - arrival; TPOT = (finish - first token) / (OSL - 1); ITL = every gap between
consecutive tokens of a request; E2E = finish - arrival; queue delay = first admission - arrival.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

# `host`: the GPUs wait for the engine's CPU work (scheduling, input preparation, sampling);
# `swap`: they wait for KV copies to / from host memory (swap preemption, engine/swap.py)
TIME_KINDS = ("compute", "allreduce", "allgather", "reducescatter", "alltoall", "p2p", "bubble", "host", "swap")
OPTIONAL_KINDS = ("host", "swap")     # present only when the run spends such time


def distribution(values) -> dict[str, float]:
    """mean and percentiles of a sample; order-independent (sorted first), NaN-free; zeros if empty.
    A weighted sample (engine.tokens.ItlSample) computes the same of its expanded values."""
    if hasattr(values, "distribution"):
        return values.distribution()
    arr = np.sort(np.asarray(values, dtype=float))
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"mean": math.fsum(arr) / arr.size, "p50": float(p50), "p90": float(p90),
            "p99": float(p99), "max": float(arr[-1])}


def summarize(df: pd.DataFrame, itl_gaps: np.ndarray, *, busy_s: dict[str, float], num_gpus: int,
              sim_time_s: float, slo_ttft_s: float | None, slo_tpot_s: float | None,
              slo_e2e_s: float | None = None) -> dict:
    mask = (df.status == "completed").to_numpy()
    done = {name: df[name].to_numpy()[mask] for name in ("ttft_s", "tpot_s", "e2e_s", "queue_delay_s")}
    completed = int(mask.sum())         # (columns, not the frame's rows: no copy of the whole frame)
    start = float(df.arrival_s.min()) if len(df) else 0.0
    end = float(df.finish_s.to_numpy()[mask].max()) if completed else start
    duration = max(end - start, 1e-12)
    good = np.ones(completed, dtype=bool)
    if slo_ttft_s is not None:
        good &= done["ttft_s"] <= slo_ttft_s
    if slo_tpot_s is not None:
        good &= ~(done["tpot_s"] > slo_tpot_s)      # NaN TPOT (one-token outputs) passes
    if slo_e2e_s is not None:
        good &= done["e2e_s"] <= slo_e2e_s
    isl, osl = (float(df[name].to_numpy()[mask].sum()) for name in ("isl", "osl"))
    gpu_time = num_gpus * sim_time_s
    # `host` appears when the run's runtime spends host time (not for `ideal`), `swap` when it swaps
    breakdown = {k: (busy_s.get(k, 0.0) / gpu_time if gpu_time > 0 else 0.0) for k in TIME_KINDS
                 if k not in OPTIONAL_KINDS or k in busy_s}
    breakdown["idle"] = max(0.0, 1.0 - math.fsum(breakdown.values()))
    return {
        "num_requests": int(len(df)),
        "num_completed": completed,
        "num_rejected": int((df.status == "rejected").sum()),
        "ttft": distribution(done["ttft_s"]), "tpot": distribution(done["tpot_s"]),
        "itl": distribution(itl_gaps), "e2e": distribution(done["e2e_s"]),
        "queue_delay": distribution(done["queue_delay_s"]),
        "throughput_output_tokens_per_s": osl / duration if completed else 0.0,
        "throughput_input_tokens_per_s": isl / duration if completed else 0.0,
        "throughput_total_tokens_per_s": (isl + osl) / duration if completed else 0.0,
        "throughput_requests_per_s": completed / duration if completed else 0.0,
        "goodput_requests_per_s": float(good.sum()) / duration if completed else 0.0,
        "time_breakdown": breakdown,
        "gpu_utilization": 1.0 - breakdown["idle"] - breakdown.get("host", 0.0) - breakdown.get("swap", 0.0),
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


# -- one naming scheme: the summary's keys, flattened ------------------------------------------
DISTRIBUTIONS = ("ttft", "tpot", "itl", "e2e", "queue_delay")    # seconds
STATS = ("mean", "p50", "p90", "p99", "max")


def flat_summary(summary: dict) -> dict:
    """summary.json's numbers under flat names, by one rule: a distribution's statistic is
    `<key>_<stat>_s` (summary["ttft"]["p99"] -> ttft_p99_s), a time-breakdown share is
    `time_breakdown_<kind>`, scalars keep their key. The sweep CSV's columns are these names."""
    flat = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for key in DISTRIBUTIONS:
        for stat in STATS:
            flat[f"{key}_{stat}_s"] = summary[key][stat]
    for kind, share in summary.get("time_breakdown", {}).items():
        flat[f"time_breakdown_{kind}"] = share
    return flat


# -- vLLM benchmark_serving's result fields ----------------------------------------------------
def vllm_benchmark(requests: pd.DataFrame, itl_gaps, summary: dict, percentiles=(90, 99)) -> dict:
    """The fields vLLM's benchmarks/benchmark_serving.py writes to its --save-result JSON, with
    its definitions: duration from the first request to the last finish; TPOT = (E2E - TTFT) /
    (output tokens - 1); ITL = every inter-token gap; E2EL = end-to-end latency; times in ms."""
    done = requests[requests.status == "completed"]
    duration = float(done.finish_s.max() - requests.arrival_s.min()) if len(done) else 0.0
    out = {"backend": "simserve", "model_id": summary.get("model"), "duration": duration,
           "completed": int(len(done)), "total_input_tokens": int(done.isl.sum()),
           "total_output_tokens": int(done.osl.sum()),
           "request_throughput": summary["throughput_requests_per_s"],
           "request_goodput": summary["goodput_requests_per_s"],
           "output_throughput": summary["throughput_output_tokens_per_s"],
           "total_token_throughput": summary["throughput_total_tokens_per_s"]}
    samples = {"ttft": done.ttft_s, "tpot": done.tpot_s, "itl": itl_gaps, "e2el": done.e2e_s}
    for name, values in samples.items():
        if hasattr(values, "distribution"):   # a long run's ITL: engine.tokens.ItlSample or a QuantileSketch
            _weighted_fields(out, name, values, percentiles)
            continue
        arr = np.asarray(values, dtype=float)
        arr = arr[~np.isnan(arr)] * 1000.0
        empty = arr.size == 0
        out[f"mean_{name}_ms"] = 0.0 if empty else math.fsum(arr) / arr.size
        out[f"median_{name}_ms"] = 0.0 if empty else float(np.median(arr))
        out[f"std_{name}_ms"] = 0.0 if empty else float(np.std(arr))
        for p in percentiles:
            out[f"p{p}_{name}_ms"] = 0.0 if empty else float(np.percentile(arr, p))
    return out


def _weighted_fields(out: dict, name: str, sample, percentiles) -> None:
    """vllm_benchmark's fields of a weighted sample, in ms (the expanded sample's, as ItlSample says)."""
    empty = sample.size == 0
    out[f"mean_{name}_ms"] = 0.0 if empty else sample.sum() / sample.size * 1000.0
    out[f"median_{name}_ms"] = 0.0 if empty else sample.median() * 1000.0
    out[f"std_{name}_ms"] = 0.0 if empty else sample.std() * 1000.0
    for p in percentiles:
        out[f"p{p}_{name}_ms"] = 0.0 if empty else sample.percentile(p) * 1000.0
