"""`simserve estimate`: one prefill step and one decode step in closed form, and the memory plan.

No simulation: each stage's iteration plan (simserve.iteration), the same plan the engine plays,
priced in closed form on an idle network, for one fixed batch going through the pipeline as one
micro-batch, as the serving runtime runs it (simserve.runtime: CUDA-graph padding of decode steps,
eager launches, and the host time of each iteration, hidden under the previous GPU step where the
runtime overlaps them).
"""
from __future__ import annotations

from dataclasses import replace

from simserve.catalog import DTYPE_BYTES, get_hardware, get_model
from simserve.cost import BatchStats, Precision, Shard, StepCost, head_ops, layer_ops, memory_plan
from simserve.cost.roofline import op_time
from simserve.config import EngineConfig
from simserve.errors import ConfigError
from simserve.iteration import IdleNetwork, price
from simserve.iteration.build import DensePlanner
from simserve.network.topology import build_topology
from simserve.placement import place, split_layers
from simserve.runtime import RuntimeStepCost, exposed_host_s, get_runtime, host_s


def _operators(model, shards, precision, gpu, batch: BatchStats) -> list[dict]:
    """Per operator, summed over every layer of every stage (one micro-batch's sequential path)."""
    totals: dict[str, dict] = {}
    for shard in shards:
        for op, count in [(op, shard.num_layers) for op in layer_ops(model, shard, precision, batch)] + \
                         [(op, 1) for op in head_ops(model, shard, precision, batch)]:
            row = totals.setdefault(op.name, {"name": op.name, "count": 0, "flops": 0.0, "bytes": 0.0, "time_s": 0.0})
            row["count"] += count
            row["flops"] += op.flops * count
            row["bytes"] += op.bytes * count
            row["time_s"] += op_time(op, gpu) * count
    return list(totals.values())


def _time(planner: DensePlanner, network: IdleNetwork, batch: BatchStats) -> float:
    return price(planner.plan(batch), network).total


def _step(model, shards, stages, network, precision, gpu, batch: BatchStats, transfer_s: float,
          host: float) -> dict:
    compute = [st.step_cost.time(batch) for st in stages]
    comm = [_time(st, network, batch) - c for st, c in zip(stages, compute)]
    p2p = transfer_s * (len(stages) - 1)
    return {"time_s": host + sum(compute) + sum(comm) + p2p, "compute_s": sum(compute), "host_s": host,
            "communication_s": sum(comm) + p2p, "allreduce_and_gather_s": sum(comm), "p2p_s": p2p,
            "stages": [{"layers": sh.num_layers, "compute_s": c, "communication_s": m}
                       for sh, c, m in zip(shards, compute, comm)],
            "operators": _operators(model, shards, precision, gpu, batch)}


def _precision(m, tp: int, ep: int, precision: str, kv_precision: str | None) -> Precision:
    if ep != 1 or m.moe is not None or m.mla is not None:
        raise ConfigError("estimate covers dense models without expert parallelism; simulate MoE "
                          "layouts with `simserve run` (parallelism.ep)")
    if m.num_heads % tp:
        raise ConfigError(f"tp={tp} does not divide {m.name}'s {m.num_heads} attention heads")
    dtypes = ("fp32", "bf16", "fp16", "fp8", "fp4")
    if precision not in dtypes:
        raise ConfigError(f"--precision {precision!r}: choose one of {', '.join(dtypes)}")
    kv = kv_precision or ("bf16" if precision == "fp4" else precision)
    if kv not in dtypes:
        raise ConfigError(f"--kv-precision {kv!r}: choose one of {', '.join(dtypes)}")
    return Precision(weights=precision, kv=kv, activations="fp32" if precision == "fp32" else "bf16")


