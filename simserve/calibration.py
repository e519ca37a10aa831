"""Fit and check the cost model's efficiency factors against a measured GPU profile.

A profile folder (simserve/catalog/profiles/NAME/, or any folder `simserve profile --out` wrote)
holds operator tables (gemm.csv, attn_prefill.csv, attn_decode.csv and, from the packaged profiler,
elementwise.csv) and layer tables (layers.csv, bf16; layers_fp8.csv, W8A8). The factors are fitted
to the operator tables only; the layer tables are held out and used to check the fitted model
(tests/test_calibration.py), so agreement there is a prediction, not a fit.

Shape-aware GEMMs read their time off the measured GEMM table (cost.gemm_table); the scalar
factors below remain for kernels without a measured shape (MoE experts, estimates).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from simserve.catalog import Efficiency, Gpu, get_model, resolve_profile
from simserve.cost.operators import BatchStats, LayerShape, Op, Precision, Shard, layer_ops
from simserve.cost.roofline import ops_time
from simserve.errors import CatalogError

FITTED = ("bf16", "fp8", "memory", "attention_compute", "attention_memory", "kernel_overhead_s")
# cost.operators elementwise operator -> the elementwise.csv kernel that measures it
ELEMENTWISE_OPS = {"norms": "add_rms_norm", "final_norm": "add_rms_norm", "silu_mul": "silu_mul",
                   "quantize_activations": "quantize_fp8"}
OPERATOR_TABLES = ("gemm", "attn_prefill", "attn_decode")


def load_profile(name) -> dict[str, pd.DataFrame]:
    folder = resolve_profile(name)
    return {p.stem: pd.read_csv(p) for p in sorted(folder.glob("*.csv"))}


def require(tables: dict, names, folder) -> None:
    for name in names:
        if name not in tables:
            raise CatalogError(f"profile {folder}: missing table {name}.csv")


def operator_rows(tables: dict[str, pd.DataFrame]) -> list[tuple[Op, float]]:
    """(operator, measured seconds) for every row of the GEMM and attention tables (GEMMs carry
    their (K, N), so a shape-aware GPU times them from its own table)."""
    rows = []
    for r in tables["gemm"].itertuples():
        wb = 1.0 if r.dtype == "fp8" else 2.0
        op = Op(r.op, "gemm", flops=2.0 * r.m * r.k * r.n, bytes=r.k * r.n * wb + r.m * (r.k + r.n) * 2.0,
                dtype=Precision(weights=r.dtype).gemm_dtype, shape=(int(r.k), int(r.n)))
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


def _median(values) -> float:
    return float(np.median(np.asarray(values, dtype=float)))


def gemm_factors(gm: pd.DataFrame, gpu: Gpu) -> dict[str, pd.Series]:
    """Scalar GEMM factors, each where it is the binding limit (a least-squares fit over all rows
    let the GEMM knee drag the factors to unphysical values):
    memory: GEMMs of 1-16 rows with >= 64 MB of weights (pure weight streaming);
    compute per dtype: GEMMs of >= 4096 rows (compute-bound)."""
    gm = gm.copy()
    gm["wbytes"] = gm.k * gm.n * np.where(gm.dtype == "fp8", 1.0, 2.0)
    gm["bytes"] = gm.wbytes + gm.m * (gm.k + gm.n) * 2.0
    gm["seconds"] = gm.time_us * 1e-6
    stream = gm[(gm.m <= 16) & (gm.wbytes >= 64e6)]
    out = {"memory": stream.bytes / stream.seconds / gpu.hbm_bw_Bps}
    for dtype in ("bf16", "fp8"):
        big = gm[(gm.dtype == dtype) & (gm.m >= 4096)]
        out[dtype] = 2.0 * big.m * big.k * big.n / big.seconds / gpu.flops(dtype)
    small = gm[(gm.m <= 16) & (gm.wbytes < 16e6)]
    out["gemm_overhead"] = small.seconds - small.bytes / (gpu.hbm_bw_Bps * _median(out["memory"]))
    return out


def attention_factors(t: dict, gpu: Gpu, overhead: float) -> dict[str, pd.Series]:
    """attention_memory: decode attention with >= 64 sequences (KV streaming);
    attention_compute: the longest causal prefill (8192 tokens), where flash attention peaks;
    attention_decode_s / attention_prefill_s: every row's time beyond that rate and one kernel's
    fixed cost (the split-KV path's extra kernels, short prefills' prologue and tail)."""
    ad, ap = t["attn_decode"], t["attn_prefill"]
    kv = ad.batch * ad.ctx * 2 * ad.nkv * ad.d * 2.0
    pair_flops = 4.0 * ap.nq * ap.d * ap.batch * ap.seq * (ap.seq + 1) / 2
    big_d, big_p = ad.batch >= 64, ap.seq >= 8192
    out = {"attention_memory": kv[big_d] / (ad.time_us[big_d] * 1e-6) / gpu.hbm_bw_Bps,
           "attention_compute": pair_flops[big_p] / (ap.time_us[big_p] * 1e-6) / gpu.flops("bf16")}
    mem = (kv + ad.batch * 2 * ad.nq * ad.d * 2.0) / (gpu.hbm_bw_Bps * _median(out["attention_memory"]))
    comp = pair_flops / (gpu.flops("bf16") * _median(out["attention_compute"]))
    out["attention_decode_s"] = ad.time_us * 1e-6 - mem - overhead
    out["attention_prefill_s"] = ap.time_us * 1e-6 - comp - overhead
    return out


def stream_overhead(st: pd.DataFrame) -> pd.Series:
    """Fixed cost per kernel from stream.csv: the intercept of time against bytes over copies of
    4 MB - 600 MB (a line through each pair of neighbouring sizes; the median of those)."""
    st = st[(st.bytes >= 4e6) & (st.bytes <= 6e8)].sort_values("bytes")
    b, s = st.bytes.to_numpy(), st.time_us.to_numpy() * 1e-6
    slope = np.diff(s) / np.diff(b)
    return pd.Series(s[:-1] - slope * b[:-1])


def elementwise_factors(ew: pd.DataFrame, gpu: Gpu) -> tuple[dict[str, float], pd.Series]:
    """Per-kernel bandwidth fractions from elementwise.csv (rows of >= 4096 tokens, where the fixed
    cost is under a few percent), and the fixed cost per kernel: the time of 1-token single-kernel
    rows (copy, SiLU-and-mul, add + RMSNorm), whose bytes take well under 0.1 us."""
    big = ew[ew.tokens >= 4096]
    frac = {op: _median(big[big.op == kernel].bytes / (big[big.op == kernel].time_us * 1e-6) / gpu.hbm_bw_Bps)
            for op, kernel in ELEMENTWISE_OPS.items() if (big.op == kernel).any()}
    tiny = ew[(ew.tokens == 1) & ew.op.isin(["copy", "silu_mul", "add_rms_norm"])]
    return frac, tiny.time_us * 1e-6


def graph_timed_attention(profile) -> bool:
    """Whether the profile timed prefill attention by graph replay (the packaged profiler does;
    the first H100 profile timed it eagerly, so its short rows carry ~40 us of Python launch time
    that no engine pays: no fixed attention cost is fitted from such a table)."""
    import json
    meta = json.loads((resolve_profile(profile) / "meta.json").read_text())
    return meta.get("attn_prefill_timing") == "graph"


def fit(gpu: Gpu, profile) -> tuple[Gpu, dict]:
    """The fitted GPU (shape-aware GEMMs from the profile's gemm.csv) and {factors, spread}. Each
    scalar factor is the median over its rows; the spread (min, max, rows) is returned with it.
    kernel_overhead_s: small GEMMs' time beyond streaming their weights (1-16 rows, < 16 MB), the
    same rule on every GPU (3.9 us on the H100, 3.8 us on the H200); stream.csv's copy intercept is
    reported beside it (2.2 us on the H200: a lone copy has no GEMM prologue)."""
    t = load_profile(profile)
    require(t, OPERATOR_TABLES, profile)
    samples = gemm_factors(t["gemm"], gpu)
    samples["kernel_overhead_s"] = samples["gemm_overhead"]
    if "stream" in t:   # cross-check only: a lone copy kernel's intercept (no GEMM prologue)
        samples["stream_intercept_s"] = stream_overhead(t["stream"])
    samples.update(attention_factors(t, gpu, _median(samples["kernel_overhead_s"])))
    elementwise = elementwise_factors(t["elementwise"], gpu)[0] if "elementwise" in t else {}
    values = {k: _median(samples[k]) for k in FITTED + ("attention_prefill_s", "attention_decode_s")}
    spread = {k: (float(np.min(v)), float(np.max(v)), int(len(v))) for k, v in samples.items()}
    compute = dict(gpu.efficiency.compute)
    compute.update({"bf16": values["bf16"], "fp16": values["bf16"], "fp8": values["fp8"]})
    eff = Efficiency(compute=compute, memory=values["memory"], attention_compute=values["attention_compute"],
                     attention_memory=values["attention_memory"], kernel_overhead_s=values["kernel_overhead_s"],
                     profile=str(profile), shape_aware_gemm=True, measured_ops=True, elementwise=elementwise,
                     attention_prefill_s=max(0.0, values["attention_prefill_s"]) if graph_timed_attention(profile) else 0.0,
                     attention_decode_s=max(0.0, values["attention_decode_s"]))
    return replace(gpu, efficiency=eff), {"factors": values, "elementwise": elementwise, "spread": spread}


def layer_predictions(gpu: Gpu, profile, table: str = "layers", weights: str = "bf16") -> pd.DataFrame:
    """A measured layer table (`layers`: bf16; `layers_fp8`: W8A8 linear layers, bf16 attention)
    with the cost model's prediction of each row beside it."""
    tables = load_profile(profile)
    require(tables, [table], profile)
    layers = tables[table].copy()
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


def error_summary(gpu: Gpu, profile) -> dict[str, dict[str, float]]:
    """{table: {median, worst, rows}} of |relative error| on each held-out layer table present."""
    tables = load_profile(profile)
    out = {}
    for table, weights in (("layers", "bf16"), ("layers_fp8", "fp8")):
        if table in tables:
            err = layer_predictions(gpu, profile, table, weights).rel_err.abs()
            out[table] = {"median": float(err.median()), "worst": float(err.max()), "rows": int(len(err))}
    return out


__all__ = ["fit", "layer_predictions", "load_profile", "error_summary", "operator_rows", "LayerShape", "FITTED"]
