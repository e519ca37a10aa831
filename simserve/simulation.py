"""simulate(config) -> Result: build the SimPy world from a config, run it, measure it."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simserve import progress
from simserve.catalog import DTYPE_BYTES, Gpu, ModelCard, get_hardware, get_model
from simserve.comm import Communicator
from simserve.config import SimConfig, load_config
from simserve.cost import BatchStats, Precision, Shard, StepCost, memory_plan
from simserve.cost.memory import GiB, MemoryPlan
from simserve.cost.moe import ExpertRouter, MoeLayout, moe_memory_plan, place_experts, read_routing_trace
from simserve.engine.arrivals import Arrivals
from simserve.engine.env import SimEnvironment
from simserve.engine.moe import MoeStage
from simserve.engine.replica import Replica
from simserve.engine.request import Request
from simserve.engine.stage import Stage
from simserve.engine.timeline import Timeline
from simserve.errors import CapacityError, ConfigError
from simserve.kvcache import BlockManager
from simserve.metrics import distribution, requests_frame, static_batch_formula, summarize
from simserve.network.flows import Network
from simserve.network.topology import Topology, topology_for_cluster
from simserve.placement import Placement, place, split_layers
from simserve.router import Router
from simserve.scheduler import Scheduler
from simserve.workload import build_workload


@dataclass
class Result:
    summary: dict
    requests: pd.DataFrame            # one row per request (requests.csv)
    config: SimConfig
    timeline: pd.DataFrame | None = None   # what each stage did when (engine.timeline.COLUMNS)
    itl_gaps: np.ndarray | None = None     # every inter-token gap, sorted (the summary's ITL sample)


def check_layout(cfg: SimConfig, model: ModelCard) -> None:
    par = cfg.parallelism
    if par.cp != 1:
        raise ConfigError(f"parallelism.cp={par.cp} is not yet supported")
    if model.moe is None and par.ep != 1:
        raise ConfigError(f"parallelism.ep={par.ep} needs a mixture-of-experts model; {model.name} is dense")
    if model.mla is not None and model.moe is None:
        raise ConfigError(f"model {model.name!r}: latent attention is supported on MoE models only")
    if model.num_heads % par.tp:
        raise ConfigError(f"tp={par.tp} does not divide {model.name}'s {model.num_heads} attention heads")
    if model.mla is None and par.tp > model.num_kv_heads and par.tp % model.num_kv_heads:
        raise ConfigError(f"tp={par.tp} is not a multiple of {model.name}'s {model.num_kv_heads} KV heads")
    if model.intermediate % par.tp:
        raise ConfigError(f"tp={par.tp} does not divide {model.name}'s FFN width {model.intermediate}")
    if model.moe is not None:
        check_moe_layout(cfg, model)


def check_moe_layout(cfg: SimConfig, model: ModelCard) -> None:
    """Expert parallelism: the EP group is the replica's GPUs, tp x dp_attention of them."""
    par, moe = cfg.parallelism, model.moe
    if par.pp != 1:
        raise ConfigError(f"pp={par.pp} with a mixture-of-experts model is not yet supported (use ep, tp, dp)")
    if par.ep > 1 and par.ep % par.tp:
        raise ConfigError(f"ep={par.ep} must be a multiple of tp={par.tp}: the EP group spans tp x "
                          f"dp_attention GPUs")
    if (moe.num_experts + cfg.moe.redundant_experts) % par.ep:
        extra = f" + {cfg.moe.redundant_experts} redundant" if cfg.moe.redundant_experts else ""
        raise ConfigError(f"ep={par.ep} does not divide {model.name}'s {moe.num_experts}{extra} experts")
    if cfg.moe.redundant_experts > moe.num_experts * (par.ep - 1):
        raise ConfigError(f"moe.redundant_experts={cfg.moe.redundant_experts}: at most one copy of an expert per "
                          f"GPU ({moe.num_experts * (par.ep - 1)} extra copies with ep={par.ep})")
    if par.ep == 1 and moe.expert_intermediate % par.tp:
        raise ConfigError(f"tp={par.tp} does not divide {model.name}'s expert width {moe.expert_intermediate}")
    if moe.shared_experts and (moe.shared_experts * moe.expert_intermediate) % par.tp:
        raise ConfigError(f"tp={par.tp} does not divide {model.name}'s shared-expert width")


