"""Statistics of a trace or a length profile: what `simserve workload describe` prints.

Definitions (the same as in `simserve/data/workloads/SOURCES.md`, so its table can be checked):
- percentiles are nearest-rank (numpy's `inverted_cdf`): always a value that occurs in the data;
- duration_s = last arrival - first arrival; rate_per_s = requests / duration_s;
- interarrival_cv = population standard deviation / mean of the gaps between consecutive
  arrivals (1 for a Poisson process);
- peak_1min_rate_per_s = the busiest 60 s bucket (counted from the first arrival) / 60.
A fitted profile has no rows: its statistics are exact properties of the fitted distribution
(mean = the published average, p50/p99 = quantiles of the clipped lognormal).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from simserve.workload.profiles import PROFILES, FittedLength, Profile, lognormal_mu_for_clipped_mean
from simserve.errors import WorkloadError
from simserve.workload.trace import BUNDLED_DIR, TraceData, bundled_files, load_trace, resolve_trace

# Standard normal quantiles for the fitted profiles' p50 and p99.
_Z = {"p50": 0.0, "p99": 2.3263478740408408}


def length_stats(values: np.ndarray) -> dict:
    v = np.asarray(values)
    return {"mean": float(v.mean()),
            "p50": int(np.percentile(v, 50, method="inverted_cdf")),
            "p99": int(np.percentile(v, 99, method="inverted_cdf")),
            "min": int(v.min()), "max": int(v.max())}


def arrival_stats(arrival_s: Optional[np.ndarray]) -> dict:
    none = {"duration_s": None, "rate_per_s": None, "interarrival_cv": None, "peak_1min_rate_per_s": None}
    if arrival_s is None or len(arrival_s) < 2:
        return none
    duration_s = float(arrival_s[-1] - arrival_s[0])
    if duration_s <= 0:
        return {**none, "duration_s": 0.0}
    gaps_s = np.diff(arrival_s)
    buckets = np.bincount(((arrival_s - arrival_s[0]) // 60.0).astype(np.int64))
    return {"duration_s": duration_s,
            "rate_per_s": len(arrival_s) / duration_s,
            "interarrival_cv": float(gaps_s.std() / gaps_s.mean()),
            "peak_1min_rate_per_s": float(buckets.max() / 60.0)}


def trace_stats(data: TraceData) -> dict:
    return {"name": data.name, "kind": "trace", "format": data.fmt, "requests": len(data),
            **arrival_stats(data.arrival_s), "isl": length_stats(data.isl), "osl": length_stats(data.osl),
            "prefix_blocks": None if data.prefix_hashes is None else sum(len(h) for h in data.prefix_hashes),
            "notes": list(data.notes)}


def _fitted_stats(fit: FittedLength) -> dict:
    mu, sigma = lognormal_mu_for_clipped_mean(fit)
    quantile = {k: int(min(max(round(math.exp(mu + z * sigma)), 1), fit.max_tokens)) for k, z in _Z.items()}
    return {"mean": float(fit.mean_tokens), **quantile, "min": 1, "max": fit.max_tokens}


def profile_stats(profile: Profile) -> dict:
    base = {"name": profile.name, "kind": f"profile ({profile.kind})", "format": "profile",
            "description": profile.description, "source": profile.source,
            "published_mean": {"isl": profile.isl_mean_tokens, "osl": profile.osl_mean_tokens},
            "duration_s": None, "rate_per_s": None, "interarrival_cv": None, "peak_1min_rate_per_s": None}
    if profile.file is not None:
        data = load_trace(BUNDLED_DIR / profile.file)
        return {**base, "requests": len(data), "isl": length_stats(data.isl), "osl": length_stats(data.osl)}
    return {**base, "requests": None, "isl": _fitted_stats(profile.isl_fit), "osl": _fitted_stats(profile.osl_fit)}


def describe(source: str | Path, fmt: Optional[str] = None) -> dict:
    """Statistics of a trace file (path or bundled name) or a length profile name.

    Keys: requests, duration_s, rate_per_s, interarrival_cv, isl and osl (each with mean, p50,
    p99, min, max), plus name, kind, format and a few extras. Timing keys are None where the
    source has no timestamps.
    """
    text = str(source)
    if text in PROFILES and not Path(text).exists() and fmt in (None, "auto"):
        return profile_stats(PROFILES[text])
    try:
        resolve_trace(text)
    except WorkloadError as exc:
        if not Path(text).exists():
            raise WorkloadError(f"{text} is neither a file, a bundled trace nor a length profile "
                                f"(profiles: {', '.join(sorted(PROFILES))}; bundled traces: "
                                f"{', '.join(bundled_files())})") from None
        raise exc
    return trace_stats(load_trace(text, fmt or "auto"))
