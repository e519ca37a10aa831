"""Engine-level all-reduce kernels and where the engines use them, as catalog data (pure).

vLLM's custom one-/two-shot all-reduce, vLLM's ROCm QuickReduce and TensorRT-LLM's one-/two-shot
kernels run outside NCCL/RCCL and only within size limits that differ by platform
(catalog/engine_kernels.yaml, with the source files). A topology names its platform
(topologies.yaml `kernels`); `collectives.quick_reduce` picks QuickReduce's codec (off by default,
as in vLLM).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping

from simserve.catalog import CATALOG_DIR, load_catalog_file
from simserve.errors import CatalogError, ConfigError

QUICK_REDUCE_REGIMES = ("none", "fp", "int8", "int6", "int4")


@lru_cache(maxsize=None)
def kernel_tables() -> dict:
    return load_catalog_file(CATALOG_DIR / "engine_kernels.yaml")


@dataclass(frozen=True)
class EngineKernels:
    """One platform's kernel limits (bytes), and the QuickReduce codec in use."""
    platform: str = "none"
    custom_max_bytes: Mapping[int, float] = field(default_factory=dict)
    quick_reduce: str = "none"
    qr_world_sizes: tuple[int, ...] = ()
    qr_min_bytes: Mapping[int, Mapping[str, float]] = field(default_factory=dict)
    qr_max_bytes: float = 0.0
    qr_wire_ratio: Mapping[str, float] = field(default_factory=dict)
    custom_inclusive: bool = False                    # cap is bytes <= max (TRT-LLM), not < (vLLM)
    one_shot_below: Mapping[int, float] = field(default_factory=dict)   # the engine's shot rule; {}: none

    def custom_allreduce(self, n: int, nbytes: float, shot: str = "") -> bool:
        """Would the engine call its custom kernel for n GPUs and this size, and (with `shot`,
        one_shot or two_shot) that kernel? Without a shot rule both shots are offered and `auto`
        takes the faster."""
        cap = self.custom_max_bytes.get(n)
        if cap is None or not (nbytes <= cap if self.custom_inclusive else nbytes < cap):
            return False
        below = self.one_shot_below.get(n)
        if not shot or below is None:
            return True
        return (nbytes < below) == (shot == "one_shot")

    def quick_reduce_applies(self, n: int, nbytes: float) -> bool:
        if self.quick_reduce == "none" or n not in self.qr_world_sizes:
            return False
        return self.qr_min_bytes[n][self.quick_reduce] <= nbytes <= self.qr_max_bytes

    @property
    def wire_ratio(self) -> float:
        """Bytes QuickReduce puts on the wire per byte of bf16 data."""
        return self.qr_wire_ratio.get(self.quick_reduce, 1.0)


def engine_kernels(platform: str = "none", quick_reduce: str = "none") -> EngineKernels:
    tables = kernel_tables()
    if platform not in tables:
        raise CatalogError(f"unknown engine-kernel platform {platform!r}; known: {', '.join(tables)}")
    if quick_reduce not in QUICK_REDUCE_REGIMES:
        raise ConfigError(f"collectives.quick_reduce: unknown codec {quick_reduce!r}; choose one of "
                          f"{', '.join(QUICK_REDUCE_REGIMES)}")
    entry = tables[platform] or {}
    custom_entry = entry.get("custom_allreduce") or {}
    custom = {int(n): float(b) for n, b in custom_entry.get("max_bytes", {}).items()}
    qr = entry.get("quick_reduce") or {}
    if quick_reduce != "none" and not qr:
        raise ConfigError(f"collectives.quick_reduce: {platform} has no QuickReduce (vLLM ships it for ROCm "
                          f"MI300-class GPUs); use none")
    return EngineKernels(platform, custom, quick_reduce, tuple(qr.get("world_sizes", ())),
                         {int(n): dict(v) for n, v in qr.get("min_bytes", {}).items()},
                         float(qr.get("max_bytes", 0.0)), dict(qr.get("wire_ratio", {})),
                         bool(custom_entry.get("inclusive", False)),
                         {int(n): float(b) for n, b in custom_entry.get("one_shot_below", {}).items()})
