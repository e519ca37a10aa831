"""The layouts a plan searches, and pruning before any simulation.

Pruning removes only layouts that cannot meet the SLO at any rate:
- memory: a stage's weights, activations and reserved memory leave no KV block
  (simserve.cost.memory.memory_plan, simserve.cost.moe.moe_memory_plan, the engine's own plans);
- closed form (dense models): every request's TTFT is at least its prefill alone on an idle
  replica, and every decode iteration it takes part in at least a lone decode step at its context,
  both increasing in the prompt length; so a percentile of TTFT (TPOT) is at least the lone
  prefill (decode step) of that percentile's prompt length (simserve.estimate, which equals a
  simulated lone request, tests/test_estimate.py). A layout whose bound already exceeds the limit
  is reported infeasible with that metric as binding.
The closed form also gives each layout's starting rate, meant to be above the rate the search
finds (simserve.plan.search approaches it from above, where probes end early): its replicas'
batch capacity (KV-limited batch / time to serve that batch at the workload's mean lengths) times
sqrt(pp). The estimate prices a pipeline with one micro-batch in flight (its token time is the
sum of the stages'), a pipeline of pp busy stages serves up to pp times that: sqrt(pp) is the
middle of that range on the rate grid's log scale. On the 70B / 16 H100 / one-hour Azure plan
(device run, 2026-12-02) the SLO rates found were 0.42-0.75 of this start for tp1-tp8 x pp1-pp8
(the start half of this without sqrt(pp) was below seven of nine answers, and probes below the
answer run to the end).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from simserve.catalog import get_hardware, get_model
from simserve.cost import Precision, Shard, memory_plan
from simserve.cost.memory import GiB
from simserve.errors import SimserveError


@dataclass(frozen=True)
class Layout:
    model: str
    hardware: str
    tp: int
    pp: int
    dp: int
    ep: int
    chunk_size: int
    max_batch_size: int
    moe: bool = False
    node_size: int = 8

    @property
    def replica_gpus(self) -> int:
        return max(self.ep, self.tp) if self.moe else self.tp * self.pp

    @property
    def num_gpus(self) -> int:
        return self.replica_gpus * self.dp

    @property
    def name(self) -> str:
        ep = f" ep{self.ep}" if self.moe else ""
        return f"tp{self.tp} pp{self.pp} dp{self.dp}{ep} c{self.chunk_size} b{self.max_batch_size}"

    def config(self, base: dict, workload: dict, slo: dict, seed: int, fidelity: str) -> dict:
        """The config of one probe without its rate (dicts only: picklable, hashable as JSON)."""
        cfg = {k: v for k, v in base.items() if k not in ("model", "parallelism", "workload", "slo", "seed")}
        nodes = max(1, math.ceil(self.num_gpus / self.node_size))
        cluster = dict(cfg.get("cluster") or {})
        cluster.update({"hardware": self.hardware, "nodes": nodes, "gpus_per_node": self.node_size})
        sched = dict(cfg.get("scheduler") or {})
        sched.update({"chunk_size": self.chunk_size, "max_batch_size": self.max_batch_size})
        # no timeline unless the base asks for one: a probe reads only the summary, and recording
        # what happened when costs CPU (~5-10% of a pp1 probe of the 70B plan) without changing it
        engine = {"timeline": False, **(cfg.get("engine") or {})}
        return {**cfg, "model": self.model, "cluster": cluster, "scheduler": sched, "engine": engine,
                "parallelism": {"tp": self.tp, "pp": self.pp, "dp": self.dp, "ep": self.ep},
                "workload": workload, "slo": request_slo(slo), "seed": seed, "fidelity": fidelity}


def request_slo(slo: dict) -> dict:
    """The per-request goodput limits (config `slo:`) from the plan's percentile limits."""
    def pick(metric):
        return slo.get(f"{metric}_p99", slo.get(f"{metric}_p50"))
    return {"ttft_s": pick("ttft"), "tpot_s": pick("tpot")}


@dataclass
class Candidate:
    """A layout and what pruning found: status 'search' (to simulate) or 'infeasible'."""
    layout: Layout
    status: str = "search"
    reason: str = ""
    binding: str = ""
    start_rate: float | None = None
    bounds: dict = field(default_factory=dict)


def _powers(limit: int) -> list[int]:
    return [1 << i for i in range(int(math.log2(limit)) + 1)] if limit >= 1 else []


def node_size(hardware: str) -> int:
    from simserve.network.topology import build_topology
    return build_topology(get_hardware(hardware), nodes=1).gpus_per_node


