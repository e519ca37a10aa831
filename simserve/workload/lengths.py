"""Draw ISL/OSL: fixed numbers, parametric distributions, or dataset profiles.

All randomness comes from the caller's numpy Generator, in a fixed order (ISL then OSL), so a
seed gives identical arrays.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional

import numpy as np

from simserve.workload.config import Distribution, LengthsConfig, LengthSpec
from simserve.workload.profiles import Profile, get_profile, sample_fitted


def draw_spec(spec: LengthSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """n integer lengths from a fixed value or a `Distribution` (rounded, clipped to [min, max])."""
    if isinstance(spec, int):
        return np.full(n, spec, dtype=np.int64)
    d: Distribution = spec
    if d.dist == "fixed" or d.cv == 0:
        x = np.full(n, d.mean)
    elif d.dist == "uniform":
        half_width = d.mean * d.cv * math.sqrt(3)     # a uniform of width w has sd w / sqrt(12)
        x = rng.uniform(d.mean - half_width, d.mean + half_width, n)
    elif d.dist == "gamma":
        shape = 1.0 / d.cv ** 2
        x = rng.gamma(shape, d.mean / shape, n)
    else:
        sigma2 = math.log1p(d.cv ** 2)
        x = rng.lognormal(math.log(d.mean) - sigma2 / 2, math.sqrt(sigma2), n)
    x = np.maximum(np.rint(x), d.min)
    if d.max is not None:
        x = np.minimum(x, d.max)
    return x.astype(np.int64)


@lru_cache(maxsize=16)
def empirical_rows(file_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(isl, osl) of every row of a bundled per-request file, read once per process."""
    from simserve.workload.trace import BUNDLED_DIR, load_trace
    data = load_trace(BUNDLED_DIR / file_name)   # never a same-named file in the working directory
    data.isl.setflags(write=False)
    data.osl.setflags(write=False)
    return data.isl, data.osl


def shuffled_deck(rows: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n row indices dealt from freshly shuffled decks of all rows: each row is used once before any
    row repeats.

    Why not i.i.d. draws: the bundled files are heavy-tailed (Azure code OSL has cv 2.3), and i.i.d.
    resampling of 20k rows misses the file's mean by 1.6% (one standard error); dealing whole decks
    keeps every full pass exact and only the last partial deck random (sampled without replacement).
    """
    decks = [rng.permutation(rows) for _ in range(-(-n // rows))]
    return np.concatenate(decks)[:n] if decks else np.zeros(0, dtype=np.int64)


def sample_profile(profile: Profile, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n (isl, osl) pairs from a profile: whole rows dealt from shuffled decks, or the fitted lognormals."""
    if profile.file is not None:
        isl, osl = empirical_rows(profile.file)
        pick = shuffled_deck(len(isl), n, rng)
        return isl[pick], osl[pick]
    return sample_fitted(profile.isl_fit, n, rng), sample_fitted(profile.osl_fit, n, rng)


def draw_lengths(lengths: LengthsConfig, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n (isl, osl) pairs for a `lengths:` section; an explicit isl/osl overrides that side of a profile."""
    isl: Optional[np.ndarray] = None
    osl: Optional[np.ndarray] = None
    if lengths.profile is not None:
        isl, osl = sample_profile(get_profile(lengths.profile), n, rng)
    if lengths.isl is not None:
        isl = draw_spec(lengths.isl, n, rng)
    if lengths.osl is not None:
        osl = draw_spec(lengths.osl, n, rng)
    return isl, osl


def describe_lengths(lengths: LengthsConfig) -> str:
    def one(spec):
        if spec is None:
            return "profile"
        if isinstance(spec, int):
            return str(spec)
        return f"{spec.dist}(mean {spec.mean:g}, cv {spec.cv:g})"
    if lengths.profile is not None and lengths.isl is None and lengths.osl is None:
        return f"profile {lengths.profile}"
    prefix = f"profile {lengths.profile}, " if lengths.profile else ""
    return f"{prefix}ISL {one(lengths.isl)}, OSL {one(lengths.osl)}"
