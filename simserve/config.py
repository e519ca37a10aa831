"""Configuration: strict pydantic models of the config contract (docs/architecture.md (contracts)).

A config is a YAML file or a dict. Unknown keys are errors that name the key and the allowed ones;
`--set a.b=value` overrides parse `value` as YAML. Defaults make the bundled default run:
Llama-3.1-8B on one H100 serving the Azure conversation trace.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simserve.catalog import load_yaml_text
from simserve.errors import ConfigError
from simserve.router import ROUTERS
from simserve.scheduler import ADMISSIONS, POLICIES
from simserve.scheduler.config import SpeculativeConfig, technique_conflicts
from simserve.workload.config import WorkloadConfig

Dtype = Literal["fp32", "bf16", "fp16", "fp8", "fp4"]


def allreduce_choices() -> tuple[str, ...]:
    """`collectives.allreduce` values: auto and every registered algorithm (read when validating,
    so an algorithm registered by a user's module is accepted)."""
    from simserve.collectives.allreduce import ALLREDUCE
    return ("auto",) + ALLREDUCE.names()


# Upper bounds on sizes, and why: a value beyond them is a typo or would run for hours, so it is
# refused at once with the reason (format_validation_error appends LIMIT_REASONS[field]).
MAX_GPUS_PER_GROUP = 4096       # tp, pp, dp, ep: the largest cluster the flow network builds quickly
MAX_NODES = 512                 # 512 nodes x 8 GPUs: topology build and routing stay under seconds
MAX_GPUS_PER_NODE = 72          # the largest scale-up domain in the catalog (GB200 NVL72)
MAX_BATCH = 1_000_000           # sequences in one batch
MAX_TOKENS = 10_000_000         # tokens in one batch, chunk or request (no model serves a longer context)
MAX_BLOCK = 1024                # vLLM's paged-KV block sizes are 1-256 tokens
MAX_SEED = 2 ** 63 - 1
LIMIT_REASONS = {
    "tp": "a parallel group of more GPUs than any modelled cluster", "pp": "more stages than GPUs modelled",
    "dp": "more replicas than GPUs modelled", "ep": "more experts ranks than GPUs modelled",
    "cp": "more context ranks than GPUs modelled",
    "nodes": f"the flow-level network of more than {MAX_NODES} nodes takes minutes to build",
    "gpus_per_node": f"no scale-up domain in the catalog exceeds {MAX_GPUS_PER_NODE} GPUs",
    "max_batch_size": "a million sequences per batch is beyond any serving engine",
    "batch_size": "a million sequences per batch is beyond any serving engine",
    "max_batched_tokens": "no model serves more than 10M tokens of context",
    "chunk_size": "no model serves more than 10M tokens of context",
    "block_size": "vLLM's KV blocks are 1-256 tokens; a larger block would only read as the model not fitting",
    "seed": "seeds are 64-bit integers",
    "num_requests": "requests are held in memory; 10M requests is ~10 GB",
    "duration_s": "more than three years of simulated time",
    "mean": "no model serves more than 10M tokens of context", "min": "no model serves more than 10M tokens",
    "max": "no model serves more than 10M tokens of context",
    "scale_up_GBps": "1 PB/s per GPU is beyond any link", "scale_out_GBps": "1 PB/s per GPU is beyond any link",
    "latency_us": "a one-second link latency is a unit mistake",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PrecisionConfig(Strict):
    weights: Dtype = "bf16"
    kv: Dtype = "bf16"
    activations: Literal["fp32", "bf16", "fp16"] = "bf16"
    # fp8/fp4 GEMM inputs: a per-tensor scale computed every step (dynamic) or calibrated into the
    # checkpoint (static, e.g. ModelOpt / llm-compressor FP8 checkpoints with input_scale)
    activation_scale: Literal["dynamic", "static"] = "dynamic"


class LinksConfig(Strict):
    """Overrides, per GPU and direction, all its links of that kind together."""
    scale_up_GBps: float | None = Field(None, gt=0, le=1e6)
    scale_out_GBps: float | None = Field(None, gt=0, le=1e6)
    latency_us: float | None = Field(None, ge=0, le=1e6)


class ClusterConfig(Strict):
    hardware: Union[str, dict[str, Any]] = "h100-sxm"
    nodes: int = Field(1, ge=1, le=MAX_NODES)
    gpus_per_node: Optional[int] = Field(None, ge=1, le=MAX_GPUS_PER_NODE)   # default: the topology's node size
    topology: str | None = None
    links: LinksConfig = LinksConfig()
    scale_out: dict[str, Any] = Field(default_factory=dict)   # builder options (oversubscription, rails)


class ParallelismConfig(Strict):
    tp: int = Field(1, ge=1, le=MAX_GPUS_PER_GROUP)
    pp: int = Field(1, ge=1, le=MAX_GPUS_PER_GROUP)
    dp: int = Field(1, ge=1, le=MAX_GPUS_PER_GROUP)
    ep: int = Field(1, ge=1, le=MAX_GPUS_PER_GROUP)
    cp: int = Field(1, ge=1, le=MAX_GPUS_PER_GROUP)
    # layers per pipeline stage: "even", "balanced" (equal stage times, LM head and embedding
    # included) or an explicit list
    stage_layers: Union[Literal["even", "balanced"], list[int]] = "even"
    placement: Optional[list[list[int]]] = None   # GPU ids per replica, stage-major then TP rank


class CollectivesConfig(Strict):
    allreduce: str = "auto"
    alltoall: Literal["auto", "direct", "pairwise"] = "direct"   # MoE dispatch/combine (NCCL/DeepEP send to all peers at once)
    launch: Literal["graph", "eager"] = "graph"   # CUDA graphs, or a host launch per call (topologies.yaml eager_launch_us)
    sync_point_drop: float = Field(0.0, ge=0, le=1)   # layers without their attention all-reduce (SPD)
    kernels: Optional[str] = None   # engine all-reduce kernels (engine_kernels.yaml); null: the topology's
    quick_reduce: Literal["none", "fp", "int8", "int6", "int4"] = "none"   # vLLM ROCm QuickReduce codec

    @model_validator(mode="after")
    def _known(self):
        choices = allreduce_choices()
        if self.allreduce not in choices:
            raise ValueError(f"unknown all-reduce algorithm {self.allreduce!r}; choose one of "
                             f"{', '.join(choices)}")
        return self


class MoeConfig(Strict):
    """Routing and expert placement of mixture-of-experts models (simserve.cost.moe documents them).

    routing: expert popularity uniform, zipf (zipf_s), dirichlet (dirichlet_alpha, default 1.0) or
    trace (a routing-trace file, `trace`); popularity fixed per layer (drawn once from the seed)
    unless `redraw` (re-drawn every iteration). Token counts per expert are drawn every iteration.
    distinct_layers: routing draws per iteration; MoE layer l uses draw l mod n (null: one per layer).
    placement: round_robin (expert e on EP rank e mod ep) or balanced (greedy by expected load);
    redundant_experts: extra copies of the hottest experts (balanced only; a multiple of ep).
    """
    routing: Literal["uniform", "zipf", "dirichlet", "trace"] = "uniform"
    zipf_s: float = Field(1.2, gt=0, le=100)
    dirichlet_alpha: float | None = Field(None, gt=0)
    trace: str | None = None
    redraw: bool = False
    distinct_layers: int | None = Field(4, ge=1)
    placement: Literal["round_robin", "balanced"] = "round_robin"
    redundant_experts: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _consistent(self):
        if self.routing == "trace" and not self.trace:
            raise ValueError("routing: trace needs moe.trace (a routing-trace CSV file)")
        if self.redundant_experts and self.placement != "balanced":
            raise ValueError("redundant_experts needs placement: balanced (hot experts are replicated "
                             "by expected load)")
        return self


def _registered(registry, name: str | None) -> str | None:
    if name is not None and name not in registry:
        raise ValueError(f"unknown {registry.kind} {name!r}; choose one of {', '.join(registry.names())}")
    return name


class SchedulerConfig(Strict):
    # a name registered in simserve.scheduler.POLICIES
    policy: str = "sarathi"
    # scheduler.admission: a name registered in simserve.scheduler.ADMISSIONS (null: the runtime's)
    admission: Optional[str] = None
    max_batch_size: int = Field(256, ge=1, le=MAX_BATCH)           # vLLM max_num_seqs default
    max_batched_tokens: int = Field(8192, ge=1, le=MAX_TOKENS)     # vLLM V1 max_num_batched_tokens default
    chunk_size: int = Field(512, ge=1, le=MAX_TOKENS)              # sarathi token budget per iteration
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH)       # static: requests per batch (default max_batch_size)
    prefix_caching: bool = False        # vLLM automatic prefix caching (simserve.kvcache.prefix)
    speculative: Optional[SpeculativeConfig] = None

    # vLLM V0 --preemption-mode (simserve.scheduler.swap; null: the runtime's)
    preemption: Optional[Literal["recompute", "swap"]] = None

    @field_validator("policy", "admission")
    @classmethod
    def _registered_name(cls, name, info):
        return _registered(POLICIES if info.field_name == "policy" else ADMISSIONS, name)


class EngineConfig(Strict):
    block_size: int = Field(16, ge=1, le=MAX_BLOCK)                     # vLLM default KV block
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)  # vLLM default
    reserved_GiB: float = Field(1.5, ge=0, le=1e6)   # CUDA context, NCCL buffers, CUDA graphs (vLLM's non-torch memory)
    kv_watermark: float = Field(0.01, ge=0, lt=1)           # vLLM default
    swap_space_GiB: Optional[float] = Field(None, ge=0, le=1e6)   # host KV swap space per GPU (null: the runtime's)
    coalesce_decode: bool = True             # advance unchanging decode runs as one event (exact)
    timeline: Optional[bool] = None   # record it (null: up to 20,000 requests x stages; engine/timeline.py)
    timeline_window_s: Optional[tuple[float, float]] = None   # only rows starting in [start, end) s
    # how the serving engine spends host time and runs kernels: a catalog runtime
    # (simserve/catalog/runtimes: vllm-v1, vllm-v0, sglang, trtllm, ideal), a YAML file, or an
    # inline dict (`base:` a catalog runtime whose fields it overrides)
    # default vllm-v1: the engine most deployments run; `ideal` is kernels and collectives only
    runtime: Union[str, dict[str, Any]] = "vllm-v1"
    # communication overlapped with compute: none; tp_comm (two-batch overlap: one half-batch's TP
    # all-reduces under the other half's compute, as SGLang and TensorRT-LLM do). pipeline_sends
    # (chunks streaming through a pipeline) is not on this build: refused until it is implemented
    overlap: Literal["none", "tp_comm"] = "none"


