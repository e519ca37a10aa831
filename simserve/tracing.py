"""A run as a Chrome trace (trace event format, JSON), for the Perfetto UI and chrome://tracing.

Layout (pid = one process per replica, plus one for the requests):
- one thread per pipeline stage of the replica ("stage s (GPUs a-b)", tid = 1 + its first GPU):
  complete events (`ph: "X"`) for each iteration or coalesced decode run of the stage, split into
  a compute slice followed by its all-reduce and all-gather slices (the collectives of the
  iteration summed: the timeline keeps per-iteration totals, not each layer's collective). Every
  GPU of a tensor-parallel group runs in lockstep, so one track stands for all of them (args.gpus
  says how many); a per-GPU copy would multiply a tp8 trace by 8. Slices on a stage thread tile
  [start, end] of their row and rows of a stage never overlap, so they never overlap.
- one thread per pipeline link direction ("P2P stage s -> s+1"): one slice per transfer
  (activations forward, sampled token ids from the last stage back to the first). Transfers on
  one link can overlap; they are spread over as many sub-tracks as needed so none overlaps.
- one async slice per request (`ph: "b"/"e"`, category "request", id = request id) from arrival
  to finish, with nested "queued" (arrival -> first admission), "prefill" (-> first token) and
  "decode" (-> last token) slices; rejected requests are an async instant ("n") with the reason.

Timestamps are microseconds of simulated time. `window=(start_s, end_s)` keeps what overlaps the
window, clipped to it, so traces of long runs stay small: `simserve run --trace` on a run longer
than DEFAULT_WINDOW_S keeps the first DEFAULT_WINDOW_S seconds unless a window is given, and any
trace above WARN_BYTES is written with a warning that says how to narrow it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from simserve.errors import SimserveError

US = 1e6
REQUESTS_PID = 0
DEFAULT_WINDOW_S = 60.0      # --trace on a longer run: the first minute, unless --trace-window says otherwise
WARN_BYTES = 50_000_000      # Perfetto loads ~50 MB of JSON in seconds; beyond that it crawls


def parse_window(text: str | None, flag: str = "--trace-window") -> tuple[float, float] | None:
    """'START:END' in simulated seconds; either side may be empty (from the start / to the end)."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = float(parts[0]) if parts[0].strip() else 0.0
        end = float(parts[1]) if parts[1].strip() else math.inf
    except ValueError:
        raise SimserveError(f"{flag} {text!r}: expected START:END in simulated seconds, e.g. 10:20") from None
    if not (start >= 0 and end > start):
        raise SimserveError(f"{flag} {text!r}: need 0 <= START < END")
    return start, end


def _compute_name(kind: str, steps: int, prefill_tokens: int, decode_seqs: int) -> str:
    if kind == "decode_run":
        return f"decode x{steps} ({decode_seqs} seq)"
    if prefill_tokens and decode_seqs:
        return f"mixed ({prefill_tokens} prefill tok + {decode_seqs} decode)"
    if prefill_tokens:
        return f"prefill ({prefill_tokens} tok)"
    return f"decode ({decode_seqs} seq)"


def _fmt_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


HOST_TID = 99999
KV_TID = 99998
SWAP_TID = 99997
KV_TRACKS = {"kv_transfer": (KV_TID, "KV transfer to the decode pool"),
             "kv_swap": (SWAP_TID, "KV swap to / from host memory (PCIe)")}


def host_events(host, lo: float, hi: float, meta, events: list) -> None:
    """The engine's exposed CPU time (timeline rows of kind `host`): its own track per replica."""
    for rep in sorted(set(host.replica.astype(int))):
        meta(rep + 1, HOST_TID, "thread_name", "host (CPU: schedule, prepare, sample)", sort=10**5 - 1)
    for rep, start, end in zip(host.replica.to_numpy(), host.start_s.to_numpy(), host.end_s.to_numpy()):
        a, b = max(float(start), lo), min(float(end), hi)
        if b > a:
            events.append({"ph": "X", "cat": "host", "name": "host", "pid": int(rep) + 1, "tid": HOST_TID,
                           "ts": a * US, "dur": b * US - a * US, "args": {}})


def kv_transfer_events(kv, lo: float, hi: float, meta, events: list, kind: str = "kv_transfer") -> None:
    """Disaggregation's KV transfers (timeline rows of kind `kv_transfer`): a track on the prefill
    replica each leaves from, one slice per request (overlapping slices are concurrent transfers).
    Swap preemption's copies (kind `kv_swap`, one slice per iteration that swaps) get a track too."""
    tid, label = KV_TRACKS[kind]
    for rep in sorted(set(kv.replica.astype(int))):
        meta(rep + 1, tid, "thread_name", label, sort=10**5 - 2)
    for rep, start, end, nbytes in zip(kv.replica.to_numpy(), kv.start_s.to_numpy(), kv.end_s.to_numpy(),
                                       kv.p2p_bytes.to_numpy()):
        a, b = max(float(start), lo), min(float(end), hi)
        if b >= a:
            events.append({"ph": "X", "cat": kind, "name": f"KV {_fmt_bytes(float(nbytes))}",
                           "pid": int(rep) + 1, "tid": tid, "ts": a * US, "dur": b * US - a * US,
                           "args": {"bytes": float(nbytes)}})


