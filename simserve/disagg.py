"""The world of a disaggregated deployment: a prefill pool and a decode pool on one cluster.

Each pool is the config with its own parallel layout and GPU type (`pool_config`), built with the
same pieces as a co-located world (stage shards, memory plan, plan builders, replicas); the prefill
pool's GPUs come first, the decode pool's start at the next GPU its groups can begin on. Requests
arrive at the prefill pool's router; `engine.disagg.KvHandoff` moves each prefilled request's KV to
a decode replica chosen by a second router of the same policy. A stage whose links the KV flows can
reach is played, not priced (its traffic is not its own).

`pool_summary(world)` is the summary's `disaggregation` key: TTFT and goodput of the prefill
pool, TPOT and goodput of the decode pool, and the KV transfers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simserve.catalog import get_hardware
from simserve.comm import Communicator
from simserve.config import SimConfig
from simserve.cost.memory import kv_bytes_per_token
from simserve.cost import Shard
from simserve.engine.disagg import KvHandoff, PrefillReplica, kv_shares
from simserve.engine.env import SimEnvironment
from simserve.engine.timeline import Timeline
from simserve.errors import ConfigError
from simserve.layout import check_layout, swap_preemption
from simserve.metrics import distribution
from simserve.network.flows import Network
from simserve.network.topology import topology_for_cluster
from simserve.placement import Placement, place
from simserve.router import Router
from simserve.world import (World, _kv_tokens, _pair_links, _Planners, exclusive_links, make_arrivals, make_replica,
                            make_requests, plan_memory, pool_precision, stage_shards)


@dataclass
class Pools:
    prefill: list
    decode: list
    handoff: KvHandoff
    configs: dict          # pool name -> its SimConfig


def pool_config(cfg: SimConfig, name: str) -> SimConfig:
    pool = getattr(cfg.disaggregation, name)
    par = cfg.parallelism.model_copy(update={"tp": pool.tp, "pp": pool.pp, "dp": pool.dp})
    cluster = cfg.cluster if pool.hardware is None else cfg.cluster.model_copy(update={"hardware": pool.hardware})
    return cfg.model_copy(update={"parallelism": par, "cluster": cluster, "disaggregation": None})


def _place_pools(configs: dict, topology) -> dict[str, Placement]:
    """Prefill pool from GPU 0; the decode pool from the first GPU after it where its groups align."""
    gpn, total = topology.gpus_per_node, topology.nodes * topology.gpus_per_node
    out, offset = {}, 0
    for name, pc in configs.items():
        par = pc.parallelism
        align = par.tp if par.tp <= gpn else gpn
        offset = -(-offset // align) * align
        need = par.tp * par.pp * par.dp
        if offset + need > total:
            raise ConfigError(f"disaggregation: the {name} pool (tp={par.tp} x pp={par.pp} x dp={par.dp}) needs "
                              f"GPUs {offset}..{offset + need - 1}; the cluster has {total}")
        local = place(par.tp, par.pp, par.dp, -(-need // gpn) + (1 if offset % gpn else 0), gpn)
        shifted = tuple(tuple(tuple(g + offset for g in group) for group in rep) for rep in local.replicas)
        out[name] = Placement(shifted, gpn)
        offset += need
    return out


def _exclusive(topology, placements: dict[str, Placement], placement: Placement):
    """exclusive_links of the joined placement, less anything the KV flows between pools can reach."""
    groups, pipelines = exclusive_links(topology, placement)
    src = [g for rep in placements["prefill"].replicas for group in rep for g in group]
    dst = [g for rep in placements["decode"].replicas for group in rep for g in group]
    kv_links = _pair_links(topology, src, dst)
    for r, rep in enumerate(placement.replicas):
        groups[r] = [own and not (_pair_links(topology, g, g) & kv_links) for own, g in zip(groups[r], rep)]
        stage_links = set().union(*(_pair_links(topology, a, b) for a, b in zip(rep, rep[1:] + rep[:1])))
        pipelines[r] = pipelines[r] and not (stage_links & kv_links)
    return groups, pipelines


def build_disaggregated(cfg: SimConfig, model, wall_start: float) -> World:
    if model.moe is not None:
        raise ConfigError(f"disaggregation: {model.name} is a mixture-of-experts model; disaggregated MoE "
                          f"pools are not modelled yet")
    swap_preemption(cfg, model)         # refused with disaggregation (the pools' configs do not say so)
    configs = {name: pool_config(cfg, name) for name in ("prefill", "decode")}
    for pc in configs.values():
        check_layout(pc, model)
    topology = topology_for_cluster(cfg.cluster, launch=cfg.collectives.launch, kernels=cfg.collectives.kernels,
                                    quick_reduce=cfg.collectives.quick_reduce)
    placements = _place_pools(configs, topology)
    joined = Placement(placements["prefill"].replicas + placements["decode"].replicas, topology.gpus_per_node)
    parts = {}
    for name, pc in configs.items():
        gpu = get_hardware(pc.cluster.hardware)
        precision = pool_precision(pc)
        shards = stage_shards(pc, model, gpu, precision)
        parts[name] = (gpu, precision, shards, plan_memory(pc, model, gpu, shards, precision))
    workload_seed, router_seed, moe_seed = np.random.SeedSequence(cfg.seed).spawn(3)
    requests, source = make_requests(cfg, model, workload_seed)
    env = SimEnvironment()
    network = Network(env, topology)
    world = World(cfg, model, get_hardware(cfg.cluster.hardware), topology, joined,
                  parts["prefill"][3] + parts["decode"][3], requests, source, env, network,
                  Communicator(env, network, cfg.fidelity),
                  Timeline.for_run(cfg.engine, len(requests), cfg.parallelism.pp),
                  wall_start=wall_start)
    prefill, decode = [], []
    prefill_rng, decode_rng = (np.random.default_rng(s) for s in router_seed.spawn(2))
    arrivals = make_arrivals(world, Router(cfg.router.policy, prefill, prefill_rng))
    layers = {name: tuple(sh.num_layers for sh in parts[name][2]) for name in configs}
    shares = kv_shares(model.num_kv_heads if model.mla is None else 1,   # a latent KV is not split by TP
                       layers["prefill"], configs["prefill"].parallelism.tp,
                       layers["decode"], configs["decode"].parallelism.tp)
    handoff = KvHandoff(env, network, Router(cfg.router.policy, decode, decode_rng), shares,
                        kv_bytes_per_token(model, Shard(tp=1), parts["prefill"][1]),
                        cfg.disaggregation.kv_transfer == "layerwise", world.timeline)
    exclusive, own_pipeline = _exclusive(topology, placements, joined)
    index = 0
    for name, pool, extra in (("prefill", prefill, {"cls": PrefillReplica, "handoff": handoff}),
                              ("decode", decode, {"coalesce": False})):
        gpu, precision, shards, plans = parts[name]
        pc = configs[name]
        planners = _Planners(pc, model, gpu, precision, shards, moe_seed)
        for r, groups in enumerate(placements[name].replicas):
            rep = make_replica(world, pc, index, r, groups, planners, _kv_tokens(pc, model, plans), arrivals,
                               exclusive[index], own_pipeline[index], **extra)
            pool.append(rep)
            world.replicas.append(rep)
            index += 1
    world.pools = Pools(prefill, decode, handoff, configs)
    return world


def _pool(world: World, name: str, reps: list, done, duration_s: float) -> dict:
    pc = world.pools.configs[name]
    par = pc.parallelism
    slo = world.cfg.slo
    if name == "prefill":
        metric, bound = done.ttft_s.to_numpy(), slo.ttft_s
    else:
        metric, bound = done.tpot_s.to_numpy(), slo.tpot_s
    good = np.ones(len(done), dtype=bool) if bound is None else ~(metric > bound)     # NaN TPOT passes
    return {
        "hardware": get_hardware(pc.cluster.hardware).name, "layout": {"tp": par.tp, "pp": par.pp, "dp": par.dp},
        "replicas": [rep.index for rep in reps], "num_gpus": sum(len(st.gpus) for rep in reps for st in rep.stages),
        ("ttft" if name == "prefill" else "tpot"): distribution(metric),
        # requests meeting this pool's own SLO (TTFT for prefill, TPOT for decode), per second
        "goodput_requests_per_s": float(good.sum()) / duration_s if len(done) else 0.0,
        "kv_peak_utilization": max(r.kv.peak_used / r.kv.num_blocks for r in reps),
    }


def pool_summary(world: World, df) -> dict:
    """The summary's `disaggregation` key (see the module docstring)."""
    pools = world.pools
    done = df[df.status == "completed"]
    start = float(df.arrival_s.min()) if len(df) else 0.0
    duration_s = max((float(done.finish_s.max()) if len(done) else start) - start, 1e-12)
    handoff = pools.handoff
    return {
        "kv_transfer": world.cfg.disaggregation.kv_transfer,
        "prefill": _pool(world, "prefill", pools.prefill, done, duration_s),
        "decode": _pool(world, "decode", pools.decode, done, duration_s),
        "kv_transfers": handoff.transfers,
        "kv_bytes_per_transfer": handoff.bytes_moved / max(handoff.transfers, 1),
        # first token sampled -> KV in place at the decode replica (whole: the transfer; layerwise:
        # what of it the prefill did not hide)
        "kv_transfer_wait_s": distribution(np.asarray(handoff.transfer_s, dtype=float)),
    }