def _memory(m, shards, prec, gpu, batch: int, isl: int, osl: int) -> dict:
    plans = [memory_plan(m, sh, prec, gpu, max_tokens=max(8192, isl), max_seqs=max(256, batch)) for sh in shards]
    kv_tokens = min(p.kv_capacity_tokens for p in plans)
    per_seq = isl + osl
    worst = max(plans, key=lambda p: p.weights_bytes)
    return worst.as_dict() | {
        "weights_bytes": worst.weights_bytes,
        "kv_capacity_tokens": kv_tokens,
        "max_batch": kv_tokens // per_seq if all(p.fits for p in plans) else 0,
        "fits": all(p.fits for p in plans) and kv_tokens >= batch * per_seq,
    }


def estimate(*, model: str, hardware: str, tp: int = 1, pp: int = 1, ep: int = 1, precision: str = "bf16",
             kv_precision: str | None = None, batch: int = 1, isl: int = 1024, osl: int = 128,
             topology: str | None = None, runtime=None) -> dict:
    """`runtime`: a catalog name, YAML file or dict (None: the config's default engine.runtime)."""
    for name, value in (("batch", batch), ("isl", isl), ("osl", osl), ("tp", tp), ("pp", pp), ("ep", ep)):
        if value < 1:
            raise ConfigError(f"--{name} must be a positive integer (got {value})")
    m = get_model(model)
    gpu = get_hardware(hardware)
    prec = _precision(m, tp, ep, precision, kv_precision)
    layers = split_layers(m.num_layers, pp)
    shards = [Shard(tp=tp, num_layers=n, first_stage=s == 0, last_stage=s == pp - 1) for s, n in enumerate(layers)]
    gpus_per_node = build_topology(gpu, nodes=1, name=topology).gpus_per_node   # the node as catalogued
    nodes = -(-tp * pp // gpus_per_node)
    topo = build_topology(gpu, nodes=nodes, name=topology)
    placement = place(tp, pp, 1, topo.nodes, topo.gpus_per_node)
    net = IdleNetwork(topo)
    rt = get_runtime(runtime if runtime is not None else EngineConfig.model_fields["runtime"].default)
    prec = replace(prec, fused_quant=rt.fused_quant)
    stages = [DensePlanner(m, sh, prec, gpu, placement.replicas[0][s], "auto",
                           RuntimeStepCost(StepCost(m, sh, prec, gpu), rt, gpu.efficiency.kernel_overhead_s))
              for s, sh in enumerate(shards)]

    def transfer_s(tokens: int) -> float:   # hidden states + residual, rank 0 -> rank 0 of the next stage
        if pp == 1:
            return 0.0
        a, b = placement.replicas[0][0][0], placement.replicas[0][1][0]
        hops = [topo.links[i] for i in topo.path(a, b)]
        nbytes = tokens * 2 * m.hidden * DTYPE_BYTES[prec.activations]
        return sum(h.latency_s for h in hops) + nbytes / min(h.bw_Bps for h in hops)

    prefill_batch = BatchStats.of([(isl, 0)] * batch)
    prefill = _step(m, shards, stages, net, prec, gpu, prefill_batch, transfer_s(batch * isl),
                    host_s(rt, prefill_batch))
    decode_host = host_s(rt, BatchStats.of([], [isl + 1] * batch))
    decode = _step(m, shards, stages, net, prec, gpu, BatchStats.of([], [isl + 1] * batch), transfer_s(batch),
                   decode_host)
    decode_total, prev_gpu = 0.0, prefill["time_s"] - prefill["host_s"]
    for j in range(osl - 1):
        step = BatchStats.of([], [isl + 1 + j] * batch)
        gpu_s = sum(_time(st, net, step) for st in stages) + transfer_s(batch) * (pp - 1)
        decode_total += exposed_host_s(rt, decode_host, prev_gpu) + gpu_s
        prev_gpu = gpu_s
    return {"model": m.name, "hardware": gpu.name, "topology": topo.name, "tp": tp, "pp": pp,
            "runtime": rt.name, "precision": prec.__dict__, "batch": batch, "isl": isl, "osl": osl,
            "prefill": prefill, "decode": decode, "memory": _memory(m, shards, prec, gpu, batch, isl, osl),
            "request_latency_s": prefill["time_s"] + decode_total,
            "output_tokens_per_s": batch * osl / (prefill["time_s"] + decode_total)}