def trace_events(run, window: tuple[float, float] | None = None) -> list[dict]:
    """The trace's events for a RunData or Result (see the module docstring)."""
    from simserve.plots import as_runs

    run = as_runs(run)[0]
    lo, hi = window if window else (-math.inf, math.inf)
    events: list[dict] = []
    stages = run.summary.get("stages") or []
    gpus_of = {(st["replica"], st["stage"]): list(st["gpus"]) for st in stages}
    num_stages: dict[int, int] = {}
    for st in stages:
        num_stages[st["replica"]] = max(num_stages.get(st["replica"], 0), st["stage"] + 1)

    def meta(pid, tid, what, name, sort=None):
        events.append({"ph": "M", "pid": pid, "tid": tid, "name": what, "args": {"name": name}})
        if sort is not None:
            key = "process_sort_index" if what == "process_name" else "thread_sort_index"
            events.append({"ph": "M", "pid": pid, "tid": tid, "name": key, "args": {"sort_index": sort}})

    layout = " ".join(f"{k}{v}" for k, v in (run.summary.get("layout") or {}).items() if v != 1) or "1 GPU"
    for replica in sorted(num_stages):
        pid = replica + 1
        meta(pid, 0, "process_name", f"replica {replica} ({layout})", sort=pid)
        for s in range(num_stages[replica]):
            gpus = gpus_of[(replica, s)]
            span = f"GPU {gpus[0]}" if len(gpus) == 1 else f"GPUs {min(gpus)}-{max(gpus)}"
            meta(pid, 1 + gpus[0], "thread_name", f"stage {s} ({span})", sort=gpus[0])
    meta(REQUESTS_PID, 0, "process_name", "requests", sort=10**6)

    tl = run.timeline
    if tl is not None and len(tl):
        rows = tl[(tl.end_s >= lo) & (tl.start_s <= hi)]
        work = rows[~rows.kind.isin(("p2p", "host", *KV_TRACKS))]
        host_events(rows[rows.kind == "host"], lo, hi, meta, events)
        for kind in KV_TRACKS:
            kv_transfer_events(rows[rows.kind == kind], lo, hi, meta, events, kind)
        cols = [work[c].to_numpy() for c in ("replica", "stage", "kind", "start_s", "end_s", "steps",
                                              "prefill_tokens", "decode_seqs", "compute_s", "allreduce_s",
                                              "allgather_s", "kv_used_blocks", "kv_total_blocks", "running",
                                              "waiting")]
        for (rep, stage, kind, start, end, steps, pre, dec, comp, ar, ag, kv_used, kv_total, running,
             waiting) in zip(*cols):
            rep, stage, start, end = int(rep), int(stage), float(start), float(end)
            # slice boundaries in seconds, each clamped into [start, end] so they tile the row
            b1 = min(start + float(comp), end)
            b2 = min(b1 + float(ar), end)
            parts = [(start, b1, "compute", _compute_name(kind, int(steps), int(pre), int(dec))),
                     (b1, b2, "allreduce", "all-reduce"), (b2, end, "allgather", "all-gather")]
            gpus = gpus_of.get((rep, stage), [stage])
            args = {"steps": int(steps), "prefill_tokens": int(pre), "decode_seqs": int(dec),
                    "kv_blocks": f"{int(kv_used)}/{int(kv_total)}", "running": int(running),
                    "waiting": int(waiting), "gpus": len(gpus)}
            for a, b, cat, name in parts:
                a, b = max(a, lo), min(b, hi)
                if b <= a:
                    continue
                ts = a * US
                events.append({"ph": "X", "cat": cat, "name": name, "pid": rep + 1, "tid": 1 + gpus[0],
                               "ts": ts, "dur": b * US - ts, "args": args})
        transfers = rows[rows.kind == "p2p"].sort_values(["replica", "stage", "start_s"], kind="stable")
        lanes_end: dict[tuple[int, int], list[float]] = {}
        named = set()
        for rep, stage, start, end, nbytes in zip(transfers.replica.to_numpy(), transfers.stage.to_numpy(),
                                                  transfers.start_s.to_numpy(), transfers.end_s.to_numpy(),
                                                  transfers.p2p_bytes.to_numpy()):
            rep, stage = int(rep), int(stage)
            a, b = max(float(start), lo), min(float(end), hi)
            if b < a:
                continue
            ends = lanes_end.setdefault((rep, stage), [])
            lane = next((i for i, e in enumerate(ends) if e <= a), len(ends))
            if lane == len(ends):
                ends.append(b)
            else:
                ends[lane] = b
            n = num_stages.get(rep, 1)
            tid = 100000 + stage * 100 + lane
            if (rep, tid) not in named:
                named.add((rep, tid))
                dst = (stage + 1) % n
                meta(rep + 1, tid, "thread_name",
                     f"P2P stage {stage} -> {dst}" + (f" ({lane + 1})" if lane else ""), sort=10**5 + tid)
            forward = stage < n - 1
            events.append({"ph": "X", "cat": "p2p", "name": f"{'activations' if forward else 'token ids'} "
                           f"{_fmt_bytes(float(nbytes))}", "pid": rep + 1, "tid": tid, "ts": a * US,
                           "dur": b * US - a * US, "args": {"bytes": float(nbytes)}})

    req = run.requests
    cols = [req[c].to_numpy() for c in ("request_id", "status", "arrival_s", "scheduled_s", "first_token_s",
                                         "finish_s", "isl", "osl", "reject_reason", "replica")]
    for rid, status, arrival, sched, first, finish, isl, osl, reason, replica in zip(*cols):
        rid = int(rid)
        if status == "rejected":
            if lo <= arrival <= hi:
                events.append({"ph": "n", "cat": "request", "id": rid, "name": f"request {rid} rejected",
                               "pid": REQUESTS_PID, "tid": 0, "ts": float(arrival) * US,
                               "args": {"reason": str(reason), "isl": int(isl), "osl": int(osl)}})
            continue
        end = finish if not math.isnan(finish) else run.summary.get("sim_time_s", arrival)
        a, b = max(float(arrival), lo), min(float(end), hi)
        if b < a:
            continue
        phases = [("queued", arrival, sched), ("prefill", sched, first), ("decode", first, finish)]
        events.append({"ph": "b", "cat": "request", "id": rid, "name": f"request {rid}", "pid": REQUESTS_PID,
                       "tid": 0, "ts": a * US, "args": {"isl": int(isl), "osl": int(osl), "status": str(status),
                                                         "replica": int(replica)}})
        for name, p0, p1 in phases:
            if math.isnan(p0):
                break
            p1 = float(end) if math.isnan(p1) else float(p1)
            c0, c1 = max(float(p0), lo), min(p1, hi)
            if c1 < c0:
                continue
            events.append({"ph": "b", "cat": "request", "id": rid, "name": name, "pid": REQUESTS_PID, "tid": 0,
                           "ts": c0 * US})
            events.append({"ph": "e", "cat": "request", "id": rid, "name": name, "pid": REQUESTS_PID, "tid": 0,
                           "ts": c1 * US})
        events.append({"ph": "e", "cat": "request", "id": rid, "name": f"request {rid}", "pid": REQUESTS_PID,
                       "tid": 0, "ts": b * US})
    return events