def moe_layout(cfg: SimConfig) -> MoeLayout:
    par = cfg.parallelism
    return MoeLayout(ep=par.ep, tp=par.tp, redundant=cfg.moe.redundant_experts)


def plan_moe_memory(cfg: SimConfig, model: ModelCard, gpu: Gpu, precision: Precision) -> tuple[MemoryPlan, float]:
    layout = moe_layout(cfg)
    plan, experts = moe_memory_plan(model, layout, precision, gpu,
                                    gpu_memory_utilization=cfg.engine.gpu_memory_utilization,
                                    reserved_bytes=cfg.engine.reserved_GiB * GiB,
                                    max_tokens=cfg.scheduler.max_batched_tokens, max_seqs=cfg.scheduler.max_batch_size)
    if plan.kv_capacity_tokens < cfg.engine.block_size:
        raise CapacityError(
            f"{model.name} ({precision.weights} weights) does not fit on {gpu.name} with ep={layout.ep} "
            f"tp={layout.tp}: weights {plan.weights_bytes / GiB:.1f} GiB (routed experts {experts / GiB:.1f} GiB) + "
            f"activations {plan.activation_bytes / GiB:.1f} GiB + reserved {plan.reserved_bytes / GiB:.1f} GiB "
            f"leave {plan.kv_capacity_bytes / GiB:.1f} GiB for the KV cache out of {plan.usable_bytes / GiB:.1f} GiB "
            f"usable per GPU (short by {max(plan.shortfall_bytes, 0) / GiB + 0.05:.1f} GiB); raise ep or use "
            f"fp8 weights")
    return plan, experts


def head_layer_equivalents(model: ModelCard, gpu: Gpu, precision: Precision, tp: int) -> tuple[float, float]:
    """Embedding and LM-head time in units of one layer's time, for a typical decode batch (32
    sequences at 1k context): what `stage_layers: balanced` evens out."""
    batch = BatchStats.of([], [1024] * 32)
    layer = StepCost(model, Shard(tp=tp, num_layers=1, first_stage=False, last_stage=False), precision, gpu).time(batch)
    first = StepCost(model, Shard(tp=tp, num_layers=0, first_stage=True, last_stage=False), precision, gpu).time(batch)
    last = StepCost(model, Shard(tp=tp, num_layers=0, first_stage=False, last_stage=True), precision, gpu).time(batch)
    return first / layer, last / layer


def stage_shards(cfg: SimConfig, model: ModelCard, gpu: Gpu, precision: Precision) -> list[Shard]:
    par = cfg.parallelism
    heads = head_layer_equivalents(model, gpu, precision, par.tp) if par.stage_layers == "balanced" else (0, 0)
    layers = split_layers(model.num_layers, par.pp, par.stage_layers, heads)
    last = len(layers) - 1
    return [Shard(tp=cfg.parallelism.tp, num_layers=n, first_stage=s == 0, last_stage=s == last)
            for s, n in enumerate(layers)]


def plan_memory(cfg: SimConfig, model: ModelCard, gpu: Gpu, shards: list[Shard],
                precision: Precision) -> list[MemoryPlan]:
    """One plan per stage; a layout that does not fit says which stage and by how much."""
    plans = []
    for s, shard in enumerate(shards):
        plan = memory_plan(model, shard, precision, gpu,
                           gpu_memory_utilization=cfg.engine.gpu_memory_utilization,
                           reserved_bytes=cfg.engine.reserved_GiB * GiB,
                           max_tokens=cfg.scheduler.max_batched_tokens, max_seqs=cfg.scheduler.max_batch_size)
        if plan.kv_capacity_tokens < cfg.engine.block_size:
            where = f" stage {s} ({shard.num_layers} layers)" if len(shards) > 1 else ""
            raise CapacityError(
                f"{model.name} ({precision.weights} weights) does not fit on {gpu.name} with "
                f"tp={shard.tp} pp={len(shards)}:{where} weights {plan.weights_bytes / GiB:.1f} GiB + "
                f"activations {plan.activation_bytes / GiB:.1f} GiB + reserved {plan.reserved_bytes / GiB:.1f} GiB "
                f"leave {plan.kv_capacity_bytes / GiB:.1f} GiB for the KV cache out of "
                f"{plan.usable_bytes / GiB:.1f} GiB usable per GPU (short by "
                f"{max(plan.shortfall_bytes, 0) / GiB + 0.05:.1f} GiB)")
        plans.append(plan)
    return plans


