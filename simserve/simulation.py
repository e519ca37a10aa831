"""simulate(config) -> Result: build the SimPy world from a config, run it, measure it."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simserve.catalog import Gpu, ModelCard, get_hardware, get_model
from simserve.config import SimConfig, load_config
from simserve.cost import Precision, Shard, StepCost, memory_plan
from simserve.cost.memory import GiB, MemoryPlan
from simserve.engine.arrivals import Arrivals
from simserve.engine.env import SimEnvironment
from simserve.engine.iteration import IterationModel
from simserve.engine.replica import Replica
from simserve.engine.request import Request
from simserve.errors import CapacityError, ConfigError
from simserve.kvcache import BlockManager
from simserve.metrics import requests_frame, summarize
from simserve.router import Router
from simserve.scheduler import Scheduler
from simserve.workload import build_workload


@dataclass
class Result:
    summary: dict
    requests: pd.DataFrame
    config: SimConfig


def check_layout(cfg: SimConfig, model: ModelCard) -> None:
    par = cfg.parallelism
    for name in ("tp", "pp", "dp", "ep", "cp"):
        if getattr(par, name) != 1:
            raise ConfigError(f"parallelism.{name}={getattr(par, name)} is not yet supported "
                              f"(this version simulates a single GPU per replica)")
    if model.moe is not None or model.mla is not None:
        raise ConfigError(f"model {model.name!r}: mixture-of-experts / latent attention execution is "
                          f"not yet supported")


def plan_memory(cfg: SimConfig, model: ModelCard, gpu: Gpu, shard: Shard, precision: Precision) -> MemoryPlan:
    plan = memory_plan(model, shard, precision, gpu,
                       gpu_memory_utilization=cfg.engine.gpu_memory_utilization,
                       reserved_bytes=cfg.engine.reserved_GiB * GiB,
                       max_tokens=cfg.scheduler.max_batched_tokens, max_seqs=cfg.scheduler.max_batch_size)
    if plan.kv_capacity_tokens < cfg.engine.block_size:
        raise CapacityError(
            f"{model.name} ({precision.weights} weights) does not fit on {gpu.name} with tp={shard.tp}: "
            f"weights {plan.weights_bytes / GiB:.1f} GiB + activations {plan.activation_bytes / GiB:.1f} GiB "
            f"+ reserved {plan.reserved_bytes / GiB:.1f} GiB leave "
            f"{plan.kv_capacity_bytes / GiB:.1f} GiB for the KV cache out of "
            f"{plan.usable_bytes / GiB:.1f} GiB usable (short by "
            f"{max(plan.shortfall_bytes, 0) / GiB:.1f} GiB)")
    return plan


def simulate(config=None, *, overrides=()) -> Result:
    cfg = load_config(config, overrides)
    wall_start = time.perf_counter()
    model = get_model(cfg.model)
    gpu = get_hardware(cfg.cluster.hardware)
    check_layout(cfg, model)
    precision = Precision(**cfg.precision.model_dump())
    shard = Shard(tp=cfg.parallelism.tp)
    plan = plan_memory(cfg, model, gpu, shard, precision)
    workload_seed, router_seed = np.random.SeedSequence(cfg.seed).spawn(2)
    work = build_workload(cfg.workload, model.max_context, np.random.default_rng(workload_seed))
    requests = [Request(i, float(t), int(a), int(b))
                for i, (t, a, b) in enumerate(zip(work.arrival_s, work.isl, work.osl))]

    env = SimEnvironment()
    step_cost = StepCost(model, shard, precision, gpu)
    replicas: list[Replica] = []
    router = Router(cfg.router.policy, replicas, np.random.default_rng(router_seed))
    arrivals = Arrivals(env, requests, router)
    sc = cfg.scheduler
    for index in range(cfg.parallelism.dp):
        kv = BlockManager(plan.kv_capacity_tokens // cfg.engine.block_size, cfg.engine.block_size,
                          cfg.engine.kv_watermark)
        sched = Scheduler(sc.policy, kv, max_batch_size=sc.max_batch_size, max_batched_tokens=sc.max_batched_tokens,
                          chunk_size=sc.chunk_size, batch_size=sc.batch_size or sc.max_batch_size,
                          arrivals_pending=arrivals.pending)
        replicas.append(Replica(env, index, sched, IterationModel(step_cost), arrivals,
                                coalesce_decode=cfg.engine.coalesce_decode and cfg.fidelity == "fast"))
    env.run()
    for rep in replicas:     # invariants of a finished run; a failure here is a simserve bug
        if rep.scheduler.kv.used or rep.scheduler.running or rep.scheduler.waiting:
            raise RuntimeError(f"replica {rep.index} ended with {rep.scheduler.kv.used} KV blocks in use, "
                               f"{len(rep.scheduler.running)} running, {len(rep.scheduler.waiting)} waiting")

    df = requests_frame(requests)
    gaps = np.sort(np.concatenate([r.tokens.all_gaps() for r in replicas]))
    gpus_per_replica = shard.tp
    busy: dict[str, float] = {}
    for rep in replicas:
        for kind, seconds in rep.iteration.busy_s().items():
            busy[kind] = busy.get(kind, 0.0) + seconds * gpus_per_replica
    summary = summarize(df, gaps, busy_s=busy, num_gpus=gpus_per_replica * len(replicas), sim_time_s=env.now,
                        slo_ttft_s=cfg.slo.ttft_s, slo_tpot_s=cfg.slo.tpot_s)
    summary.update({
        "bytes_moved": {},
        "kv_peak_utilization": max(r.scheduler.kv.peak_used / r.scheduler.kv.num_blocks for r in replicas),
        "preemptions": int(sum(r.scheduler.preemptions for r in replicas)),
        "output_tokens": int(sum(r.tokens_emitted for r in replicas)),
        "iterations": int(sum(r.iterations for r in replicas)),
        "events": int(env.events_scheduled),
        "wall_time_s": time.perf_counter() - wall_start,
        "model": model.name, "hardware": gpu.name,
        "layout": cfg.parallelism.model_dump(),
        "memory_per_gpu": plan.as_dict(),
        "workload": work.source,
    })
    summary = {k: summary[k] for k in _ORDER if k in summary} | {k: v for k, v in summary.items() if k not in _ORDER}
    return Result(summary=summary, requests=df, config=cfg)


_ORDER = ["num_requests", "num_completed", "num_rejected", "ttft", "tpot", "itl", "e2e", "queue_delay",
          "throughput_output_tokens_per_s", "throughput_requests_per_s", "goodput_requests_per_s",
          "time_breakdown", "bytes_moved", "gpu_utilization", "kv_peak_utilization", "preemptions",
          "sim_time_s", "wall_time_s", "events"]