def trace_document(run, window: tuple[float, float] | None = None) -> dict:
    from simserve.plots import as_runs

    run = as_runs(run)[0]
    other = {"model": run.summary.get("model"), "hardware": run.summary.get("hardware"),
             "layout": run.summary.get("layout"), "sim_time_s": run.summary.get("sim_time_s")}
    if window:
        other["window_s"] = [window[0], window[1] if math.isfinite(window[1]) else None]
    return {"traceEvents": trace_events(run, window), "displayTimeUnit": "ms", "otherData": other}


def default_window(sim_time_s: float, window: tuple[float, float] | None) -> tuple[float, float] | None:
    """The window `--trace` uses: the one given, else the first DEFAULT_WINDOW_S of a longer run."""
    if window is None and sim_time_s > DEFAULT_WINDOW_S:
        return 0.0, DEFAULT_WINDOW_S
    return window


def write_trace(run, path: str | Path, window: tuple[float, float] | None = None, warn=None) -> Path:
    """Write trace.json (compact JSON) atomically; returns its path. `warn(line)` hears about a
    trace above WARN_BYTES (default: printed to stderr)."""
    import sys

    from simserve.export import atomic_write_text

    path = Path(path)
    text = json.dumps(trace_document(run, window), separators=(",", ":"), default=_json_default)
    atomic_write_text(path, text)
    if len(text) > WARN_BYTES:
        line = (f"simserve: warning: {path} is {len(text) / 1e6:.0f} MB; Perfetto is slow above "
                f"{WARN_BYTES / 1e6:.0f} MB: narrow it with --trace-window START:END (or simserve trace --window)")
        (warn or (lambda msg: print(msg, file=sys.stderr)))(line)
    return path


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# -- CLI: simserve trace -----------------------------------------------------------------------
def cmd_trace(args) -> int:
    from simserve.plots import RunData

    window = parse_window(args.window)
    run = RunData.from_dir(args.dir)
    if run.timeline is None:
        raise SimserveError(f"{args.dir}: no timeline.csv.gz (re-run with this simserve version)")
    path = write_trace(run, Path(args.out) if args.out else Path(args.dir) / "trace.json", window)
    print(path)
    return 0


def add_parser(sub) -> None:
    trace = sub.add_parser("trace", help="write trace.json (Perfetto / chrome://tracing) from a results folder")
    trace.add_argument("dir", metavar="RESULTS_DIR")
    trace.add_argument("--window", metavar="START:END", help="simulated seconds to keep, e.g. 10:20")
    trace.add_argument("--out", help="output file (default: RESULTS_DIR/trace.json)")
    trace.set_defaults(func=cmd_trace)