class PoolConfig(Strict):
    """One pool of a disaggregated deployment: its parallel layout and GPU type (null: the
    cluster's). The pool's compute and memory come from its GPU type; the network is the cluster's
    topology (links of mixed GPU types are not modelled)."""
    tp: int = Field(1, ge=1, le=MAX_GPUS_PER_GROUP)
    pp: int = Field(1, ge=1, le=MAX_GPUS_PER_GROUP)
    dp: int = Field(1, ge=1, le=MAX_GPUS_PER_GROUP)
    hardware: Union[str, dict[str, Any], None] = None


class DisaggregationConfig(Strict):
    """Prefill/decode disaggregation (DistServe, Splitwise, Mooncake): prompts are prefilled in one
    pool, their KV moves over the network to a decode pool (`whole` after the prefill, or
    `layerwise`, streamed while the prefill runs), and the decode pool generates the rest."""
    prefill: PoolConfig = PoolConfig()
    decode: PoolConfig = PoolConfig()
    kv_transfer: Literal["whole", "layerwise"] = "whole"


class RouterConfig(Strict):
    policy: str = "round_robin"      # a name registered in simserve.router.ROUTERS
    # prefix_affinity (SGLang's cache-aware rule): SGLang Model Gateway's defaults
    cache_threshold: float = Field(0.3, ge=0, le=1)         # share of the prompt cached to follow the cache
    balance_abs_threshold: int = Field(64, ge=0)            # outstanding requests max - min ...
    balance_rel_threshold: float = Field(1.5, ge=1)         # ... and max / min beyond which load decides

    @field_validator("policy")
    @classmethod
    def _policy(cls, name):
        return _registered(ROUTERS, name)


