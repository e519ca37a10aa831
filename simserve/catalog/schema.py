"""The schema every model and hardware card passes, catalog entry or inline/YAML card alike.

pydantic checks types (an integer field refuses 2.5), finiteness and ranges; the catalog then
builds its frozen dataclasses from the validated values. Bounds are sanity limits, each with why.
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simserve.errors import CatalogError

_BIG = 10 ** 7          # widths and counts: 10M is beyond any published model (largest hidden ~ 3e4)


class _Card(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class MoeCard(_Card):
    num_experts: int = Field(ge=1, le=65536)
    top_k: int = Field(ge=1, le=65536)
    expert_intermediate: int = Field(ge=1, le=_BIG)
    shared_experts: int = Field(0, ge=0, le=65536)
    first_dense_layers: int = Field(0, ge=0, le=10000)


class MlaCard(_Card):
    q_lora_rank: int = Field(ge=0, le=_BIG)
    kv_lora_rank: int = Field(ge=1, le=_BIG)
    qk_rope_head_dim: int = Field(ge=0, le=_BIG)
    qk_nope_head_dim: int = Field(ge=0, le=_BIG)
    v_head_dim: int = Field(ge=1, le=_BIG)


class ModelSchema(_Card):
    num_layers: int = Field(ge=1, le=10000)
    hidden: int = Field(ge=1, le=_BIG)
    intermediate: int = Field(ge=1, le=_BIG)
    num_heads: int = Field(ge=1, le=65536)
    num_kv_heads: int = Field(ge=1, le=65536)
    head_dim: int = Field(ge=1, le=65536)
    vocab: int = Field(ge=1, le=_BIG * 10)
    max_context: int = Field(ge=1, le=_BIG * 10)   # 100M tokens: beyond any model's context
    tied_embeddings: bool = False
    moe: Optional[MoeCard] = None
    mla: Optional[MlaCard] = None
    source: str = ""


def _first_error(kind: str, name: str, exc: ValidationError) -> CatalogError:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    if err["type"] == "extra_forbidden":
        return CatalogError(f"{kind} {name!r}: unknown field {where!r}")
    return CatalogError(f"{kind} {name!r}: {where}: {err['msg']}{shown}")


def validate_model_card(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The card's fields, validated and converted (ints as ints); CatalogError naming the field."""
    try:
        card = ModelSchema.model_validate(raw)
    except ValidationError as exc:
        raise _first_error("model", name, exc) from None
    return card.model_dump(exclude_unset=True)
