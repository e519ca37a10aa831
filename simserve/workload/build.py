"""`build_workload`: a `workload:` config section -> the arrays the engine replays.

Order of operations (each step documented because the order changes the result):
1. Source rows: a trace (read, validated, time-sorted, re-based to t = 0), or n synthetic
   requests (n = num_requests; else, for Poisson/gamma with duration_s, however many arrive in
   that window; else 1000).
2. Lengths: `lengths` (if given) replaces the trace's ISL/OSL; drawn for every row.
3. Arrivals: the trace's own times re-timed (rate_scale or rate, jitter), or a synthetic process.
4. Limits: keep arrivals in [0, duration_s), then the first num_requests of them.
5. Context: a request with ISL + OSL beyond the model's context is truncated (the prompt is cut
   to fit, keeping at least 1 token; the output is cut only if it alone does not fit) with a
   warning, or the whole workload is refused (`context_overflow: reject`).
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from simserve.errors import WorkloadError
from simserve.workload.arrivals import arrivals_until, retime_trace, synthetic_arrivals
from simserve.workload.config import WorkloadConfig
from simserve.workload.lengths import describe_lengths, draw_lengths
from simserve.workload.readers import MOONCAKE_BLOCK_TOKENS, Columns
from simserve.workload.trace import TraceData, WorkloadWarning, load_trace
from simserve.workload.types import Workload

DEFAULT_SYNTHETIC_REQUESTS = 1000


def trace_rate_per_s(arrival_s: np.ndarray) -> Optional[float]:
    """Requests per second over the trace's span (rows / (last - first)), as SOURCES.md defines it."""
    span_s = float(arrival_s[-1] - arrival_s[0]) if len(arrival_s) > 1 else 0.0
    return len(arrival_s) / span_s if span_s > 0 else None


def read_configured_trace(cfg: WorkloadConfig) -> TraceData:
    columns = None if cfg.columns is None else Columns(**cfg.columns.model_dump())
    # Reading can stop early only when the first N rows in file order are the ones kept.
    early_stop = (cfg.num_requests if cfg.arrivals.process == "trace" and cfg.duration_s is None
                  and not cfg.arrivals.jitter_s else None)
    return load_trace(cfg.effective_trace, cfg.format, columns, cfg.filters.model, cfg.filters.log_type,
                      cfg.strict, max_rows=early_stop)


def _from_trace(cfg: WorkloadConfig, rng: np.random.Generator):
    data = read_configured_trace(cfg)
    isl, osl, prefix = data.isl, data.osl, data.prefix_hashes
    source = f"{data.name} ({data.fmt}, {len(data)} rows)"
    if cfg.lengths is not None:
        isl, osl = draw_lengths(cfg.lengths, len(data), rng)
        prefix = None      # the trace's prefix blocks describe its own prompts, not the drawn ones
        source += f", lengths {describe_lengths(cfg.lengths)}"
    if cfg.arrivals.process == "trace":
        if data.arrival_s is None:
            raise WorkloadError(f"{data.name} has no timestamps: set workload.arrivals.process to "
                                "poisson, gamma or batch")
        t = retime_trace(data.arrival_s, cfg.arrivals, rng, trace_rate_per_s(data.arrival_s))
        if cfg.arrivals.jitter_s:
            order = np.argsort(t, kind="stable")
            t, isl, osl = t[order], isl[order], osl[order]
            prefix = None if prefix is None else tuple(prefix[i] for i in order)
        scale = "" if cfg.arrivals.rate_scale == 1 and cfg.arrivals.rate is None else ", re-timed"
        source += f", trace arrivals{scale}"
    else:
        t = synthetic_arrivals(cfg.arrivals, len(isl), rng)
        source += f", {_arrivals_text(cfg)}"
    return t, isl, osl, prefix, source


def _arrivals_text(cfg: WorkloadConfig) -> str:
    a = cfg.arrivals
    if a.process == "batch":
        return "batch at t=0"
    if a.concurrency is not None:
        return f"{a.process} loop of {a.concurrency} clients, think time {a.think_time_s:g} s"
    return f"{a.process} {a.rate:g} req/s" + (f" cv {a.cv:g}" if a.process == "gamma" else "")


