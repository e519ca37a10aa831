"""build_world(config) -> World: the validated layout, memory plan, network and replicas of a run.

`World.run()` plays it; `results.summarize(world)` measures it. Dense and MoE models differ only in
their stage planners (simserve.iteration.build) and memory formulas; everything else is shared.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from simpy.core import StopSimulation

from simserve import progress
from simserve.catalog import DTYPE_BYTES, Gpu, ModelCard, get_hardware, get_model
from simserve.comm import Communicator
from simserve.config import SimConfig, load_config
from simserve.cost import BatchStats, Precision, Shard, StepCost, memory_plan
from simserve.cost.memory import GiB, MemoryPlan
from simserve.cost.moe import ExpertRouter, MoeLayout, StageLayers, moe_memory_plan, place_experts
from simserve.engine.arrivals import Arrivals, ClosedLoop
from simserve.engine.env import SimEnvironment
from simserve.engine.replica import Replica
from simserve.engine.speculative import SpeculativeReplica, attach_speculation, build_speculation
from simserve.engine.swap import attach_swap
from simserve.engine.stage import Stage
from simserve.engine.timeline import Timeline
from simserve.errors import CapacityError
from simserve.iteration.build import DensePlanner, MoePlanner
from simserve.iteration.context import ContextParallelPlanner
from simserve.iteration.overlap import OverlapPlanner
from simserve.iteration.speculative import SpeculativePlanner
from simserve.kvcache import BlockManager
from simserve.kvcache.prefix import PrefixCache
from simserve.layout import check_layout
from simserve.network.flows import Network
from simserve.network.topology import Topology, topology_for_cluster
from simserve.placement import Placement, place, split_layers
from simserve.records import RequestBook
from simserve.router import Router
from simserve.runtime import RuntimeStepCost, get_runtime
from simserve.scheduler import Scheduler
from simserve.workload import build_workload
from simserve.workload.build import prefix_segment_tokens
from simserve.workload.processes import ARRIVAL_PROCESSES
from simserve.workload.routing import read_routing_trace


@dataclass
class World:
    cfg: SimConfig
    model: ModelCard
    gpu: Gpu
    topology: Topology
    placement: Placement
    plans: list[MemoryPlan]
    requests: RequestBook            # every request's workload and outcome, as columns
    workload_source: dict
    env: SimEnvironment
    network: Network
    comm: Communicator
    timeline: Timeline
    replicas: list[Replica] = field(default_factory=list)
    wall_start: float = 0.0
    pools: object = None        # disagg.Pools of a disaggregated deployment

    def run(self, show_progress: bool | None = False, stop=None) -> "World":
        """Play the run to its end, or until the event `stop` (of `env`) triggers: a planner probe
        ends once its SLO verdict is decided (simserve/plan/stop.py); requests are then in flight."""
        replicas = self.replicas
        if stop is not None:       # what env.run(until=stop) does, without its error when stop never triggers
            stop.callbacks.append(StopSimulation.callback)
        with progress.track(self.env, total=len(self.requests),
                            done=lambda: self.requests.recorded,
                            horizon_s=float(self.requests.arrival_s[-1]) if len(self.requests) else None,
                            enabled=show_progress):
            self.env.run()
        if stop is not None and stop.triggered:
            return self
        for rep in replicas:     # invariants of a finished run; a failure here is a simserve bug
            busy_lanes = [s for s in rep.schedulers if s.running or s.waiting or s.swapped]
            if rep.kv.used or busy_lanes:
                raise RuntimeError(f"replica {rep.index} ended with {rep.kv.used} KV blocks in use and "
                                   f"{len(busy_lanes)} lane(s) holding requests")
        return self

    @property
    def planners(self) -> list:
        return [stage.planner for rep in self.replicas for stage in rep.stages]


def moe_layout(cfg: SimConfig) -> MoeLayout:
    par = cfg.parallelism
    return MoeLayout(ep=par.ep, tp=par.tp, redundant=cfg.moe.redundant_experts)


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
    return [Shard(tp=par.tp, num_layers=n, first_stage=s == 0, last_stage=s == last) for s, n in enumerate(layers)]


def _short_of(model: ModelCard, gpu: Gpu, precision: Precision, layout: str, where: str, plan: MemoryPlan,
              detail: str = "", advice: str = "") -> CapacityError:
    return CapacityError(
        f"{model.name} ({precision.weights} weights) does not fit on {gpu.name} with {layout}:{where} weights "
        f"{plan.weights_bytes / GiB:.1f} GiB{detail} + activations {plan.activation_bytes / GiB:.1f} GiB + reserved "
        f"{plan.reserved_bytes / GiB:.1f} GiB leave {plan.kv_capacity_bytes / GiB:.1f} GiB for the KV cache out of "
        f"{plan.usable_bytes / GiB:.1f} GiB usable per GPU (short by "
        f"{max(plan.shortfall_bytes, 0) / GiB + 0.05:.1f} GiB){advice}")


def plan_memory(cfg: SimConfig, model: ModelCard, gpu: Gpu, shards: list[Shard],
                precision: Precision) -> list[MemoryPlan]:
    """One plan per stage; a layout that does not fit says which stage and by how much."""
    caps = dict(gpu_memory_utilization=cfg.engine.gpu_memory_utilization, reserved_bytes=cfg.engine.reserved_GiB * GiB,
                # a context-parallel rank holds 1/cp of an iteration's prompt tokens
                max_tokens=-(-cfg.scheduler.max_batched_tokens // cfg.parallelism.cp),
                max_seqs=cfg.scheduler.max_batch_size)
    moe = model.moe is not None
    stages = StageLayers.split(model, tuple(sh.num_layers for sh in shards)) if moe else [None] * len(shards)
    plans = []
    for s, (shard, layers) in enumerate(zip(shards, stages)):
        if moe:
            layout = moe_layout(cfg)
            plan, experts = moe_memory_plan(model, layout, precision, gpu, stage=layers, **caps)
            text = f"ep={layout.ep} tp={layout.tp}" + (f" pp={len(shards)}" if len(shards) > 1 else "")
            detail, advice = f" (routed experts {experts / GiB:.1f} GiB)", "; raise ep or use fp8 weights"
        else:
            plan = memory_plan(model, shard, precision, gpu, **caps)
            text, detail, advice = f"tp={shard.tp} pp={len(shards)}", "", ""
        if plan.kv_capacity_tokens < cfg.engine.block_size:
            where = f" stage {s} ({shard.num_layers} layers)" if len(shards) > 1 else ""
            raise _short_of(model, gpu, precision, text, where, plan, detail, advice)
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
    """Which traffic has its links to itself: for each replica and stage, its group's collectives
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