class SloConfig(Strict):
    ttft_s: float | None = Field(2.0, gt=0)
    tpot_s: float | None = Field(0.1, gt=0)
    e2e_s: float | None = Field(None, gt=0)     # end-to-end latency bound (none by default)


class SimConfig(Strict):
    model: Union[str, dict[str, Any]] = "llama-3.1-8b"
    precision: PrecisionConfig = PrecisionConfig()
    cluster: ClusterConfig = ClusterConfig()
    parallelism: ParallelismConfig = ParallelismConfig()
    collectives: CollectivesConfig = CollectivesConfig()
    moe: MoeConfig = MoeConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    engine: EngineConfig = EngineConfig()
    router: RouterConfig = RouterConfig()
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)
    slo: SloConfig = SloConfig()
    disaggregation: Optional[DisaggregationConfig] = None     # null: prefill and decode co-located
    fidelity: Literal["fast", "exact"] = "fast"
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _overlap(self):
        overlap, par = self.engine.overlap, self.parallelism
        if overlap == "tp_comm" and par.tp == 1 and self.disaggregation is None:
            raise ValueError("engine.overlap=tp_comm needs parallelism.tp > 1 (no TP all-reduce to overlap)")
        if overlap == "tp_comm" and par.cp > 1:
            raise ValueError("engine.overlap=tp_comm with parallelism.cp > 1 is not modelled yet")
        return self

    @model_validator(mode="after")
    def _techniques(self):
        problem = technique_conflicts(self)       # simserve.scheduler.config
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _disaggregated(self):
        if self.disaggregation is None:
            return self
        par = self.parallelism
        for key in ("tp", "pp", "dp"):
            if getattr(par, key) != 1:
                raise ValueError(f"parallelism.{key}={getattr(par, key)}: with disaggregation each pool's "
                                 f"layout is disaggregation.prefill.{key} / disaggregation.decode.{key}")
        if par.placement is not None:
            raise ValueError("parallelism.placement: pools are placed in order with disaggregation")
        if par.cp != 1:
            raise ValueError(f"parallelism.cp={par.cp}: context-parallel pools are not modelled yet")
        if self.scheduler.policy == "static":
            raise ValueError("scheduler.policy=static: a disaggregated decode pool batches continuously")
        return self


