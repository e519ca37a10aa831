"""Fit a profile folder and report its held-out layer error (no GPU, no PyTorch needed).

`simserve profile --check DIR` (and the end of `simserve profile --out DIR`) prints the fitted
factors, the error of each held-out layer table (median and worst |error|, by model/tp/phase),
and a hardware catalog entry (YAML) that uses the profile.
"""
from __future__ import annotations

import json
from pathlib import Path

from simserve.errors import CatalogError

REQUIRED = ("gemm", "attn_prefill", "attn_decode", "layers")   # layers_fp8, elementwise, stream: optional


def check_folder(folder: Path) -> dict:
    if not folder.is_dir():
        raise CatalogError(f"profile folder {folder} does not exist")
    if not (folder / "meta.json").is_file():
        raise CatalogError(f"profile {folder}: missing meta.json")
    for name in REQUIRED:
        if not (folder / f"{name}.csv").is_file():
            raise CatalogError(f"profile {folder}: missing table {name}.csv")
    try:
        return json.loads((folder / "meta.json").read_text())
    except json.JSONDecodeError as exc:
        raise CatalogError(f"profile {folder}: meta.json is not valid JSON ({exc.msg})") from None


def hardware_for(meta: dict, spec: str | None):
    """The catalog entry whose peaks the fit divides by: --hardware, else the one whose name or
    alias appears in the GPU name meta.json records."""
    from simserve.catalog import get_hardware, hardware_catalog
    if spec:
        return get_hardware(spec)
    gpu_name = str(meta.get("gpu", "")).lower().replace(" ", "-")
    keys = sorted(((alias, gpu) for gpu in hardware_catalog().values() for alias in (gpu.name, *gpu.aliases)),
                  key=lambda kv: -len(kv[0]))
    for alias, gpu in keys:
        if alias.split("-")[0] in gpu_name.split("-"):
            return gpu
    raise CatalogError(f"meta.json gpu {meta.get('gpu')!r} matches no catalog hardware; "
                       f"give --hardware NAME or a YAML card with its peaks and bandwidth")


def yaml_entry(gpu, folder: Path, info: dict) -> str:
    f = info["factors"]
    eff = gpu.efficiency
    compute = ", ".join(f"{k}: {v:.3f}" for k, v in eff.compute.items())
    elementwise = ", ".join(f"{k}: {v:.3f}" for k, v in info["elementwise"].items())
    return "\n".join([
        f"{gpu.name}:   # hbm/peaks/links as in the catalog entry used for the fit; efficiency measured",
        "  efficiency:",
        f"    profile: {folder}",
        "    shape_aware_gemm: true",
        "    measured_ops: true",
        f"    compute: {{{compute}}}",
        f"    memory: {f['memory']:.3f}",
        f"    attention_compute: {f['attention_compute']:.3f}",
        f"    attention_memory: {f['attention_memory']:.3f}",
        f"    kernel_overhead_s: {f['kernel_overhead_s']:.3g}",
        f"    attention_prefill_s: {eff.attention_prefill_s:.3g}",
        f"    attention_decode_s: {eff.attention_decode_s:.3g}",
        f"    elementwise: {{{elementwise}}}",
    ])


def report(folder: Path, hardware: str | None = None, out=print) -> dict:
    """Fit, print the error tables and the catalog entry; returns {table: {median, worst, rows}}."""
    from simserve.calibration import fit, layer_predictions
    folder = Path(folder)
    meta = check_folder(folder)
    base = hardware_for(meta, hardware)
    gpu, info = fit(base, folder)
    out(f"profile {folder}: {meta.get('gpu')} ({meta.get('date')}), fitted against catalog {base.name!r}")
    out("factors: " + ", ".join(f"{k}={v:.4g}" for k, v in info["factors"].items()))
    summary = {}
    for table, weights in (("layers", "bf16"), ("layers_fp8", "fp8")):
        if not (folder / f"{table}.csv").is_file():
            continue
        t = layer_predictions(gpu, folder, table, weights)
        err = t.rel_err.abs()
        summary[table] = {"median": float(err.median()), "worst": float(err.max()), "rows": int(len(t))}
        out(f"\n{table} (held out, {len(t)} rows): median |error| {err.median():.1%}, worst {err.max():.1%}")
        t["group"] = t.model + " tp" + t.tp.astype(str) + " " + t.phase
        g = t.assign(abs_err=err).groupby("group", sort=False)
        for name, rows in g:
            out(f"  {name:<28} median {rows.abs_err.median():6.1%}  worst {rows.abs_err.max():6.1%}  "
                f"mean signed {rows.rel_err.mean():+6.1%}")
    out("\nhardware catalog entry:\n" + yaml_entry(gpu, folder, info))
    return summary


def profile_note(gpu) -> str:
    """For `simserve catalog`: the GPU's measured profile and its held-out median layer error."""
    if not gpu.efficiency.profile:
        return "-"
    from simserve.calibration import error_summary
    try:
        summary = error_summary(gpu, gpu.efficiency.profile)
    except CatalogError as exc:
        return f"{gpu.efficiency.profile} ({exc})"
    errs = " ".join(f"{'fp8' if t.endswith('fp8') else 'bf16'} {s['median']:.1%}" for t, s in summary.items())
    return f"{gpu.efficiency.profile} (held-out median error {errs})"