class _Planners:
    """Builds each (replica, stage)'s plan builder: dense stages share one cost model per stage;
    MoE stages get their own seeded expert router and placement."""

    def __init__(self, cfg: SimConfig, model: ModelCard, gpu: Gpu, precision: Precision, shards: list[Shard],
                 moe_seed: np.random.SeedSequence):
        self.cfg, self.model, self.gpu, self.precision, self.shards = cfg, model, gpu, precision, shards
        # as the runtime runs them: CUDA-graph padding of decode batches (dense and MoE), eager
        # launches above the largest captured size (dense)
        self.runtime = runtime = get_runtime(cfg.engine.runtime)
        if model.moe is None:
            # one cost model per distinct shard (a pipeline's middle stages hold equal ones), so
            # their memoised batch shapes are evaluated once
            by_shard: dict[Shard, RuntimeStepCost] = {}
            for shard in shards:
                if shard not in by_shard:
                    by_shard[shard] = RuntimeStepCost(StepCost(model, shard, precision, gpu), runtime,
                                                      gpu.efficiency.kernel_overhead_s)
            self.step_costs = [by_shard[shard] for shard in shards]
            return
        mc, pp = cfg.moe, len(shards)
        self.stage_layers = StageLayers.split(model, tuple(sh.num_layers for sh in shards))
        self.trace = read_routing_trace(mc.trace, model.moe.num_experts) if mc.routing == "trace" else None
        popularity_seed, counts_seed = moe_seed.spawn(2)
        # one stream per replica (and per stage of a pipeline): a single-stage replica keeps the
        # stream it had before pipelines of MoE models existed
        self.popularity_seeds = [popularity_seed] if pp == 1 else popularity_seed.spawn(pp)
        self.counts_seeds = [c.spawn(pp) if pp > 1 else [c] for c in counts_seed.spawn(cfg.parallelism.dp)]

    drafters = None        # speculative decoding: the drafter of each stage

    def planner(self, r: int, s: int, gpus: tuple[int, ...]):
        inner = self._planner(r, s, gpus)
        if self.drafters is None:
            return inner
        return SpeculativePlanner(inner, self.drafters[s], self.cfg.collectives.allreduce)

    def _planner(self, r: int, s: int, gpus: tuple[int, ...]):
        cfg, model, shard = self.cfg, self.model, self.shards[s]
        if model.moe is None and cfg.parallelism.cp > 1:
            return ContextParallelPlanner(model, shard, self.precision, self.gpu, gpus, cfg.parallelism.cp,
                                          cfg.collectives.allreduce, self.step_costs[s])
        if model.moe is None and cfg.engine.overlap == "tp_comm":
            return OverlapPlanner(model, shard, self.precision, self.gpu, gpus, cfg.collectives.allreduce,
                                  self.step_costs[s])
        if model.moe is None:
            return DensePlanner(model, shard, self.precision, self.gpu, gpus, cfg.collectives.allreduce,
                                self.step_costs[s], sync_drop=cfg.collectives.sync_point_drop)
        mc, layers = cfg.moe, self.stage_layers[s]
        layout = moe_layout(cfg)
        distinct = min(mc.distinct_layers or model.num_layers, layers.moe_layers) or 1
        router = ExpertRouter(mc.routing, model.moe.num_experts, model.moe.top_k, distinct,
                              np.random.default_rng(self.popularity_seeds[s]),
                              np.random.default_rng(self.counts_seeds[r][s]), zipf_s=mc.zipf_s,
                              dirichlet_alpha=mc.dirichlet_alpha, redraw=mc.redraw, trace=self.trace)
        share = place_experts(mc.placement, router.expected_popularity(), layout.ep, layout.redundant)
        return MoePlanner(model, shard, self.precision, self.gpu, gpus, layout, router, share,
                          allreduce=cfg.collectives.allreduce, alltoall=cfg.collectives.alltoall,
                          dense_layers=layers.dense_layers, moe_layers=layers.moe_layers, runtime=self.runtime,
                          sync_drop=cfg.collectives.sync_point_drop)


