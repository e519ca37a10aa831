"""Workloads: request arrival times and input/output lengths, from traces or distributions."""
from __future__ import annotations

import csv
import gzip
import io
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from simserve.errors import WorkloadError
from simserve.workload.config import Distribution, WorkloadConfig

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "workloads"


@dataclass(frozen=True)
class Workload:
    arrival_s: np.ndarray
    isl: np.ndarray
    osl: np.ndarray
    prefix_hashes: tuple | None = None
    source: str = ""


def resolve_trace(path: str) -> Path:
    """A path as given, else a bundled trace of that file name (also as workloads/NAME)."""
    p = Path(path)
    if p.exists():
        return p
    bundled = BUNDLED_DIR / p.name
    if bundled.exists():
        return bundled
    raise WorkloadError(f"trace not found: {path} (bundled traces: "
                        f"{', '.join(sorted(x.name for x in BUNDLED_DIR.glob('*.gz')))})")


def _open_text(path: Path):
    return io.TextIOWrapper(gzip.open(path, "rb"), newline="") if path.suffix == ".gz" else open(path, newline="")


def _positive_int(value: str, column: str, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise WorkloadError(f"{where}: {column} is {value!r}, not an integer") from None
    if number < 1:
        raise WorkloadError(f"{where}: {column} is {number}, must be a positive integer")
    return number


def read_azure(path: Path):
    """Azure LLM inference trace CSV: TIMESTAMP, ContextTokens, GeneratedTokens."""
    times, isl, osl = [], [], []
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise WorkloadError(f"{path.name}: empty file")
        cols = {name.strip(): i for i, name in enumerate(header)}
        need = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
        missing = [c for c in need if c not in cols]
        if missing:
            raise WorkloadError(f"{path.name}: line 1: missing column(s) {', '.join(missing)}")
        t_i, c_i, g_i = (cols[c] for c in need)
        for line, row in enumerate(reader, start=2):
            where = f"{path.name}: line {line}"
            if len(row) != len(header):
                raise WorkloadError(f"{where}: {len(row)} fields, expected {len(header)}")
            try:
                stamp = datetime.fromisoformat(row[t_i].strip()[:26])
            except ValueError:
                raise WorkloadError(f"{where}: TIMESTAMP {row[t_i]!r} is not a date-time") from None
            times.append(stamp.timestamp())
            isl.append(_positive_int(row[c_i], "ContextTokens", where))
            osl.append(_positive_int(row[g_i], "GeneratedTokens", where))
    if not times:
        raise WorkloadError(f"{path.name}: no requests")
    t = np.asarray(times, dtype=float)
    return t - t.min(), np.asarray(isl, dtype=np.int64), np.asarray(osl, dtype=np.int64)


def _draw(spec, n: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(spec, int):
        return np.full(n, spec, dtype=np.int64)
    d: Distribution = spec
    if d.dist == "fixed":
        x = np.full(n, d.mean)
    elif d.dist == "uniform":
        half = d.mean * d.cv * math.sqrt(3)
        x = rng.uniform(d.mean - half, d.mean + half, n)
    else:
        sigma2 = math.log1p(d.cv ** 2)
        x = rng.lognormal(math.log(d.mean) - sigma2 / 2, math.sqrt(sigma2), n)
    x = np.maximum(np.rint(x), d.min)
    if d.max is not None:
        x = np.minimum(x, d.max)
    return x.astype(np.int64)


def _arrivals(cfg: WorkloadConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    a = cfg.arrivals
    if a.process == "batch":
        return np.zeros(n)
    if a.process == "poisson":
        gaps = rng.exponential(1.0 / a.rate, n)
    else:   # gamma with mean 1/rate and coefficient of variation cv
        shape = 1.0 / a.cv ** 2
        gaps = rng.gamma(shape, 1.0 / (a.rate * shape), n)
    return np.cumsum(gaps) - gaps[0]


def build_workload(cfg: WorkloadConfig, max_context: int, rng: np.random.Generator) -> Workload:
    if cfg.trace is not None:
        path = resolve_trace(cfg.trace)
        t, isl, osl = read_azure(path)
        order = np.argsort(t, kind="stable")
        t, isl, osl = t[order], isl[order], osl[order]
        source = path.name
        if cfg.lengths is not None:     # the trace gives arrivals, the lengths come from the config
            isl = _draw(cfg.lengths.isl, len(t), rng)
            osl = _draw(cfg.lengths.osl, len(t), rng)
        if cfg.arrivals.process == "trace":
            t = t / cfg.arrivals.rate_scale
        else:
            t = _arrivals(cfg, len(t), rng)
    else:
        n = cfg.num_requests or 1000
        if cfg.lengths.profile is not None:
            raise WorkloadError(f"length profile {cfg.lengths.profile!r} is not available yet")
        isl = _draw(cfg.lengths.isl, n, rng)
        osl = _draw(cfg.lengths.osl, n, rng)
        t = _arrivals(cfg, n, rng)
        source = f"lengths {cfg.lengths.isl}/{cfg.lengths.osl}, {cfg.arrivals.process} arrivals"
    if cfg.duration_s is not None:
        keep = t <= cfg.duration_s
        t, isl, osl = t[keep], isl[keep], osl[keep]
    if cfg.num_requests is not None:
        t, isl, osl = t[:cfg.num_requests], isl[:cfg.num_requests], osl[:cfg.num_requests]
    too_long = isl + osl > max_context
    if too_long.any():
        if cfg.context_overflow == "reject":
            i = int(np.flatnonzero(too_long)[0])
            raise WorkloadError(f"request {i}: {isl[i]} + {osl[i]} tokens exceed the model's context of "
                                f"{max_context} (set workload.context_overflow: truncate to cut prompts)")
        isl = np.where(too_long, np.maximum(max_context - osl, 1), isl)
        osl = np.minimum(osl, max_context - 1)
    return Workload(arrival_s=t, isl=isl, osl=osl, source=source)