def _synthetic(cfg: WorkloadConfig, rng: np.random.Generator):
    if cfg.num_requests is None and cfg.duration_s is not None and cfg.arrivals.process in ("poisson", "gamma"):
        t = arrivals_until(cfg.arrivals, cfg.duration_s, rng)
    else:
        t = synthetic_arrivals(cfg.arrivals, cfg.num_requests or DEFAULT_SYNTHETIC_REQUESTS, rng)
    isl, osl = draw_lengths(cfg.lengths, len(t), rng)
    return t, isl, osl, None, f"lengths {describe_lengths(cfg.lengths)}, {_arrivals_text(cfg)}"


def fit_context(isl: np.ndarray, osl: np.ndarray, max_context: int, policy: str):
    """(isl, osl, note): requests cut to fit `max_context` tokens, or an error under `reject`."""
    too_long = isl + osl > max_context
    count = int(too_long.sum())
    if not count:
        return isl, osl, ""
    if policy == "reject":
        i = int(np.flatnonzero(too_long)[0])
        raise WorkloadError(f"{count} request(s) exceed the model's context of {max_context} tokens, the first "
                            f"(request {i}) with ISL {isl[i]} + OSL {osl[i]}; set workload.context_overflow: "
                            "truncate to cut their prompts")
    osl = np.minimum(osl, max_context - 1)
    isl = np.where(too_long, np.maximum(np.minimum(isl, max_context - osl), 1), isl)
    return isl, osl, f"{count} request(s) truncated to the model's context of {max_context} tokens"


def trim_prefix_blocks(prefix, isl: np.ndarray, block: int = MOONCAKE_BLOCK_TOKENS) -> tuple[tuple[int, ...], ...]:
    """Drop the prefix blocks of prompt tokens cut by truncation: a prompt of n tokens spans
    ceil(n / block) blocks (512 for Mooncake)."""
    return tuple(h[:-(-int(n) // block)] for h, n in zip(prefix, isl))


def prefix_segment_tokens(cfg: WorkloadConfig) -> int:
    """Tokens each of a request's prefix ids names (`Workload.prefix_block_tokens`)."""
    return cfg.shared_prefix.tokens if cfg.shared_prefix is not None else MOONCAKE_BLOCK_TOKENS


def add_shared_prefix(cfg: WorkloadConfig, isl: np.ndarray, rng: np.random.Generator, source: str):
    """(isl, prefix ids, source): each prompt prefixed by its group's shared tokens
    (`WorkloadConfig.shared_prefix`); a group is one id naming its whole prefix."""
    sp = cfg.shared_prefix
    groups = rng.integers(sp.groups, size=len(isl))
    prefix = tuple((int(g),) for g in groups)
    return isl + sp.tokens, prefix, source + f", shared prefix of {sp.tokens} tokens in {sp.groups} groups"


def build_workload(cfg: WorkloadConfig, max_context: int, rng: np.random.Generator) -> Workload:
    """The requests of a `workload:` section, ready for the engine (see the module docstring)."""
    if max_context < 2:
        raise WorkloadError(f"max_context must be at least 2 tokens (got {max_context})")
    if cfg.effective_trace is not None:
        t, isl, osl, prefix, source = _from_trace(cfg, rng)
    else:
        t, isl, osl, prefix, source = _synthetic(cfg, rng)
    segment = prefix_segment_tokens(cfg)
    if cfg.shared_prefix is not None:
        isl, prefix, source = add_shared_prefix(cfg, isl, rng, source)
    keep = len(t)
    if cfg.duration_s is not None:
        keep = int(np.searchsorted(t, cfg.duration_s, side="left"))
    if cfg.num_requests is not None:
        keep = min(keep, cfg.num_requests)
    if keep == 0:
        raise WorkloadError(f"no request arrives within duration_s = {cfg.duration_s} s")
    t, isl, osl = t[:keep], isl[:keep], osl[:keep]
    prefix = None if prefix is None else prefix[:keep]
    isl, osl, note = fit_context(isl, osl, max_context, cfg.context_overflow)
    if note and prefix is not None:
        prefix = trim_prefix_blocks(prefix, isl, segment)
    if note:
        warnings.warn(note, WorkloadWarning, stacklevel=2)
        source += f"; {note}"
    return Workload(arrival_s=np.ascontiguousarray(t, dtype=np.float64),
                    isl=np.ascontiguousarray(isl, dtype=np.int64),
                    osl=np.ascontiguousarray(osl, dtype=np.int64),
                    prefix_hashes=prefix, prefix_block_tokens=segment, source=source)
