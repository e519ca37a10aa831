"""Fit and check the roofline efficiency factors against measured GPU profiles.

A profile (simserve/catalog/profiles/NAME/, written by experiments/profile_h100.py) holds
operator tables (gemm.csv, attn_prefill.csv, attn_decode.csv) and a layer table (layers.csv).
The factors are fitted to the operator tables only; the layer table is held out and used to check
the fitted model (tests/test_calibration.py), so agreement there is a prediction, not a fit.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from simserve.catalog import Efficiency, Gpu, get_model, profile_dir
from simserve.cost.operators import BatchStats, LayerShape, Op, Precision, Shard, layer_ops
from simserve.cost.roofline import ops_time

FITTED = ("bf16", "fp8", "memory", "attention_compute", "attention_memory", "kernel_overhead_s")


def load_profile(name: str) -> dict[str, pd.DataFrame]:
    folder = profile_dir(name)
    return {p.stem: pd.read_csv(p) for p in sorted(folder.glob("*.csv"))}


def with_factors(gpu: Gpu, values) -> Gpu:
    v = dict(zip(FITTED, values))
    compute = dict(gpu.efficiency.compute)
    compute.update({"bf16": v["bf16"], "fp16": v["bf16"], "fp8": v["fp8"]})
    eff = Efficiency(compute=compute, memory=v["memory"], attention_compute=v["attention_compute"],
                     attention_memory=v["attention_memory"], kernel_overhead_s=v["kernel_overhead_s"],
                     profile=gpu.efficiency.profile)
    return replace(gpu, efficiency=eff)


def operator_rows(tables: dict[str, pd.DataFrame]) -> list[tuple[Op, float]]:
    """(operator, measured seconds) for every row of the operator tables."""
    rows = []
    for r in tables["gemm"].itertuples():
        prec = Precision(weights=r.dtype)
        ab, wb = 2.0, (1.0 if r.dtype == "fp8" else 2.0)
        op = Op(r.op, "gemm", flops=2.0 * r.m * r.k * r.n, bytes=r.k * r.n * wb + r.m * (r.k + r.n) * ab,
                dtype=prec.gemm_dtype)
        rows.append((op, r.time_us * 1e-6))
    for r in tables["attn_prefill"].itertuples():
        pairs = r.batch * r.seq * (r.seq + 1) / 2
        op = Op("attention_prefill", "attention_prefill", flops=4.0 * r.nq * r.d * pairs,
                bytes=r.batch * r.seq * (2 * r.nkv + 2 * r.nq) * r.d * 2.0, dtype="bf16")
        rows.append((op, r.time_us * 1e-6))
    for r in tables["attn_decode"].itertuples():
        kv_tokens = r.batch * r.ctx
        op = Op("attention_decode", "attention_decode", flops=4.0 * r.nq * r.d * kv_tokens,
                bytes=kv_tokens * 2 * r.nkv * r.d * 2.0 + r.batch * 2 * r.nq * r.d * 2.0, dtype="bf16")
        rows.append((op, r.time_us * 1e-6))
    return rows


def fit(gpu: Gpu, profile: str) -> tuple[Gpu, dict]:
    """Each factor measured where it is the binding limit (a least-squares fit over all rows let
    the GEMM knee, where a roofline is least accurate, drag the factors to unphysical values):

    - memory: GEMMs of 1-16 rows with >= 64 MB of weights (pure weight streaming);
    - compute per dtype: GEMMs of >= 4096 rows (compute-bound);
    - kernel_overhead_s: GEMMs with < 16 MB of weights, time beyond their streaming time;
    - attention_memory: decode attention with >= 64 sequences (KV streaming);
    - attention_compute: the longest causal prefill (8192 tokens), where flash attention peaks.
    Each is the median over its rows; the spread is returned with it.
    """
    t = load_profile(profile)
    gm = t["gemm"].copy()
    gm["wbytes"] = gm.k * gm.n * np.where(gm.dtype == "fp8", 1.0, 2.0)
    gm["bytes"] = gm.wbytes + gm.m * (gm.k + gm.n) * 2.0
    gm["seconds"] = gm.time_us * 1e-6
    stream = gm[(gm.m <= 16) & (gm.wbytes >= 64e6)]
    memory = stream.bytes / stream.seconds / gpu.hbm_bw_Bps
    compute = {}
    for dtype in ("bf16", "fp8"):
        big = gm[(gm.dtype == dtype) & (gm.m >= 4096)]
        compute[dtype] = 2.0 * big.m * big.k * big.n / big.seconds / gpu.flops(dtype)
    small = gm[(gm.m <= 16) & (gm.wbytes < 16e6)]
    overhead = small.seconds - small.bytes / (gpu.hbm_bw_Bps * memory.median())
    ad = t["attn_decode"]
    ad = ad[ad.batch >= 64]
    attn_mem = ad.batch * ad.ctx * 2 * ad.nkv * ad.d * 2.0 / (ad.time_us * 1e-6) / gpu.hbm_bw_Bps
    ap = t["attn_prefill"]
    ap = ap[ap.seq >= 8192]
    attn_comp = 4.0 * ap.nq * ap.d * ap.batch * ap.seq * (ap.seq + 1) / 2 / (ap.time_us * 1e-6) / gpu.flops("bf16")
    samples = {"bf16": compute["bf16"], "fp8": compute["fp8"], "memory": memory,
               "attention_compute": attn_comp, "attention_memory": attn_mem, "kernel_overhead_s": overhead}
    values = [float(samples[k].median()) for k in FITTED]
    spread = {k: (float(v.min()), float(v.max()), int(len(v))) for k, v in samples.items()}
    return with_factors(gpu, values), {"factors": dict(zip(FITTED, values)), "spread": spread}


def layer_predictions(gpu: Gpu, profile: str, table: str = "layers", weights: str = "bf16") -> pd.DataFrame:
    """A measured layer table (`layers`: bf16; `layers_fp8`: W8A8 linear layers, bf16 attention)
    with the cost model's prediction of each row beside it."""
    layers = load_profile(profile)[table].copy()
    predicted = []
    for r in layers.itertuples():
        model = get_model(r.model)
        shard = Shard(tp=int(r.tp))
        if r.phase == "prefill":
            batch = BatchStats.of([(int(r.seq), 0)] * int(r.batch), logits_tokens=0)
        else:
            batch = BatchStats.of([], [int(r.ctx)] * int(r.batch), logits_tokens=0)
        predicted.append(ops_time(layer_ops(model, shard, Precision(weights=weights), batch), gpu))
    layers["predicted_us"] = np.array(predicted) * 1e6
    layers["rel_err"] = layers.predicted_us / layers.time_us - 1.0
    return layers


__all__ = ["fit", "layer_predictions", "load_profile", "operator_rows", "LayerShape"]
