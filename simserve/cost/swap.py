"""KV swap between GPU memory and pinned host memory: the copies a swap issues and what each costs.

vLLM's swap preemption (V0 `preemption_mode="swap"`, `CacheEngine.swap_out/swap_in`) moves a
sequence's KV block by block: `ops.swap_blocks` (csrc/cache_kernels.cu) is called per layer for the
K cache and for the V cache and issues one `cudaMemcpyAsync` per block. A swap of `blocks` blocks
on a GPU holding `layers` layers is therefore 2 x layers x blocks copies of one block's K (or V)
shard each, and each copy costs a fixed issue/DMA-setup time plus its bytes over PCIe.

Both numbers come from a measurement (experiments/measure_host_copies.py on an H200, committed as
simserve/catalog/profiles/h200/host_copies.csv; the `native` rows issue the copies from C++ as
swap_blocks does). `host_copy_fit()` fits per_copy_s = overhead + bytes / bandwidth per direction on
two thirds of the sizes and reports the error on the other third; the bandwidth is kept as a
fraction of the link's line rate, so other GPUs' PCIe links use their own line rate at the measured
efficiency, with the measured per-copy overhead (a host-side CUDA API cost). Layer 1: no SimPy.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from simserve.catalog import CATALOG_DIR, get_hardware

MEASURED = CATALOG_DIR / "profiles" / "h200" / "host_copies.csv"
MEASURED_ON = "h200"                 # the GPU the table was measured on: its catalog PCIe line rate


@dataclass(frozen=True)
class HostCopyFit:
    overhead_s: float          # per cudaMemcpyAsync, both directions' mean
    efficiency: float          # achieved bandwidth / PCIe line rate, both directions' mean
    held_out_errors: tuple[float, ...]    # |fit / measured - 1| on the sizes the fit never saw


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("issuer", "native") == "native"]


@lru_cache(maxsize=None)
def host_copy_fit(path: Path = MEASURED) -> HostCopyFit:
    """Least squares of per-copy time on (1, bytes) per direction; every third size is held out."""
    rows = _rows(path)
    line_rate = get_hardware(MEASURED_ON).pcie_bw_Bps
    overheads, effs, errors = [], [], []
    for direction in ("h2d", "d2h"):
        pts = sorted((int(r["nbytes"]), float(r["per_copy_s"])) for r in rows if r["direction"] == direction)
        fit_pts = [p for i, p in enumerate(pts) if i % 3 != 2]
        held = [p for i, p in enumerate(pts) if i % 3 == 2]
        x = np.array([[1.0, b] for b, _ in fit_pts])
        y = np.array([t for _, t in fit_pts])
        # relative least squares: every size weighs the same, small copies are what swaps issue
        (a, inv_bw), *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
        overheads.append(float(a))
        effs.append(1.0 / float(inv_bw) / line_rate)
        errors += [abs((a + b * inv_bw) / t - 1) for b, t in held]
    return HostCopyFit(float(np.mean(overheads)), float(np.mean(effs)), tuple(errors))


def swap_copies(blocks: int, layers: int, tensors: int = 2) -> int:
    """cudaMemcpyAsync calls of a swap of `blocks` blocks over `layers` layers: K and V apart
    (`tensors` 2); a latent (MLA) cache is one tensor per layer (vLLM's MLA backend swap_blocks
    calls ops.swap_blocks once)."""
    return tensors * layers * blocks


def swap_s(nbytes: float, copies: int, line_rate_Bps: float, fit: HostCopyFit | None = None) -> float:
    """Seconds of one GPU's swap on an idle PCIe link: its copies' overhead, then its bytes."""
    fit = fit or host_copy_fit()
    return copies * fit.overhead_s + nbytes / (line_rate_Bps * fit.efficiency)
