"""Study 6: how accurate simserve is, before any finding (one page, parity plots).

Three layers, each against measurements it was not fitted to wherever that is possible:
- compute: the cost model against the layer timings measured on an H100 (simserve/catalog/profiles/
  h100-sxm/layers.csv, layers_fp8.csv; held out of the fit) and the operator tables it is fitted to
  (gemm, attention; in-sample, reported separately);
- collectives: `experiments/validate_comm.py` (the collectives work, issue 12) when it is present,
  else the published anchors in docs/reference-comm.md section 2 and 4;
- end to end: `experiments/validate_e2e.py` (the engines work, issue 13) when it is present.

    python experiments/study6_accuracy.py [--smoke] [--out DIR]
"""
from __future__ import annotations

import importlib
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from common import HERE, parse_args
from simserve.calibration import layer_predictions, load_profile, operator_rows
from simserve.catalog import get_hardware
from simserve.comm import collective_time
from simserve.cost.roofline import ops_time
from simserve.network import build_topology

GiB, KiB = 2 ** 30, 2 ** 10
# (system, hardware, topology, nodes, gpus per node, algorithm, bytes, measured busbw GB/s or None,
#  measured us or None, source). The H100 runs had NVLS off, so they are compared with the ring.
COMM_ANCHORS = [
    ("8x H100", "h100-sxm", "dgx-h100", 1, 8, "ring", GiB, 361.0, None,
     "real 8x H100 node, NCCL, NVLS off (docs/reference-comm.md s2)"),
    ("4x H100", "h100-sxm", "dgx-h100", 1, 4, "ring", GiB, 355.0, None, "same node, 4 GPUs (reference-comm.md s2)"),
    ("2x H100", "h100-sxm", "dgx-h100", 1, 2, "ring", GiB, 329.0, None, "same node, 2 GPUs (reference-comm.md s2)"),
    ("8x A100", "a100-80gb", "dgx-a100", 1, 8, "auto", GiB, 232.0, None, "Azure A100 (reference-comm.md s4)"),
    ("8x MI300X", "mi300x", "mi300x-mesh", 1, 8, "auto", GiB, 317.0, None,
     "ROCm blog, Azure MI300X (reference-comm.md s4)"),
    ("2x8 H100 IB", "h100-sxm", "dgx-h100", 2, 8, "auto", 128 * KiB, None, 45.0,
     "small all-reduce at 2 nodes, nccl#1244 (reference-comm.md s4)"),
]


def compute_points(smoke: bool) -> pd.DataFrame:
    gpu = get_hardware("h100-sxm")
    rows = []
    for table, weights in (("layers", "bf16"), ("layers_fp8", "fp8")):
        t = layer_predictions(gpu, "h100-sxm", table, weights=weights)
        t = t.iloc[::8] if smoke else t
        for r in t.itertuples():
            case = f"{r.model} tp{r.tp} {r.phase} b{r.batch} " + (f"s{r.seq}" if r.phase == "prefill" else f"c{r.ctx}")
            rows.append({"component": "compute", "subset": f"H100 {table} ({weights})", "case": case,
                         "measured": r.time_us * 1e-6, "modelled": r.predicted_us * 1e-6, "unit": "s",
                         "held_out": True, "source": f"catalog/profiles/h100-sxm/{table}.csv"})
    ops = operator_rows(load_profile("h100-sxm"))
    for op, measured in (ops[::16] if smoke else ops):
        rows.append({"component": "compute", "subset": "H100 operators (fitted)", "case": op.name,
                     "measured": measured, "modelled": ops_time([op], gpu), "unit": "s", "held_out": False,
                     "source": "catalog/profiles/h100-sxm/{gemm,attn_prefill,attn_decode}.csv"})
    return pd.DataFrame(rows)


def comm_points() -> tuple[pd.DataFrame, str]:
    """validate_comm's committed results when they exist (issue 12), else the published anchors."""
    found = read_validation("validate_comm", "collectives")
    if found is not None:
        return found, "experiments/validate_comm.py (its committed results)"
    rows = []
    for system, hw, topo_name, nodes, per_node, algo, nbytes, busbw, us, source in COMM_ANCHORS:
        topo = build_topology(hw, nodes, per_node, topo_name)
        n = nodes * per_node
        t, used = collective_time(topo, "allreduce", algo, list(range(n)), float(nbytes))
        if busbw is not None:
            measured, modelled, unit = busbw, 2 * (n - 1) / n * nbytes / t / 1e9, "GB/s busbw"
        else:
            measured, modelled, unit = us * 1e-6, t, "s"
        rows.append({"component": "collectives", "subset": "all-reduce anchors", "case":
                     f"{system} {_size(nbytes)} ({used})", "measured": measured, "modelled": modelled,
                     "unit": unit, "held_out": True, "source": source})
    return pd.DataFrame(rows), "published anchors (validate_comm.py pending)"


def _size(nbytes: int) -> str:
    return f"{nbytes / GiB:g} GiB" if nbytes >= GiB else f"{nbytes / KiB:g} KiB"


