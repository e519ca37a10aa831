"""The `workload:` section of a config (docs/architecture.md (contracts)).

A workload is a request source (a trace file, or lengths drawn from numbers, a distribution or a
named dataset profile) plus an arrival process. Everything here is validation only: no file is
opened until `build_workload` runs, so a config can be checked without its data.

Defaults: `WorkloadConfig()` replays the bundled Azure conversation trace with its own timestamps.
The default is resolved at build time (`effective_trace`), not written into `trace`, so a dumped
and reloaded config that later gains `lengths` does not silently keep the default trace.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simserve.workload.processes import ARRIVAL_PROCESSES
from simserve.workload.profiles import PROFILES

DEFAULT_TRACE = "AzureLLMInferenceTrace_conv.csv.gz"
FORMATS = ("auto", "azure", "burstgpt", "mooncake", "vidur", "csv", "jsonl")


MAX_TOKENS = 10_000_000       # no model serves a context this long: a bigger length is a typo
MAX_REQUESTS = 10_000_000     # a request keeps ~200 bytes of columns (simserve.records): 10M is ~2 GB


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Distribution(_Strict):
    """A length distribution in tokens, drawn then rounded and clipped to [min, max].

    `mean` and `cv` describe the distribution before clipping; with the default min of 1 and no
    max the clipping moves the mean by well under a token for means above ~10 tokens.
    """
    dist: Literal["lognormal", "gamma", "uniform", "fixed"] = "lognormal"
    mean: float = Field(..., gt=0, le=MAX_TOKENS)
    cv: float = Field(0.5, ge=0, le=100)
    min: int = Field(1, ge=1, le=MAX_TOKENS)
    max: Optional[int] = Field(None, ge=1, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _bounds(self):
        if self.max is not None and self.max < self.min:
            raise ValueError(f"distribution max ({self.max}) is below its min ({self.min})")
        if self.dist == "uniform" and self.cv > 1 / 3 ** 0.5:
            raise ValueError(f"a uniform distribution has cv at most 0.577 (got {self.cv}): "
                             "its lower end would be negative")
        return self


LengthSpec = Union[int, Distribution]


class LengthsConfig(_Strict):
    """ISL/OSL in tokens: fixed numbers, distributions, or a named dataset profile.

    With a profile, an explicit `isl` or `osl` overrides that side of it (e.g. a profile's
    prompts with a fixed 128-token output).
    """
    isl: Optional[LengthSpec] = None
    osl: Optional[LengthSpec] = None
    profile: Optional[str] = None

    @field_validator("isl", "osl")
    @classmethod
    def _positive(cls, value, info):
        if isinstance(value, int) and value < 1:
            raise ValueError(f"{info.field_name} must be a positive number of tokens")
        if isinstance(value, int) and value > MAX_TOKENS:
            raise ValueError(f"{info.field_name} must be at most {MAX_TOKENS:,} tokens (no model serves a "
                             f"longer context)")
        return value

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name):
        if name is not None and name not in PROFILES:
            raise ValueError(f"unknown length profile {name!r}; known: {', '.join(sorted(PROFILES))}")
        return name

    @model_validator(mode="after")
    def _one_source(self):
        if self.profile is None and (self.isl is None or self.osl is None):
            raise ValueError("lengths needs both isl and osl, or a profile")
        return self


class ArrivalsConfig(_Strict):
    """When requests arrive.

    - `trace`: the trace's own timestamps, re-based to start at 0, divided by `rate_scale`
      (2 = twice the rate, half the duration), or rescaled so the mean rate is `rate` if given;
      plus uniform jitter in [0, jitter_s) per request (Mooncake stamps come in ~3 s steps).
    - `poisson`: exponential gaps with mean 1/rate.
    - `gamma`: gamma gaps with mean 1/rate and coefficient of variation `cv` (cv 1 = Poisson,
      above 1 = burstier).
    - `batch`: every request at t = 0 (the analytical studies' fixed batch).
    - `closed`: `concurrency` clients, each sending its next request `think_time_s` after its
      previous one finished (vLLM `benchmark_serving --max-concurrency`, genai-perf
      `--concurrency`); TTFT is measured from the send, as those clients measure it.
    Any process registered in simserve.workload.arrivals.ARRIVAL_PROCESSES is accepted.
    """
    process: str = "trace"
    concurrency: Optional[int] = Field(None, ge=1, le=MAX_REQUESTS, description="closed: clients in flight")
    think_time_s: float = Field(0.0, ge=0, le=1e8, description="closed: pause between a reply and the next send")
    rate: Optional[float] = Field(None, description="requests per second")
    cv: float = Field(1.0, gt=0, description="coefficient of variation of inter-arrival gaps (gamma)")
    rate_scale: float = Field(1.0, gt=0, description="trace: multiply the trace's rate by this")
    jitter_s: float = Field(0.0, ge=0, description="trace: add uniform [0, jitter_s) to each stamp")

    @model_validator(mode="after")
    def _rate(self):
        if self.process not in ARRIVAL_PROCESSES:
            raise ValueError(f"unknown arrival process {self.process!r}; choose one of "
                             f"{', '.join(ARRIVAL_PROCESSES.names())}")
        process = ARRIVAL_PROCESSES.get(self.process)
        if process.closed != (self.concurrency is not None):
            raise ValueError("arrivals.concurrency is the number of closed-loop clients: give it with process "
                             f"closed, and only then (process {self.process})")
        if not process.closed and self.think_time_s:
            raise ValueError(f"arrivals.think_time_s applies to process closed, not {self.process}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"arrivals.rate must be a positive number of requests per second (got {self.rate})")
        if process.needs_rate and self.rate is None:
            raise ValueError(f"arrivals.process {self.process} needs a rate (requests per second)")
        if self.process == "trace" and self.rate is not None and self.rate_scale != 1.0:
            raise ValueError("arrivals: give either rate (target mean rate) or rate_scale for a trace, not both")
        if self.process != "trace" and (self.rate_scale != 1.0 or self.jitter_s):
            raise ValueError(f"arrivals.rate_scale and jitter_s apply to process trace, not {self.process}")
        return self


class ColumnsConfig(_Strict):
    """Column (CSV) or key (JSONL) names of a generic trace file.

    `arrival` may be omitted for a length-only file (then pair it with an arrival process).
    `time_unit` says what the arrival column holds: seconds, ms, us, ns, or an ISO date-time.
    """
    isl: str
    osl: str
    arrival: Optional[str] = None
    time_unit: Literal["s", "ms", "us", "ns", "datetime"] = "s"
    hash_ids: Optional[str] = None


class FiltersConfig(_Strict):
    """Keep only rows whose column matches (case-insensitive); a list means any of them.

    `model` and `log_type` are BurstGPT's `Model` and `Log Type` columns.
    """
    model: Union[str, list[str], None] = None
    log_type: Union[str, list[str], None] = None


class SharedPrefixConfig(_Strict):
    """Every prompt starts with one of `groups` shared prefixes of `tokens` tokens (a system prompt
    or few-shot preamble), prepended to its own prompt: ISL grows by `tokens`, as in SGLang's
    `bench_serving --dataset-name generated-shared-prefix` (gsp-num-groups, gsp-system-prompt-len)
    and vLLM's `benchmark_serving --random-prefix-len`. Each request's group is drawn uniformly
    from the workload's seed, after every other draw (so arrivals and lengths are unchanged). It
    replaces a trace's own prefix blocks (Mooncake hash_ids) as the prompts' identity."""
    tokens: int = Field(..., ge=1, le=MAX_TOKENS)
    groups: int = Field(..., ge=1, le=MAX_REQUESTS)


class WorkloadConfig(_Strict):
    """The `workload:` section. See the module docstring and docs/architecture.md (contracts)."""
    trace: Optional[str] = None
    format: Literal["auto", "azure", "burstgpt", "mooncake", "vidur", "csv", "jsonl"] = "auto"
    columns: Optional[ColumnsConfig] = None
    filters: FiltersConfig = FiltersConfig()
    lengths: Optional[LengthsConfig] = None
    arrivals: ArrivalsConfig = ArrivalsConfig()
    num_requests: Optional[int] = Field(None, ge=1, le=MAX_REQUESTS)
    duration_s: Optional[float] = Field(None, gt=0, le=1e8)
    context_overflow: Literal["truncate", "reject"] = "truncate"
    strict: bool = False
    shared_prefix: Optional[SharedPrefixConfig] = None

    @property
    def effective_trace(self) -> Optional[str]:
        """The trace to read: the configured one, or the bundled default when nothing else is given."""
        if self.trace is None and self.lengths is None:
            return DEFAULT_TRACE
        return self.trace

    @model_validator(mode="after")
    def _source(self):
        if self.arrivals.process == "trace" and self.effective_trace is None:
            raise ValueError("arrivals.process trace needs a workload.trace (or choose poisson, gamma or batch)")
        if self.trace is None and (self.columns is not None or self.format != "auto"):
            raise ValueError("workload.columns and workload.format describe a trace file; set workload.trace")
        return self
