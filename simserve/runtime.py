"""Serving runtimes: how an engine spends host (CPU) time per iteration and runs its kernels.

A runtime is catalog data (simserve/catalog/runtimes/*.yaml; users add their own by file or inline
dict, like hardware and models), read into a frozen `Runtime`. Pure functions here turn it into
what the engine needs (layer 1: no SimPy):

- `host_s(rt, batch)`: CPU seconds of one iteration, fixed + per sampled sequence + per scheduled
  token (scheduling, input preparation, sampling and output processing).
- `iteration_s(rt, gpu_s, host_s, prev_gpu_s)`: wall time of an iteration. A runtime that
  overlaps the CPU work of step n+1 with GPU step n (vLLM V1 `--async-scheduling`, SGLang's
  overlap scheduler, TensorRT-LLM's overlap scheduler) hides it under the previous GPU step when
  that step ran right before (only the excess shows); otherwise host and GPU add up.
- `graph_batch(rt, batch)`: CUDA-graph padding: a decode-only batch of n sequences runs the graph
  captured for the smallest captured size >= n (the padded rows do GEMM and LM-head work but read
  no KV); above the largest captured size, or when graphs are off, the step runs eagerly.
- `eager_s(rt, gpu_s, kernels)`: an eager step cannot finish before the CPU has launched its
  kernels one by one: max(GPU time, kernels x launch cost).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from simserve.catalog import CATALOG_DIR, _build, _load_yaml
from simserve.cost.operators import BatchStats
from simserve.cost.step import FEATURE_INDEX, feature_list
from simserve.errors import CatalogError

RUNTIME_DIR = CATALOG_DIR / "runtimes"
PREEMPTIONS = ("recompute", "swap")     # how a preempted sequence's KV is given up (scheduler.swap)


@dataclass(frozen=True)
class HostCost:
    fixed_s: float = 0.0        # per iteration: scheduler pass, launch of the step, bookkeeping
    per_seq_s: float = 0.0      # per sequence that samples a token: sampling, output processing
    per_token_s: float = 0.0    # per scheduled token: input ids, positions, slot mapping
    overlap: bool = False       # CPU work of step n+1 runs under GPU step n


@dataclass(frozen=True)
class CudaGraphs:
    enabled: bool = True
    capture_sizes: tuple[int, ...] = ()    # ascending decode batch sizes with a captured graph
    eager_launch_s: float = 0.0            # CPU cost of launching one kernel outside a graph


@dataclass(frozen=True)
class Runtime:
    name: str
    description: str = ""
    version: str = ""
    host: HostCost = field(default_factory=HostCost)
    cuda_graphs: CudaGraphs = field(default_factory=CudaGraphs)
    fused_quant: bool = False          # activation quantisation fused into the producing kernel
    admission: str = "vllm"            # default scheduler.admission (simserve.scheduler.ADMISSIONS)
    preemption: str = "recompute"      # default scheduler.preemption: recompute | swap (to host memory)
    swap_space_GiB: float = 0.0        # pinned host memory per GPU for swapped-out KV (vLLM --swap-space)
    sources: Mapping[str, str] = field(default_factory=dict)   # field -> where its number comes from


def capture_sizes(spec: Any) -> tuple[int, ...]:
    """A list of sizes, or ranges written as [start, stop, step] triples (stop inclusive) inside
    `ranges:`, as the engines generate them in code."""
    if isinstance(spec, Mapping):
        sizes: list[int] = list(spec.get("sizes", ()))
        for start, stop, step in spec.get("ranges", ()):
            sizes += list(range(int(start), int(stop) + 1, int(step)))
        limit = spec.get("max")
        spec = [s for s in sizes if limit is None or s <= limit]
    out = tuple(sorted({int(s) for s in spec or ()}))
    if any(s < 1 for s in out):
        raise CatalogError("runtime cuda_graphs.capture_sizes: sizes must be positive")
    return out


def runtime_from_dict(name: str, raw: Mapping[str, Any]) -> Runtime:
    raw = dict(raw)
    graphs = dict(raw.get("cuda_graphs") or {})
    graphs["capture_sizes"] = capture_sizes(graphs.get("capture_sizes"))
    raw["cuda_graphs"] = graphs
    raw.setdefault("host", {})
    raw["sources"] = dict(raw.get("sources") or {})
    rt = _build(Runtime, name, raw, {"host": HostCost, "cuda_graphs": CudaGraphs})
    h = rt.host
    for key in ("fixed_s", "per_seq_s", "per_token_s"):
        if not getattr(h, key) >= 0:
            raise CatalogError(f"runtime {name!r}: host.{key} must be >= 0 seconds")
    if rt.preemption not in PREEMPTIONS:
        raise CatalogError(f"runtime {name!r}: preemption must be one of {', '.join(PREEMPTIONS)} "
                           f"(got {rt.preemption!r})")
    gib = rt.swap_space_GiB
    if isinstance(gib, bool) or not isinstance(gib, (int, float)) or not gib >= 0:
        raise CatalogError(f"runtime {name!r}: swap_space_GiB must be a number of GiB >= 0")
    if not rt.cuda_graphs.eager_launch_s >= 0:
        raise CatalogError(f"runtime {name!r}: cuda_graphs.eager_launch_s must be >= 0 seconds")
    return rt


@lru_cache(maxsize=None)
def runtime_catalog() -> dict[str, Runtime]:
    out = {}
    for path in sorted(RUNTIME_DIR.glob("*.yaml")):
        raw = _load_yaml(path)
        out[path.stem] = runtime_from_dict(path.stem, raw)
    return out


def get_runtime(spec: str | Mapping[str, Any] | Runtime) -> Runtime:
    """A catalog name, a YAML file holding one runtime, or an inline dict (optionally `base:` a
    catalog runtime whose fields it overrides)."""
    if isinstance(spec, Runtime):
        return spec
    if isinstance(spec, Mapping):
        raw = dict(spec)
        base = raw.pop("base", None)
        name = str(raw.pop("name", f"custom-{base or 'runtime'}"))
        if base is not None:
            raw = _merge(_as_raw(get_runtime(base)), raw)
        return runtime_from_dict(name, raw)
    catalog = runtime_catalog()
    if str(spec) in catalog:
        return catalog[str(spec)]
    path = Path(str(spec))
    if path.suffix in (".yaml", ".yml"):
        return get_runtime({"name": path.stem, **_load_yaml(path)})
    raise CatalogError(f"unknown runtime {spec!r}; known: {', '.join(catalog)} (or give a YAML file "
                       f"or an inline dict)")


def _as_raw(rt: Runtime) -> dict[str, Any]:
    return {"description": rt.description, "version": rt.version, "fused_quant": rt.fused_quant,
            "admission": rt.admission, "preemption": rt.preemption, "swap_space_GiB": rt.swap_space_GiB,
            "sources": dict(rt.sources), "host": dict(vars(rt.host)),
            "cuda_graphs": {**vars(rt.cuda_graphs), "capture_sizes": list(rt.cuda_graphs.capture_sizes)}}


def _merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


# -- pure timing functions --------------------------------------------------------------------
def host_s(rt: Runtime, batch: BatchStats) -> float:
    """CPU seconds of one iteration (0 for an empty batch)."""
    if batch.tokens <= 0:
        return 0.0
    h = rt.host
    return h.fixed_s + h.per_seq_s * batch.logits_tokens + h.per_token_s * batch.tokens


def exposed_host_s(rt: Runtime, host: float, prev_gpu_s: float | None) -> float:
    """The part of an iteration's host time the GPU waits for. Without overlap, all of it. With
    overlap, the CPU prepared this step while the previous GPU step ran (`prev_gpu_s`, None when the
    engine was idle before this iteration): only what exceeds that step shows."""
    if not rt.host.overlap or prev_gpu_s is None:
        return host
    return host - prev_gpu_s if host > prev_gpu_s else 0.0


def iteration_s(rt: Runtime, gpu_s: float, host: float, prev_gpu_s: float | None) -> float:
    """Wall time of an iteration: its exposed host time, then its GPU work."""
    return exposed_host_s(rt, host, prev_gpu_s) + gpu_s


def graph_size(rt: Runtime, decode_seqs: int) -> int | None:
    """The captured batch size a decode-only step of `decode_seqs` sequences replays (None: eager)."""
    sizes = rt.cuda_graphs.capture_sizes
    if not rt.cuda_graphs.enabled or not sizes or decode_seqs > sizes[-1]:
        return None
    return sizes[bisect.bisect_left(sizes, decode_seqs)]


def graph_batch(rt: Runtime, batch: BatchStats, ranks: int = 1) -> tuple[BatchStats, bool]:
    """(the batch the kernels compute, whether it runs as a CUDA graph). Only decode-only batches
    are graphed; padding adds token rows (GEMMs, norms, LM head, sampling, and in MoE models the
    router and experts) but no KV reads, as padded slots point at no cache blocks (vLLM pads with
    PAD_SLOT_ID). A batch split over `ranks` data-parallel attention ranks is padded on each rank to
    the graph of the largest rank's share (vLLM pads every DP rank to the same token count,
    vllm/forward_context.py DPMetadata)."""
    if batch.prefill_tokens or not batch.decode_tokens:
        return batch, False
    size = graph_size(rt, -(-batch.decode_tokens // ranks))
    if size is None:
        return batch, False
    pad = size * ranks - batch.decode_tokens
    if pad == 0:
        return batch, True
    return replace(batch, decode_tokens=batch.decode_tokens + pad, logits_tokens=batch.logits_tokens + pad), True


def eager_s(rt: Runtime, gpu_s: float, kernels: float) -> float:
    """An eager step: the GPU waits for kernels the CPU launches one at a time."""
    launch = kernels * rt.cuda_graphs.eager_launch_s
    return gpu_s if gpu_s > launch else launch


class RuntimeStepCost:
    """A StepCost as the runtime runs it: decode-only batches padded to the next captured CUDA-graph
    size, everything else (and decode batches above the largest size) eager, i.e. no faster than
    the CPU launches its kernels. Same interface as cost.step.StepCost (`time`, `decode_times`),
    same floating-point operations, so a coalesced decode run still equals stepping it."""

    def __init__(self, step_cost, runtime: Runtime, kernel_overhead_s: float):
        self.inner = step_cost
        self.runtime = runtime
        # kernels per iteration by gate feature, recovered from the per-kernel overhead each op carries
        # (a GEMM priced by a measured efficiency curve carries none: it is one kernel)
        self._kernels = []
        for entry in step_cost.ops if kernel_overhead_s > 0 else ():
            gate, weight, overhead = entry[:3]
            curve = entry[5] if len(entry) > 5 else None
            self._kernels.append((gate, weight * (1.0 if curve is not None else overhead / kernel_overhead_s)))
        self._gates = sorted({gate for gate, _ in self._kernels})
        self._kernel_memo: dict[tuple, float] = {}

    def kernels(self, x: list) -> float:
        """Kernels an iteration launches: they depend only on which gates are positive (memoised)."""
        key = tuple([x[g] > 0 for g in self._gates])
        found = self._kernel_memo.get(key)
        if found is None:
            found = self._kernel_memo[key] = sum(k for gate, k in self._kernels if x[gate] > 0)
        return found

    def time(self, batch: BatchStats) -> float:
        padded, graphed = graph_batch(self.runtime, batch)
        x = feature_list(padded)
        gpu = self.inner.time_of(x)
        if graphed or not self.runtime.cuda_graphs.eager_launch_s:
            return gpu
        return eager_s(self.runtime, gpu, self.kernels(x))

    def decode_times(self, num_seqs: int, kv_tokens_start: float, steps: int):
        rows = graph_size(self.runtime, num_seqs)
        graphed = rows is not None
        gpu = self.inner.decode_times(num_seqs, kv_tokens_start, steps, rows if graphed else num_seqs)
        if graphed or not self.runtime.cuda_graphs.eager_launch_s:
            return gpu
        x: list = [0.0] * len(FEATURE_INDEX)           # the eager step's gates (the context reads none)
        x[FEATURE_INDEX["const"]] = 1.0
        for f in ("tokens", "decode_tokens", "logits_tokens"):
            x[FEATURE_INDEX[f]] = float(num_seqs)
        return np.maximum(gpu, self.kernels(x) * self.runtime.cuda_graphs.eager_launch_s)