def _pair_links(topology: Topology, src_gpus, dst_gpus) -> set:
    out = set()
    for a in src_gpus:
        for b in dst_gpus:
            if a != b:
                out.update(topology.path(a, b))
    return out


def _p2p_links(topology: Topology, stages) -> set:
    """Links of a pipeline's stage-to-stage sends (rank i to rank i), the token return included."""
    out = set()
    if len(stages) > 1:
        for s in range(len(stages)):
            for a, b in zip(stages[s], stages[(s + 1) % len(stages)]):
                if a != b:
                    out.update(topology.path(a, b))
    return out


def exclusive_links(topology: Topology, placement: Placement) -> tuple[list[list[bool]], list[bool]]:
    """Which traffic has its links to itself: for each replica and stage, its TP group's collectives
    (no other group's collectives and no pipeline transfer can reach them), and for each replica,
    its pipeline transfers (no collective and no other pipeline uses their links)."""
    own = {(r, s): _pair_links(topology, g, g) for r, rep in enumerate(placement.replicas) for s, g in enumerate(rep)}
    p2p = {r: _p2p_links(topology, rep) for r, rep in enumerate(placement.replicas)}
    all_p2p = set().union(*p2p.values())
    all_tp = set().union(*own.values())
    groups, pipelines = [], []
    for r, rep in enumerate(placement.replicas):
        row = []
        for s in range(len(rep)):
            others = set(all_p2p)
            for key, links in own.items():
                if key != (r, s):
                    others |= links
            row.append(not (own[(r, s)] & others))
        groups.append(row)
        other_p2p = set().union(*(links for q, links in p2p.items() if q != r))
        pipelines.append(not (p2p[r] & (all_tp | other_p2p)))
    return groups, pipelines


