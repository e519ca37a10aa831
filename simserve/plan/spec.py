"""What a plan searches: the `simserve plan` arguments or a plan YAML, validated (one line on bad input).

A plan YAML holds the same keys as the command line (flags given on the command line win):

```yaml
models: [llama-3.1-70b]
hardware: [h100, h200]            # every GPU type is searched with the same GPU count
gpus: 16
workload: azure-conv              # a bundled trace name, a trace file, a workload YAML, or a mapping
requests: 2000                    # optional: the first N requests of the workload
slo: {ttft_p99: 2.0, tpot_p99: 0.1}          # seconds; or "ttft_p99=2s,tpot_p99=100ms"
space: {tp: [2, 4, 8], pp: [1, 2], chunk_size: [512, 2048], max_batch_size: [256]}
rates: {min_rate: 0.01, step: 0.1}           # the rate grid: min_rate x (1 + step)^k req/s
prices: {h100: 2.5}               # USD per GPU-hour (default: the hardware catalog's)
base: {precision: {weights: fp8, kv: fp8}}   # any other config section, applied to every probe
bound: true                       # false (--exhaustive): every layout's rate, none bounded out
```

Decisions: SLO metrics are the sweep table's percentile columns (ttft/tpot/e2e at p50 or p99) and
`rejected` (the largest allowed fraction of requests refused, default 0: a layout that must refuse
requests does not meet the SLO). The per-request goodput of every probe counts a request as good
when its TTFT and TPOT are within the SLO's TTFT and TPOT limits (the p99 limit when both a p50
and a p99 limit are given).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simserve.errors import ConfigError

SLO_METRICS = ("ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "e2e_p50", "e2e_p99", "rejected")
WORKLOAD_NAMES = {"azure-conv": "AzureLLMInferenceTrace_conv.csv.gz",
                  "azure-code": "AzureLLMInferenceTrace_code.csv.gz",
                  "mooncake-conv": "conversation_trace.jsonl.gz"}
PLAN_KEYS = ("models", "hardware", "gpus", "workload", "requests", "slo", "space", "rates", "prices",
             "base", "seed", "fidelity", "bound")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpaceSpec(_Strict):
    """Values searched per knob; None: every power of two that fits (tp within one node)."""
    tp: Optional[list[int]] = None
    pp: Optional[list[int]] = None
    dp: Union[Literal["fill"], list[int]] = "fill"      # fill: all the GPUs, gpus // replica size
    ep: Optional[list[int]] = None                       # MoE only
    chunk_size: list[int] = [512]
    max_batch_size: list[int] = [256]

    @field_validator("tp", "pp", "ep", "chunk_size", "max_batch_size")
    @classmethod
    def _positive(cls, values, info):
        if values is not None and (not values or any(v < 1 for v in values)):
            raise ValueError(f"space.{info.field_name} must be a non-empty list of positive integers")
        return values


class RateSpec(_Strict):
    min_rate: float = Field(0.01, gt=0)       # req/s, the grid's first point
    step: float = Field(0.1, gt=0, le=1)      # grid ratio - 1: the precision of the answer
    max_rate: float = Field(1e5, gt=0)
    jump: float = Field(2.0, gt=1)            # bracketing multiplies the rate by about this much


class PlanSpec(_Strict):
    models: list[str]
    hardware: list[str]
    gpus: int = Field(..., ge=1)
    workload: Union[str, dict[str, Any]] = "azure-conv"
    requests: Optional[int] = Field(None, ge=1)
    slo: dict[str, float] = {"ttft_p99": 2.0, "tpot_p99": 0.1}
    space: SpaceSpec = SpaceSpec()
    rates: RateSpec = RateSpec()
    prices: dict[str, float] = {}
    base: dict[str, Any] = {}
    seed: int = Field(0, ge=0)
    fidelity: Literal["fast", "exact"] = "fast"
    bound: bool = True      # branch and bound: skip layouts that cannot rank first (README; --exhaustive: off)

    @field_validator("slo")
    @classmethod
    def _slo(cls, slo):
        if not slo:
            raise ValueError("slo needs at least one limit, e.g. ttft_p99=2s")
        for key, value in slo.items():
            if key not in SLO_METRICS:
                raise ValueError(f"unknown SLO metric {key!r} (known: {', '.join(SLO_METRICS)})")
            if not value >= 0 or (key != "rejected" and not value > 0):
                raise ValueError(f"slo.{key} must be a positive number of seconds (got {value})")
        return slo

    @field_validator("prices")
    @classmethod
    def _prices(cls, prices):
        for key, value in prices.items():
            if not value > 0:
                raise ValueError(f"price of {key} must be positive USD per GPU-hour (got {value})")
        return prices

    @field_validator("models", "hardware")
    @classmethod
    def _names(cls, names, info):
        if not names:
            raise ValueError(f"{info.field_name} needs at least one name")
        return names


def _seconds(text: str, what: str) -> float:
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(ms|s|us)?\s*", text)
    if not m:
        raise ConfigError(f"{what}: expected a number of seconds such as 2s or 100ms, got {text!r}")
    try:
        value = float(m.group(1))
    except ValueError:
        raise ConfigError(f"{what}: expected a number of seconds such as 2s or 100ms, got {text!r}") from None
    return value * {"ms": 1e-3, "us": 1e-6}.get(m.group(2) or "s", 1.0)


def parse_pairs(text: str, what: str, seconds: bool) -> dict[str, float]:
    """`a=1,b=2` (seconds with units when `seconds`) -> {a: 1.0, b: 2.0}."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what}: expected NAME=VALUE[,NAME=VALUE...], got {item!r}")
        key = key.strip().lower()
        if seconds and key != "rejected":
            out[key] = _seconds(value, f"{what} {key}")
        else:
            try:
                out[key] = float(value)
            except ValueError:
                raise ConfigError(f"{what} {key}: expected a number, got {value!r}") from None
    return out