def e2e_points() -> tuple[pd.DataFrame, str]:
    found = read_validation("validate_e2e", "end to end")
    if found is not None:
        return found, "experiments/validate_e2e.py (its committed results: published serving throughputs)"
    return pd.DataFrame(columns=["component", "subset", "case", "measured", "modelled", "unit", "held_out",
                                 "source"]), "pending: experiments/validate_e2e.py (issue 13) has not landed"


def read_validation(name: str, component: str) -> pd.DataFrame | None:
    """Another script's committed results (experiments/results/NAME/*.csv): one row per measurement
    with `measured`, the simulated value (`simulated` or `modelled`) and its role (`fit` or
    `held_out`, or a boolean `held_out`). Read, not rerun: those scripts fit and take minutes."""
    folder = HERE / "results" / name
    for csv in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        df = pd.read_csv(csv)
        model_col = next((c for c in ("simulated", "modelled", "simserve", "model") if c in df), None)
        if "measured" not in df or model_col is None:
            continue
        held = (df.role.astype(str).str.replace("-", "_") == "held_out" if "role" in df
                else df.get("held_out", pd.Series(True, index=df.index)))
        group = df.runtime if "runtime" in df else pd.Series(f"{name} points", index=df.index)
        unit = df.metric.astype(str) if "metric" in df else df.get("unit", pd.Series("", index=df.index))
        parts = [c for c in ("id", "case", "system", "op", "gpus", "bytes", "algorithm") if c in df]
        case = df[parts].astype(str).agg(" ".join, axis=1)
        return pd.DataFrame({"component": component, "subset": group.astype(str), "case": case,
                             "measured": df.measured.astype(float), "modelled": df[model_col].astype(float),
                             "unit": unit, "held_out": held.astype(bool),
                             "source": df.source if "source" in df else f"experiments/results/{name}/{csv.name}"})
    return None


def _optional(name: str):
    """A sibling validation script, imported if it exists (it is another issue's work)."""
    if not (HERE / f"{name}.py").exists():
        return None
    return importlib.import_module(name)


def summary(points: pd.DataFrame) -> pd.DataFrame:
    """Per component and subset: points, median and worst |error|, median signed error (bias)."""
    p = points.assign(err=points.modelled / points.measured - 1.0)
    rows = []
    for (comp, subset, held), g in p.groupby(["component", "subset", "held_out"], sort=False):
        rows.append({"component": comp, "subset": subset, "held_out": bool(held), "points": len(g),
                     "median_abs_err": float(g.err.abs().median()), "max_abs_err": float(g.err.abs().max()),
                     "median_err": float(g.err.median())})
    return pd.DataFrame(rows)


def table(points: pd.DataFrame) -> str:
    lines = ["| component | subset | role | points | median error | worst error | bias |",
             "|---|---|---|---|---|---|---|"]
    for r in summary(points).itertuples():
        lines.append(f"| {r.component} | {r.subset} | {'held out' if r.held_out else 'fitted'} | {r.points} | "
                     f"{100 * r.median_abs_err:.1f}% | {100 * r.max_abs_err:.1f}% | {100 * r.median_err:+.1f}% |")
    return "\n".join(lines)


def parity(points: pd.DataFrame, out: Path):
    panels = list(dict.fromkeys(zip(points.component, points.unit)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    for ax, (comp, unit) in zip(axes[0], panels):
        g = points[(points.component == comp) & (points.unit == unit)]
        for subset, s in g.groupby("subset", sort=False):
            ax.loglog(s.measured, s.modelled, ".", ms=5, label=subset)
        lo, hi = float(g[["measured", "modelled"]].min().min()), float(g[["measured", "modelled"]].max().max())
        xs = np.array([lo * 0.8, hi * 1.25])
        ax.plot(xs, xs, "k-", lw=0.8)
        for f in (0.8, 1.25):
            ax.plot(xs, xs * f, "k:", lw=0.6)
        ax.set(xlabel=f"measured ({g.unit.iloc[0]})", ylabel="simserve", title=comp)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("simserve vs measurements (dotted: x/÷1.25)")
    fig.tight_layout()
    fig.savefig(out / "parity.png", dpi=110)
    plt.close(fig)


def main():
    args = parse_args("study6_accuracy", __doc__)
    comm, comm_from = comm_points()
    e2e, e2e_from = e2e_points()
    points = pd.concat([compute_points(args.smoke), comm, e2e], ignore_index=True)
    points.to_csv(args.out / "accuracy.csv", index=False)
    parity(points, args.out)
    lines = ["# Study 6: simserve's own accuracy", "",
             "Read this before the findings of studies 1-5: it is the error bar on every simserve number there.", ""]
    if args.smoke:
        lines += ["**Smoke run** (`--smoke`): a subsample of the points.", ""]
    lines += ["## Sources", "",
              "- compute: the H100 cost model against layers measured on an H100 (held out) and the operator "
              "tables it is fitted to (in-sample); experiments/profile_h100.py wrote both.",
              f"- collectives: {comm_from}.", f"- end to end: {e2e_from}.", "",
              "## Error (simserve / measured - 1)", "", table(points), "",
              "![parity](parity.png)", "",
              "_Generated by `study6_accuracy.py`; the table is rebuilt from accuracy.csv by `table()`._", ""]
    (args.out / "findings.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