def _kv_tokens(cfg: SimConfig, model: ModelCard, plans: list[MemoryPlan]) -> int:
    """KV tokens a replica can hold: every stage holds KV for its layers, so the smallest stage
    decides; MoE attention groups each cache their own sequences, so their pools add up."""
    tokens = min(p.kv_capacity_tokens for p in plans)
    # MoE attention groups and context-parallel ranks each hold their own share of the KV
    return tokens * moe_layout(cfg).dp_attention if model.moe is not None else tokens * cfg.parallelism.cp


def make_requests(cfg: SimConfig, model: ModelCard, workload_seed) -> tuple[RequestBook, dict]:
    """The run's requests as columns (simserve.records): each becomes an object only in flight."""
    work = build_workload(cfg.workload, model.max_context, np.random.default_rng(workload_seed))
    prefixes = work.prefix_hashes if cfg.scheduler.prefix_caching and work.prefix_hashes else None
    return RequestBook(work.arrival_s, work.isl, work.osl, prefixes), work.source


def build_world(config=None, overrides=()) -> World:
    """Validate, plan memory and wire the SimPy world of a config (nothing is simulated yet)."""
    wall_start = time.perf_counter()
    cfg = load_config(config, overrides)
    model = get_model(cfg.model)
    if cfg.disaggregation is not None:
        from simserve.disagg import build_disaggregated     # builds on this module's pieces
        return build_disaggregated(cfg, model, wall_start)
    gpu = get_hardware(cfg.cluster.hardware)
    check_layout(cfg, model)
    par = cfg.parallelism
    topology = topology_for_cluster(cfg.cluster, launch=cfg.collectives.launch, kernels=cfg.collectives.kernels,
                                    quick_reduce=cfg.collectives.quick_reduce)
    group = moe_layout(cfg).gpus if model.moe is not None else par.tp * par.cp     # GPUs per replica stage
    placement = place(group, par.pp, par.dp, topology.nodes, topology.gpus_per_node, par.placement)
    precision = pool_precision(cfg)
    shards = stage_shards(cfg, model, gpu, precision)
    plans = plan_memory(cfg, model, gpu, shards, precision)
    drafters = None
    if cfg.scheduler.speculative is not None:
        drafters, plans = build_speculation(cfg, model, gpu, precision, shards, plans)
    # the first two streams are the dense engine's since before MoE existed (results unchanged);
    # the fourth is speculative decoding's (spawn(4)[:3] == spawn(3))
    workload_seed, router_seed, moe_seed, spec_seed = np.random.SeedSequence(cfg.seed).spawn(4)
    requests, source = make_requests(cfg, model, workload_seed)
    env = SimEnvironment()
    network = Network(env, topology)
    world = World(cfg, model, gpu, topology, placement, plans, requests, source, env, network,
                  Communicator(env, network, cfg.fidelity),
                  Timeline.for_run(cfg.engine, len(requests), cfg.parallelism.pp),
                  wall_start=wall_start)
    exclusive, own_pipeline = exclusive_links(world.topology, world.placement)
    planners = _Planners(cfg, model, gpu, precision, shards, moe_seed)
    planners.drafters = drafters
    kv_tokens = _kv_tokens(cfg, model, plans)
    router = Router(cfg.router.policy, world.replicas, np.random.default_rng(router_seed),
                    **cfg.router.model_dump(exclude={"policy"}))
    arrivals = make_arrivals(world, router)
    for r, groups in enumerate(placement.replicas):
        world.replicas.append(make_replica(world, cfg, r, r, groups, planners, kv_tokens, arrivals,
                                           exclusive[r], own_pipeline[r],
                                           cls=Replica if drafters is None else SpeculativeReplica))
    if drafters is not None:
        attach_speculation(world, cfg, spec_seed)
    attach_swap(world, cfg)         # preemption by swap to host memory (engine/swap.py)
    if cfg.scheduler.prefix_caching:
        for rep in world.replicas:
            rep.kv.prefix = PrefixCache(rep.kv, prefix_segment_tokens(cfg.workload))
    return world