def enumerate_layouts(spec, model_name: str, hardware: str) -> list[Layout]:
    model, gpus, sp = get_model(model_name), spec.gpus, spec.space
    hardware = get_hardware(hardware).name
    node = node_size(hardware)
    moe = model.moe is not None
    tps = sp.tp or _powers(min(node, gpus))
    pps = [1] if moe else (sp.pp or _powers(gpus))
    eps = (sp.ep or [1, *[p for p in _powers(gpus) if p > 1]]) if moe else [1]
    out = []
    for tp in tps:
        if model.num_heads % tp or model.intermediate % tp:
            continue
        for pp in pps:
            if pp > model.num_layers:
                continue
            for ep in eps:
                if moe and ep > 1 and (ep % tp or model.moe.num_experts % ep):
                    continue
                size = max(ep, tp) if moe else tp * pp
                if size > gpus:
                    continue
                dps = [gpus // size] if sp.dp == "fill" else [d for d in sp.dp if d * size <= gpus]
                for dp in dps:
                    for chunk in sp.chunk_size:
                        for batch in sp.max_batch_size:
                            out.append(Layout(model.name, hardware, tp, pp, dp, ep, chunk, batch, moe, node))
    return out


def _precision(base: dict) -> Precision:
    return Precision(**(base.get("precision") or {}))


def memory_check(layout: Layout, base: dict) -> tuple[bool, str, int]:
    """(fits, reason, KV tokens per replica) from the engine's memory plans."""
    from simserve.placement import split_layers

    model, gpu, prec = get_model(layout.model), get_hardware(layout.hardware), _precision(base)
    eng, sched = base.get("engine") or {}, base.get("scheduler") or {}
    kw = dict(gpu_memory_utilization=eng.get("gpu_memory_utilization", 0.9),
              reserved_bytes=eng.get("reserved_GiB", 1.5) * GiB,
              max_tokens=sched.get("max_batched_tokens", 8192), max_seqs=layout.max_batch_size)
    if layout.moe:
        from simserve.cost.moe import MoeLayout, moe_memory_plan
        moe_layout = MoeLayout(ep=layout.ep, tp=layout.tp, redundant=(base.get("moe") or {}).get("redundant_experts", 0))
        plan, _ = moe_memory_plan(model, moe_layout, prec, gpu, **kw)
        plans, tokens = [plan], plan.kv_capacity_tokens * moe_layout.dp_attention
    else:
        layers = split_layers(model.num_layers, layout.pp)
        shards = [Shard(tp=layout.tp, num_layers=n, first_stage=s == 0, last_stage=s == len(layers) - 1)
                  for s, n in enumerate(layers)]
        plans = [memory_plan(model, sh, prec, gpu, **kw) for sh in shards]
        tokens = min(p.kv_capacity_tokens for p in plans)
    worst = min(plans, key=lambda p: p.kv_capacity_bytes)
    if tokens < eng.get("block_size", 16):
        return False, (f"does not fit: weights {worst.weights_bytes / GiB:.1f} GiB + activations "
                       f"{worst.activation_bytes / GiB:.1f} GiB + reserved {worst.reserved_bytes / GiB:.1f} GiB "
                       f"exceed {worst.usable_bytes / GiB:.1f} GiB usable per GPU"), 0
    return True, "", tokens


def _quantile(values: np.ndarray, metric: str) -> float:
    q = 50 if metric.endswith("p50") else 99
    return float(np.percentile(values, q, method="lower")) if len(values) else 0.0


def closed_form(layout: Layout, base: dict, lengths: tuple[np.ndarray, np.ndarray], slo: dict,
                kv_tokens: int) -> tuple[dict, float]:
    """(lower bounds of the SLO's TTFT/TPOT percentiles, starting rate in req/s) of a dense layout."""
    from simserve.estimate import estimate

    prec = _precision(base)
    isl, osl = lengths
    runtime = (base.get("engine") or {}).get("runtime")     # None: the config's default
    kw = dict(model=layout.model, hardware=layout.hardware, tp=layout.tp, pp=layout.pp,
              precision=prec.weights, kv_precision=prec.kv, runtime=runtime)
    bounds = {}
    for metric in slo:
        if metric.startswith(("ttft", "tpot")):
            sel = isl if metric.startswith("ttft") else isl[osl > 1]
            e = estimate(**kw, batch=1, isl=max(1, int(_quantile(sel, metric))), osl=2)
            bounds[metric] = e["prefill" if metric.startswith("ttft") else "decode"]["time_s"]
    mean_isl, mean_osl = max(1, int(isl.mean())), max(2, int(osl.mean()))
    batch = max(1, min(layout.max_batch_size, kv_tokens // (mean_isl + mean_osl)))
    steps = min(mean_osl, 32)      # a short decode run: the start only has to be within a few x
    e = estimate(**kw, batch=batch, isl=mean_isl, osl=steps)
    per_request_s = e["prefill"]["time_s"] + e["decode"]["time_s"] * (mean_osl - 1)
    # x sqrt(pp), not x pp: the KV-limited batch already grows with pp (each stage holds its layers'
    # KV only) and the lanes split it; at x pp the 70B tp1 pp4 dp4 on 16 H100s started 2.2x above
    # its SLO rate (one-hour Azure trace), at x 1 below it (module docstring)
    return bounds, layout.dp * batch / per_request_s * math.sqrt(layout.pp)


def prune(layout: Layout, base: dict, lengths, slo: dict) -> Candidate:
    fits, reason, kv_tokens = memory_check(layout, base)
    if not fits:
        return Candidate(layout, "infeasible", reason, "memory")
    if layout.moe:
        return Candidate(layout)
    try:
        bounds, start = closed_form(layout, base, lengths, slo, kv_tokens)
    except SimserveError as exc:     # the estimate cannot price it: let the simulation decide
        return Candidate(layout, reason=f"no closed form: {exc}")
    over = {m: b / slo[m] for m, b in bounds.items() if b > slo[m]}
    if over:
        m = max(over, key=over.get)
        return Candidate(layout, "infeasible", f"closed form: {m} >= {bounds[m]:.4g} s > {slo[m]:g} s at any rate",
                         m, None, bounds)
    return Candidate(layout, start_rate=start, bounds=bounds)


def candidates(spec, base: dict, workload: dict, lengths_by_model: dict) -> list[Candidate]:
    out = []
    for model in spec.models:
        for hw in spec.hardware:
            for layout in enumerate_layouts(spec, model, hw):
                out.append(prune(layout, base, lengths_by_model[get_model(model).name], spec.slo))
    return out


__all__ = ["Layout", "Candidate", "enumerate_layouts", "prune", "candidates", "request_slo"]
