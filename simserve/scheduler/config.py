"""The `scheduler.speculative` config section (simserve.cost.speculative documents the model)."""
from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AcceptanceConfig(Strict):
    """Per-request draft acceptance probability drawn from a distribution: beta (mean, std) or
    uniform (min, max)."""
    dist: Literal["beta", "uniform"] = "beta"
    mean: float | None = Field(None, gt=0, lt=1)
    std: float | None = Field(None, gt=0, lt=0.5)
    min: float | None = Field(None, ge=0, le=1)
    max: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _parameters(self):
        if self.dist == "beta":
            if self.mean is None or self.std is None:
                raise ValueError("a beta acceptance needs mean and std")
            if self.std ** 2 >= self.mean * (1 - self.mean):
                raise ValueError(f"a beta acceptance with mean {self.mean} needs std below "
                                 f"{(self.mean * (1 - self.mean)) ** 0.5:.3g}")
        elif self.min is None or self.max is None or self.max < self.min:
            raise ValueError("a uniform acceptance needs min <= max")
        return self


class SpeculativeConfig(Strict):
    """Speculative decoding (simserve.cost.speculative): a drafter proposes `tokens` tokens, the
    target verifies them in one step; each draft is accepted with probability `acceptance`."""
    method: Literal["draft", "eagle", "mtp", "ideal"]
    draft_model: Union[str, dict[str, Any], None] = None     # method draft: a catalog model or card
    tokens: int = Field(3, ge=1, le=64)
    acceptance: Union[float, AcceptanceConfig] = 0.7

    @field_validator("acceptance")
    @classmethod
    def _probability(cls, value):
        if isinstance(value, float) and not 0 <= value <= 1:
            raise ValueError(f"acceptance is a probability in [0, 1] (got {value})")
        return value

    @model_validator(mode="after")
    def _draft(self):
        if (self.method == "draft") != (self.draft_model is not None):
            raise ValueError("speculative.draft_model names the draft model of method draft, and only of it")
        return self


def technique_conflicts(cfg) -> str | None:
    """What a config combines that the issue-17 techniques do not model (one line), or None."""
    sc, par = cfg.scheduler, cfg.parallelism
    if cfg.router.policy == "prefix_affinity" and not sc.prefix_caching:
        return "router.policy prefix_affinity routes by cached prefix blocks: set scheduler.prefix_caching: true"
    for name, on in (("scheduler.prefix_caching", sc.prefix_caching), ("scheduler.speculative", sc.speculative),
                     ("collectives.sync_point_drop", cfg.collectives.sync_point_drop)):
        if on and cfg.disaggregation is not None:
            return f"{name} with disaggregation is not modelled yet"
        if on and name != "scheduler.prefix_caching" and (par.cp > 1 or cfg.engine.overlap == "tp_comm"):
            return f"{name} with parallelism.cp > 1 or engine.overlap tp_comm is not modelled yet"
    return None