def _allowed_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names of the sub-model at `loc` (for 'unknown key' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fld = getattr(current, "model_fields", {}).get(part)
        if fld is None:
            return []
        ann = fld.annotation
        candidates = [ann] + list(getattr(ann, "__args__", ()))
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return sorted(current.model_fields)


_TAG = re.compile(r"^(int|float|str|bool|none|[a-z]+\[.*\]|[A-Z]\w*)$")   # pydantic's union-branch loc parts
_WRONG_BRANCH = ("int_type", "int_parsing", "float_type", "float_parsing", "string_type", "bool_type",
                 "dict_type", "model_type", "list_type")


def _clean_loc(loc) -> list:
    return [p for p in loc if not (isinstance(p, str) and (p.startswith(("function-", "union[")) or _TAG.match(p)))]


def _best_error(exc: ValidationError) -> dict:
    """The error a user should see: of a union's branches, the one the input was meant for (a
    mapping given for `int | Distribution` is reported against Distribution, not as 'not an int')."""
    errors = exc.errors()
    first = errors[0]
    tagged = [e for e in errors if len(_clean_loc(e["loc"])) < len(e["loc"])]
    if not tagged:
        return first
    meant = [e for e in tagged if e["type"] not in _WRONG_BRANCH]
    return meant[0] if meant else first


def format_validation_error(exc: ValidationError, model: type[BaseModel] = SimConfig) -> str:
    err = _best_error(exc)
    loc = _clean_loc(err["loc"])
    path = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        return f"config: unknown key {path!r}" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    leaf = next((p for p in reversed(loc) if isinstance(p, str)), "")
    why = f": {LIMIT_REASONS[leaf]}" if err["type"] in ("less_than_equal", "less_than") and leaf in LIMIT_REASONS \
        else ""
    return f"config: {path}: {msg}{shown}{why}" if path else f"config: {msg}"


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`a.b.c=value` assignments, value parsed as YAML (numbers, booleans, lists)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        parts = key.strip().split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:i + 1])} is {child!r}, not a section")
            node = child
        try:
            node[parts[-1]] = load_yaml_text(value)
        except Exception:
            node[parts[-1]] = value
    return raw


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); a config is a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        raw = load_yaml_text(text)
    except Exception as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections")
    trace = (raw.get("workload") or {}).get("trace") if isinstance(raw.get("workload"), dict) else None
    if isinstance(trace, str) and not Path(trace).is_absolute() and (path.parent / trace).exists():
        raw["workload"]["trace"] = str(path.parent / trace)   # relative to the config file
    return raw


def load_config(source: str | Path | Mapping[str, Any] | SimConfig | None = None,
                overrides: Sequence[str] = ()) -> SimConfig:
    if isinstance(source, SimConfig):
        if not overrides:
            return source
        source = source.model_dump()
    raw = dict(source) if isinstance(source, Mapping) else ({} if source is None else read_config_file(source))
    raw = apply_overrides(raw, overrides)
    try:
        return SimConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
