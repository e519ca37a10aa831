"""`simserve estimate`: one prefill step and one decode step in closed form, and the memory plan.

No simulation: the same cost model the engine uses, evaluated for a fixed batch.
"""
from __future__ import annotations

from simserve.catalog import get_hardware, get_model
from simserve.cost import BatchStats, Precision, Shard, StepCost, head_ops, layer_ops, memory_plan
from simserve.cost.roofline import op_time
from simserve.errors import ConfigError


def _step(model, shard, precision, gpu, batch: BatchStats) -> dict:
    layers = shard.num_layers if shard.num_layers is not None else model.num_layers
    operators = []
    for op in layer_ops(model, shard, precision, batch):
        operators.append({"name": op.name, "count": layers, "flops": op.flops * layers,
                          "bytes": op.bytes * layers, "time_s": op_time(op, gpu) * layers})
    for op in head_ops(model, shard, precision, batch):
        operators.append({"name": op.name, "count": 1, "flops": op.flops, "bytes": op.bytes,
                          "time_s": op_time(op, gpu)})
    compute_s = StepCost(model, shard, precision, gpu).time(batch)
    return {"time_s": compute_s, "compute_s": compute_s, "communication_s": 0.0, "operators": operators}


def estimate(*, model: str, hardware: str, tp: int = 1, pp: int = 1, ep: int = 1, precision: str = "bf16",
             kv_precision: str | None = None, batch: int = 1, isl: int = 1024, osl: int = 128) -> dict:
    for name, value in (("batch", batch), ("isl", isl), ("osl", osl), ("tp", tp), ("pp", pp), ("ep", ep)):
        if value < 1:
            raise ConfigError(f"--{name} must be a positive integer (got {value})")
    if pp != 1 or ep != 1:
        raise ConfigError("--pp and --ep are not yet supported by estimate")
    m = get_model(model)
    gpu = get_hardware(hardware)
    if m.num_heads % tp:
        raise ConfigError(f"tp={tp} does not divide {m.name}'s {m.num_heads} attention heads")
    dtypes = ("fp32", "bf16", "fp16", "fp8", "fp4")
    if precision not in dtypes:
        raise ConfigError(f"--precision {precision!r}: choose one of {', '.join(dtypes)}")
    kv = kv_precision or ("bf16" if precision == "fp4" else precision)
    if kv not in dtypes:
        raise ConfigError(f"--kv-precision {kv!r}: choose one of {', '.join(dtypes)}")
    prec = Precision(weights=precision, kv=kv, activations="fp32" if precision == "fp32" else "bf16")
    shard = Shard(tp=tp)
    prefill = _step(m, shard, prec, gpu, BatchStats.of([(isl, 0)] * batch))
    decode = _step(m, shard, prec, gpu, BatchStats.of([], [isl + 1] * batch))
    plan = memory_plan(m, shard, prec, gpu, max_tokens=max(8192, isl), max_seqs=max(256, batch))
    per_seq = isl + osl
    mem = plan.as_dict() | {
        "weights_bytes": plan.weights_bytes,
        "kv_capacity_tokens": plan.kv_capacity_tokens,
        "max_batch": plan.kv_capacity_tokens // per_seq if plan.fits else 0,
        "fits": plan.fits and plan.kv_capacity_tokens >= batch * per_seq,
    }
    step_cost = StepCost(m, shard, prec, gpu)
    decode_total = sum(step_cost.time(BatchStats.of([], [isl + 1 + j] * batch)) for j in range(osl - 1))
    return {"model": m.name, "hardware": gpu.name, "tp": tp, "precision": prec.__dict__, "batch": batch,
            "isl": isl, "osl": osl, "prefill": prefill, "decode": decode, "memory": mem,
            "request_latency_s": prefill["time_s"] + decode_total,
            "output_tokens_per_s": batch * osl / (prefill["time_s"] + decode_total)}
