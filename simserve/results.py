"""results.summarize(world) -> Result: what a serving team would measure of a finished run."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simserve.config import SimConfig
from simserve.engine.tokens import ItlSample, itl_sample
from simserve.sketch import ALPHA, QuantileSketch
from simserve.engine.swap import swap_summary
from simserve.techniques import technique_keys
from simserve.metrics import distribution, static_batch_formula, summarize as summarize_requests
from simserve.world import World, moe_layout


@dataclass
class Result:
    summary: dict
    requests: pd.DataFrame            # one row per request (requests.csv)
    config: SimConfig
    timeline: pd.DataFrame | None = None   # what each stage did when (engine.timeline.COLUMNS)
    # every inter-token gap, sorted (the summary's ITL sample); an ItlSample above EXACT_MAX_GAPS; a
    # QuantileSketch (percentiles within simserve.sketch.ALPHA) when a replica's log outgrew its bound
    itl_gaps: np.ndarray | ItlSample | QuantileSketch | None = None


def _host_and_bubble(rep, worked: float, p2p: float) -> tuple[float, float]:
    """(seconds a stage waited for the CPU, seconds it waited for input) of a replica's stage. One
    stage waits for all of the replica's exposed host time. In a pipeline the CPU prepares one
    micro-batch while later stages may compute another, so a stage's share of host time is at most
    its non-working time while micro-batches are in flight; the rest of that time is its bubble.
    Each stage's kinds then add up to at most the run's time."""
    if len(rep.stages) == 1:
        return rep.host.exposed_s, 0.0
    gap = max(0.0, rep.active_s - worked - p2p)
    host = min(rep.host.exposed_s, gap)
    return host, gap - host


def _stages(world: World) -> tuple[dict[str, float], list[dict], dict[str, dict[str, float]]]:
    """GPU-seconds per kind, one row per pipeline stage, and collectives issued per (op, algorithm)."""
    busy: dict[str, float] = {}
    rows = []
    collectives: dict[str, dict[str, float]] = {}
    sim_time_s = world.env.now
    for rep in world.replicas:
        rep.settle_books()     # coalesced pipeline runs' bulk bookings (engine/pipeline_books), before any is read
        for s, stage in enumerate(rep.stages):
            stage_busy = stage.busy_s()
            n = len(stage.gpus)
            for kind, seconds in stage_busy.items():
                busy[kind] = busy.get(kind, 0.0) + seconds * n
            worked = math.fsum(stage_busy.values())
            p2p = rep.p2p_s[s]
            host, bubble = _host_and_bubble(rep, worked, p2p)
            busy["p2p"] = busy.get("p2p", 0.0) + p2p * n
            if rep.host.active:     # GPUs waiting for the CPU (runtimes that spend host time)
                busy["host"] = busy.get("host", 0.0) + host * n
            swap = rep.swapper.seconds if rep.swapper is not None else 0.0
            if rep.swapper is not None:     # GPUs waiting for KV copies to / from host memory
                busy["swap"] = busy.get("swap", 0.0) + swap * n
            busy["bubble"] = busy.get("bubble", 0.0) + bubble * n
            rows.append({"replica": rep.index, "stage": s, "gpus": list(stage.gpus), "layers": stage.layers,
                         "busy_s": worked, "p2p_s": p2p, "waiting_for_input_s": bubble,
                         "waiting_for_output_s": rep.wait_output_s[s], "waiting_for_host_s": host + swap,
                         "idle_s": max(0.0, sim_time_s - worked - p2p - bubble - host - swap)})
            for (op, algo), calls in stage.calls.items():
                collectives.setdefault(op, {})[algo] = collectives.setdefault(op, {}).get(algo, 0) + calls
    for (op, algo), calls in world.comm.algorithms_used.items():
        collectives.setdefault(op, {})[algo] = collectives.setdefault(op, {}).get(algo, 0) + calls
    return busy, rows, collectives


def summarize(world: World) -> Result:
    cfg, replicas, network = world.cfg, world.replicas, world.network
    sim_time_s = world.env.now
    df = world.requests.frame()
    gaps = itl_sample([r.tokens for r in replicas])
    busy, stage_rows, collectives = _stages(world)
    num_gpus = world.placement.num_gpus
    summary = summarize_requests(df, gaps, busy_s=busy, num_gpus=num_gpus, sim_time_s=sim_time_s,
                                 slo_ttft_s=cfg.slo.ttft_s, slo_tpot_s=cfg.slo.tpot_s,
                                 slo_e2e_s=cfg.slo.e2e_s)
    done = df.status == "completed"
    moved = {kind: float(b) for kind, b in sorted(network.bytes_by_kind.items()) if b}
    par = cfg.parallelism
    summary.update({
        "bytes_moved": moved,
        "bytes_moved_per_request": {k: v / max(int(done.sum()), 1) for k, v in moved.items()},
        "bytes_moved_by_collective": {op: float(b) for op, b in sorted(network.bytes_by_op.items()) if b},
        "kv_peak_utilization": max(r.kv.peak_used / r.kv.num_blocks for r in replicas),
        "preemptions": int(sum(r.preemptions for r in replicas)),
        "output_tokens": int(sum(r.tokens_emitted for r in replicas)),
        "iterations": int(sum(r.iterations for r in replicas)),
        "events": int(world.env.events_scheduled),
        "wall_time_s": 0.0,
        "model": world.model.name, "hardware": world.gpu.name, "topology": world.topology.name,
        "layout": {"tp": par.tp, "pp": par.pp, "dp": par.dp, "ep": par.ep} | ({"cp": par.cp} if par.cp > 1 else {}),
        "num_gpus": num_gpus,
        "collectives": collectives,
        "stages": stage_rows,
        "memory_per_gpu": [p.as_dict() for p in world.plans],
        "workload": world.workload_source,
    })
    summary.update(itl_estimate(gaps))
    summary.update(world.timeline.dropped())
    summary.update(technique_keys(cfg, replicas))
    summary.update(swap_summary(cfg, replicas))
    if cfg.scheduler.policy == "static":
        summary["static_batch"] = static_batch_formula(df)
    if world.model.moe is not None:
        summary["moe"] = moe_summary(world, sim_time_s)
    if world.pools is not None:
        from simserve.disagg import pool_summary
        summary["disaggregation"] = pool_summary(world, df)
        summary["bytes_moved_per_request"]["kv_transfer"] = \
            network.bytes_by_op.get("kv_transfer", 0.0) / max(int(done.sum()), 1)
    timeline = world.timeline.frame()
    summary["wall_time_s"] = time.perf_counter() - world.wall_start     # everything simulate() did
    summary = {k: summary[k] for k in _ORDER if k in summary} | {k: v for k, v in summary.items() if k not in _ORDER}
    return Result(summary=summary, requests=df, config=cfg, timeline=timeline, itl_gaps=gaps)


def itl_estimate(gaps) -> dict:
    """The `itl_estimate` key of a run whose ITL log outgrew its bound (engine.tokens): its
    percentiles come from the sketch, within its relative error; none for an exact ITL."""
    if isinstance(gaps, QuantileSketch):
        return {"itl_estimate": {"method": "quantile_sketch", "relative_error": ALPHA}}
    return {}


def moe_summary(world: World, sim_time_s: float) -> dict:
    """The `moe` summary key: layout, routing, expert load imbalance and all-to-all volume."""
    cfg, model = world.cfg, world.model
    layout = moe_layout(cfg)
    planners = world.planners
    imbalance = np.concatenate([np.concatenate(p.imbalance) for p in planners if p.imbalance] or [np.zeros(0)])
    slowest = np.concatenate([np.concatenate(p.slowest_over_mean) for p in planners if p.slowest_over_mean]
                             or [np.zeros(0)])
    return {
        "experts": model.moe.num_experts, "top_k": model.moe.top_k, "ep": layout.ep, "tp": layout.tp,
        "dp_attention": layout.dp_attention,
        "experts_per_gpu": (model.moe.num_experts + layout.redundant) // layout.ep,
        "redundant_experts": layout.redundant,
        "routing": cfg.moe.routing, "redraw": cfg.moe.redraw, "placement": cfg.moe.placement,
        "distinct_layers": planners[0].router.distinct if planners else 0,
        # max / mean token-expert pairs per GPU per layer, one sample per routing draw and iteration
        "imbalance": distribution(imbalance),
        "slowest_over_mean_expert_time": distribution(slowest),
        "straggler_wait_fraction": (math.fsum(p.straggler_s for p in planners) / (len(planners) * sim_time_s)
                                    if sim_time_s > 0 and planners else 0.0),
        "alltoall_payload_bytes": math.fsum(p.alltoall_bytes for p in planners),
    }


_ORDER = ["num_requests", "num_completed", "num_rejected", "ttft", "tpot", "itl", "e2e", "queue_delay",
          "throughput_output_tokens_per_s", "throughput_input_tokens_per_s", "throughput_total_tokens_per_s",
          "throughput_requests_per_s", "goodput_requests_per_s",
          "time_breakdown", "bytes_moved", "gpu_utilization", "kv_peak_utilization", "preemptions",
          "sim_time_s", "wall_time_s", "events"]
