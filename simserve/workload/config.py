"""The `workload:` section of a config (DESIGN.md sections 4-5)."""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Strict):
    """A length distribution: lognormal with a mean and coefficient of variation, or uniform."""
    dist: Literal["lognormal", "uniform", "fixed"] = "lognormal"
    mean: float = Field(..., gt=0)
    cv: float = Field(0.5, ge=0)
    min: int = Field(1, ge=1)
    max: Optional[int] = Field(None, ge=1)


class LengthsConfig(_Strict):
    """ISL/OSL: fixed numbers, distributions, or a named dataset profile."""
    isl: Union[int, Distribution, None] = None
    osl: Union[int, Distribution, None] = None
    profile: Optional[str] = None

    @model_validator(mode="after")
    def _one_source(self):
        if self.profile is None and (self.isl is None or self.osl is None):
            raise ValueError("lengths needs both isl and osl, or a profile")
        for name in ("isl", "osl"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 1:
                raise ValueError(f"{name} must be a positive number of tokens (got {value})")
        return self


class ArrivalsConfig(_Strict):
    process: Literal["trace", "poisson", "gamma", "batch"] = "trace"
    rate: Optional[float] = Field(None, description="requests per second (poisson, gamma)")
    cv: float = Field(1.0, gt=0, description="coefficient of variation of inter-arrival times (gamma)")
    rate_scale: float = Field(1.0, gt=0, description="trace: multiply the trace's rate by this")

    @model_validator(mode="after")
    def _rate(self):
        if self.process in ("poisson", "gamma"):
            if self.rate is None:
                raise ValueError(f"arrivals.process {self.process} needs a rate (requests per second)")
            if not self.rate > 0:
                raise ValueError(f"arrival rate must be positive (got {self.rate})")
        return self


DEFAULT_TRACE = "AzureLLMInferenceTrace_conv.csv.gz"


class WorkloadConfig(_Strict):
    trace: Optional[str] = None
    format: Literal["auto", "azure", "burstgpt", "mooncake", "vidur", "csv", "jsonl"] = "auto"
    lengths: Optional[LengthsConfig] = None
    arrivals: ArrivalsConfig = ArrivalsConfig()
    num_requests: Optional[int] = Field(None, ge=1)
    duration_s: Optional[float] = Field(None, gt=0)
    context_overflow: Literal["truncate", "reject"] = "truncate"
    strict: bool = False

    @model_validator(mode="after")
    def _source(self):
        if self.trace is None and self.lengths is None:
            object.__setattr__(self, "trace", DEFAULT_TRACE)
        if self.arrivals.process == "trace" and self.trace is None:
            raise ValueError("arrivals.process trace needs a workload.trace (or choose poisson, gamma, batch)")
        return self