def pool_precision(cfg: SimConfig) -> Precision:
    runtime = get_runtime(cfg.engine.runtime)
    return Precision(**cfg.precision.model_dump(), fused_quant=runtime.fused_quant)


def make_arrivals(world: World, router: Router):
    ac = world.cfg.workload.arrivals
    if ARRIVAL_PROCESSES.get(ac.process).closed:
        return ClosedLoop(world.env, world.requests, router, ac.concurrency, ac.think_time_s)
    return Arrivals(world.env, world.requests, router)


def make_replica(world: World, cfg: SimConfig, index: int, r: int, groups, planners: _Planners, kv_tokens: int,
                 arrivals, exclusive_row: list[bool], own_pipeline: bool, cls=Replica, coalesce: bool = True,
                 **extra) -> Replica:
    """Replica `index` of the world (`r` within its pool, whose config is `cfg`) on GPU `groups`."""
    env, par, sc = world.env, cfg.parallelism, cfg.scheduler
    runtime = get_runtime(cfg.engine.runtime)
    # vLLM's PP sends hidden states and the residual stream (IntermediateTensors) to the next stage
    p2p_bytes_per_token = 2 * world.model.hidden * DTYPE_BYTES[cfg.precision.activations]
    fast = cfg.fidelity == "fast"
    kv = BlockManager(kv_tokens // cfg.engine.block_size, cfg.engine.block_size, cfg.engine.kv_watermark)
    batch_size = sc.batch_size or sc.max_batch_size
    schedulers = [Scheduler(sc.policy, kv, max_batch_size=sc.max_batch_size,
                            max_batched_tokens=sc.max_batched_tokens, chunk_size=sc.chunk_size,
                            batch_size=max(1, batch_size // par.pp), arrivals_pending=arrivals.pending,
                            admission=sc.admission or runtime.admission)
                  for _ in range(par.pp)]
    stages = [Stage(env, world.comm, planners.planner(r, s, groups[s]), cfg.fidelity, exclusive_row[s])
              for s in range(par.pp)]
    return cls(env, index, schedulers, stages, arrivals, world.network,
               coalesce_decode=cfg.engine.coalesce_decode and fast and coalesce,
               p2p_bytes_per_token=p2p_bytes_per_token, timeline=world.timeline,
               fast_transfers=fast, closed_pipeline=fast and own_pipeline, runtime=runtime, **extra)