def parse_ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated integers, got {text!r}") from None


def format_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"plan: unknown key {path!r} (allowed: {', '.join(PLAN_KEYS)})"
    return f"plan: {path}: {msg}" if path else f"plan: {msg}"


def load_plan(raw: dict[str, Any]) -> PlanSpec:
    try:
        return PlanSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_error(exc)) from None


def read_plan_file(path: str | Path) -> dict[str, Any]:
    from simserve.config import read_config_file

    raw = read_config_file(path)
    if isinstance(raw.get("workload"), str) and not Path(raw["workload"]).is_absolute():
        candidate = Path(path).parent / raw["workload"]
        if candidate.exists():
            raw["workload"] = str(candidate)
    return raw


def workload_section(spec: PlanSpec) -> dict[str, Any]:
    """The config's `workload:` section for this plan (without the rate, which each probe sets)."""
    from simserve.config import read_config_file
    from simserve.workload.profiles import PROFILES

    w = spec.workload
    if isinstance(w, str):
        if w in WORKLOAD_NAMES:
            w = {"trace": WORKLOAD_NAMES[w]}
        elif w in PROFILES:
            w = {"lengths": {"profile": w}, "arrivals": {"process": "poisson", "rate": 1.0}}
        elif w.endswith((".yaml", ".yml")):
            raw = read_config_file(w)
            w = raw.get("workload", raw)
        else:
            w = {"trace": w}
    w = dict(w)
    if spec.requests is not None:
        w["num_requests"] = spec.requests
    arrivals = dict(w.get("arrivals") or {})
    process = arrivals.get("process", "trace" if w.get("trace") or not w.get("lengths") else "poisson")
    if process == "batch":
        raise ConfigError("plan: workload arrivals.process batch has no rate to search; use trace, poisson or gamma")
    arrivals["process"] = process
    arrivals.pop("rate_scale", None)
    w["arrivals"] = arrivals
    return w
