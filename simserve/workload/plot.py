"""Plot a trace or profile: ISL and OSL histograms, and the arrival rate over time (Agg backend).

A fitted profile is drawn from 20,000 samples of a fixed seed, so the picture is reproducible.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from simserve.errors import WorkloadError
from simserve.workload.profiles import PROFILES
from simserve.workload.trace import load_trace

PROFILE_PLOT_SAMPLES = 20_000
RATE_BUCKET_S = 60.0


def _data(source: str, fmt: Optional[str]):
    if source in PROFILES and not Path(source).exists() and fmt in (None, "auto"):
        from simserve.workload.lengths import sample_profile
        isl, osl = sample_profile(PROFILES[source], PROFILE_PLOT_SAMPLES, np.random.default_rng(0))
        return source, None, isl, osl
    data = load_trace(source, fmt or "auto")
    return data.name, data.arrival_s, data.isl, data.osl


def plot_workload(source: str, fmt: Optional[str], out_png: str | Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_png)
    if not out.parent.exists():
        raise WorkloadError(f"--plot: folder {out.parent} does not exist")
    name, arrival_s, isl, osl = _data(str(source), fmt)
    panels = 3 if arrival_s is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8))
    for ax, values, label in ((axes[0], isl, "input (ISL)"), (axes[1], osl, "output (OSL)")):
        top = max(int(values.max()), 2)
        bins = np.logspace(0, np.log10(top), 50)     # lengths span 1 to ~1e5: log bins show both ends
        ax.hist(values, bins=bins, color="tab:blue" if ax is axes[0] else "tab:orange")
        ax.set_xscale("log")
        ax.set_xlabel(f"{label} tokens")
        ax.set_ylabel("requests")
        ax.set_title(f"{label}: mean {values.mean():,.0f}, p50 {int(np.median(values)):,}")
    if arrival_s is not None:
        counts = np.bincount(((arrival_s - arrival_s[0]) // RATE_BUCKET_S).astype(np.int64))
        minutes = np.arange(len(counts)) * RATE_BUCKET_S / 60.0
        axes[2].step(minutes, counts / RATE_BUCKET_S, where="post", color="tab:green")
        axes[2].set_xlabel("time since first request (min)")
        axes[2].set_ylabel(f"arrival rate (req/s, {RATE_BUCKET_S:.0f} s buckets)")
        axes[2].set_title(f"{len(arrival_s):,} requests")
    fig.suptitle(name)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