def simulate(config=None, *, overrides=(), show_progress: bool | None = False) -> Result:
    """Run a config (path, dict or SimConfig; None: the bundled default). `show_progress`: a
    progress bar on the terminal (None: only when stdout is a terminal)."""
    cfg = load_config(config, overrides)
    wall_start = time.perf_counter()
    model = get_model(cfg.model)
    gpu = get_hardware(cfg.cluster.hardware)
    check_layout(cfg, model)
    par = cfg.parallelism
    topology = topology_for_cluster(cfg.cluster, launch=cfg.collectives.launch)
    is_moe = model.moe is not None
    group = moe_layout(cfg).gpus if is_moe else par.tp     # GPUs per replica stage
    placement = place(group, par.pp, par.dp, topology.nodes, topology.gpus_per_node, par.placement)
    precision = Precision(**cfg.precision.model_dump())
    if is_moe:
        plan, _ = plan_moe_memory(cfg, model, gpu, precision)
        plans = [plan]
        # each attention group caches its own sequences: the replica's pool is their sum (pooled)
        kv_tokens = plan.kv_capacity_tokens * moe_layout(cfg).dp_attention
    else:
        shards = stage_shards(cfg, model, gpu, precision)
        plans = plan_memory(cfg, model, gpu, shards, precision)
        kv_tokens = min(p.kv_capacity_tokens for p in plans)   # every stage holds KV for its layers
    # the first two streams are the dense engine's since before MoE existed (results unchanged)
    workload_seed, router_seed, moe_seed = np.random.SeedSequence(cfg.seed).spawn(3)
    work = build_workload(cfg.workload, model.max_context, np.random.default_rng(workload_seed))
    requests = [Request(i, float(t), int(a), int(b))
                for i, (t, a, b) in enumerate(zip(work.arrival_s, work.isl, work.osl))]

    env = SimEnvironment()
    network = Network(env, topology)
    comm = Communicator(env, network, cfg.fidelity)
    exclusive, own_pipeline = exclusive_links(topology, placement)
    step_costs = [] if is_moe else [StepCost(model, shard, precision, gpu) for shard in shards]
    moe_stages = []
    if is_moe:
        mc = cfg.moe
        layout = moe_layout(cfg)
        distinct = min(mc.distinct_layers or model.num_layers, model.num_layers - model.moe.first_dense_layers)
        trace = read_routing_trace(mc.trace, model.moe.num_experts) if mc.routing == "trace" else None
        popularity_seed, counts_seed = moe_seed.spawn(2)
        counts_seeds = counts_seed.spawn(par.dp)
    replicas: list[Replica] = []
    timeline = Timeline()
    router = Router(cfg.router.policy, replicas, np.random.default_rng(router_seed))
    arrivals = Arrivals(env, requests, router)
    sc = cfg.scheduler
    # vLLM's PP sends hidden states and the residual stream (IntermediateTensors) to the next stage
    p2p_bytes_per_token = 2 * model.hidden * DTYPE_BYTES[precision.activations]
    for r, groups in enumerate(placement.replicas):
        kv = BlockManager(kv_tokens // cfg.engine.block_size, cfg.engine.block_size, cfg.engine.kv_watermark)
        lanes = par.pp
        batch_size = sc.batch_size or sc.max_batch_size
        schedulers = [Scheduler(sc.policy, kv, max_batch_size=sc.max_batch_size,
                                max_batched_tokens=sc.max_batched_tokens, chunk_size=sc.chunk_size,
                                batch_size=max(1, batch_size // lanes), arrivals_pending=arrivals.pending)
                      for _ in range(lanes)]
        if is_moe:
            expert_router = ExpertRouter(mc.routing, model.moe.num_experts, model.moe.top_k, distinct,
                                         np.random.default_rng(popularity_seed), np.random.default_rng(counts_seeds[r]),
                                         zipf_s=mc.zipf_s, dirichlet_alpha=mc.dirichlet_alpha, redraw=mc.redraw,
                                         trace=trace)
            share = place_experts(mc.placement, expert_router.expected_popularity(), layout.ep, layout.redundant)
            stages = [MoeStage(env, comm, groups[0], model, precision, gpu, layout, expert_router, share,
                               allreduce=cfg.collectives.allreduce, alltoall=cfg.collectives.alltoall,
                               fidelity=cfg.fidelity, exclusive_links=exclusive[r][0])]
            moe_stages.extend(stages)
        else:
            stages = [Stage(env, comm, step_costs[s], groups[s], model, precision, shards[s], shards[s].num_layers,
                            cfg.collectives.allreduce, cfg.fidelity, exclusive[r][s]) for s in range(par.pp)]
        replicas.append(Replica(env, r, schedulers, stages, arrivals, network,
                                coalesce_decode=cfg.engine.coalesce_decode and cfg.fidelity == "fast",
                                p2p_bytes_per_token=p2p_bytes_per_token, timeline=timeline,
                                fast_transfers=cfg.fidelity == "fast",
                                closed_pipeline=cfg.fidelity == "fast" and own_pipeline[r]))
    with progress.track(env, total=len(requests),
                        done=lambda: sum(len(r.completed) + len(r.rejected) for r in replicas),
                        horizon_s=requests[-1].arrival_s if requests else None, enabled=show_progress):
        env.run()
    for rep in replicas:     # invariants of a finished run; a failure here is a simserve bug
        busy_lanes = [s for s in rep.schedulers if s.running or s.waiting]
        if rep.kv.used or busy_lanes:
            raise RuntimeError(f"replica {rep.index} ended with {rep.kv.used} KV blocks in use and "
                               f"{len(busy_lanes)} lane(s) holding requests")

    sim_time_s = env.now
    df = requests_frame(requests)
    gaps = np.sort(np.concatenate([r.tokens.all_gaps() for r in replicas]))
    busy: dict[str, float] = {}
    stage_rows = []
    collectives: dict[str, dict[str, float]] = {}
    for rep in replicas:
        for s, stage in enumerate(rep.stages):
            stage_busy = stage.busy_s()
            n = len(stage.gpus)
            for kind, seconds in stage_busy.items():
                busy[kind] = busy.get(kind, 0.0) + seconds * n
            worked = math.fsum(stage_busy.values())
            p2p = rep.p2p_s[s]
            bubble = max(0.0, rep.active_s - worked - p2p) if len(rep.stages) > 1 else 0.0
            busy["p2p"] = busy.get("p2p", 0.0) + p2p * n
            busy["bubble"] = busy.get("bubble", 0.0) + bubble * n
            stage_rows.append({"replica": rep.index, "stage": s, "gpus": list(stage.gpus), "layers": stage.layers,
                               "busy_s": worked, "p2p_s": p2p, "waiting_for_input_s": bubble,
                               "waiting_for_output_s": rep.wait_output_s[s],
                               "idle_s": max(0.0, sim_time_s - worked - p2p - bubble)})
            for (op, algo), calls in stage.calls.items():
                collectives.setdefault(op, {})[algo] = collectives.setdefault(op, {}).get(algo, 0) + calls
    for (op, algo), calls in comm.algorithms_used.items():
        collectives.setdefault(op, {})[algo] = collectives.setdefault(op, {}).get(algo, 0) + calls
    num_gpus = placement.num_gpus
    summary = summarize(df, gaps, busy_s=busy, num_gpus=num_gpus, sim_time_s=sim_time_s,
                        slo_ttft_s=cfg.slo.ttft_s, slo_tpot_s=cfg.slo.tpot_s, slo_e2e_s=cfg.slo.e2e_s)
    done = df.status == "completed"
    moved = {kind: float(b) for kind, b in sorted(network.bytes_by_kind.items()) if b}
    summary.update({
        "bytes_moved": moved,
        "bytes_moved_per_request": {k: v / max(int(done.sum()), 1) for k, v in moved.items()},
        "bytes_moved_by_collective": {op: float(b) for op, b in sorted(network.bytes_by_op.items()) if b},
        "kv_peak_utilization": max(r.kv.peak_used / r.kv.num_blocks for r in replicas),
        "preemptions": int(sum(r.preemptions for r in replicas)),
        "output_tokens": int(sum(r.tokens_emitted for r in replicas)),
        "iterations": int(sum(r.iterations for r in replicas)),
        "events": int(env.events_scheduled),
        "wall_time_s": time.perf_counter() - wall_start,
        "model": model.name, "hardware": gpu.name, "topology": topology.name,
        "layout": {"tp": par.tp, "pp": par.pp, "dp": par.dp, "ep": par.ep},
        "num_gpus": num_gpus,
        "collectives": collectives,
        "stages": stage_rows,
        "memory_per_gpu": [p.as_dict() for p in plans],
        "workload": work.source,
    })
    if sc.policy == "static":
        summary["static_batch"] = static_batch_formula(df)
    if is_moe:
        summary["moe"] = moe_summary(cfg, model, moe_stages, plans[0], sim_time_s)
    summary = {k: summary[k] for k in _ORDER if k in summary} | {k: v for k, v in summary.items() if k not in _ORDER}
    return Result(summary=summary, requests=df, config=cfg, timeline=timeline.frame(), itl_gaps=gaps)


def moe_summary(cfg: SimConfig, model: ModelCard, stages: list[MoeStage], plan: MemoryPlan,
                sim_time_s: float) -> dict:
    """The `moe` summary key: layout, routing, expert load imbalance and all-to-all volume."""
    layout = moe_layout(cfg)
    reports = [s.report() for s in stages]
    imbalance = np.concatenate([np.concatenate(s.imbalance) for s in stages if s.imbalance] or [np.zeros(0)])
    slowest = np.concatenate([np.concatenate(s.slowest_over_mean) for s in stages if s.slowest_over_mean]
                             or [np.zeros(0)])
    return {
        "experts": model.moe.num_experts, "top_k": model.moe.top_k, "ep": layout.ep, "tp": layout.tp,
        "dp_attention": layout.dp_attention,
        "experts_per_gpu": (model.moe.num_experts + layout.redundant) // layout.ep,
        "redundant_experts": layout.redundant,
        "routing": cfg.moe.routing, "redraw": cfg.moe.redraw, "placement": cfg.moe.placement,
        "distinct_layers": stages[0].router.distinct if stages else 0,
        # max / mean token-expert pairs per GPU per layer, one sample per routing draw and iteration
        "imbalance": distribution(imbalance),
        "slowest_over_mean_expert_time": distribution(slowest),
        "straggler_wait_fraction": (math.fsum(r["straggler_wait_s"] for r in reports) / (len(stages) * sim_time_s)
                                    if sim_time_s > 0 and stages else 0.0),
        "alltoall_payload_bytes": math.fsum(r["alltoall_payload_bytes"] for r in reports),
    }


_ORDER = ["num_requests", "num_completed", "num_rejected", "ttft", "tpot", "itl", "e2e", "queue_delay",
          "throughput_output_tokens_per_s", "throughput_input_tokens_per_s", "throughput_total_tokens_per_s",
          "throughput_requests_per_s", "goodput_requests_per_s",
          "time_breakdown", "bytes_moved", "gpu_utilization", "kv_peak_utilization", "preemptions",
          "sim_time_s", "wall_time_s", "events"]
