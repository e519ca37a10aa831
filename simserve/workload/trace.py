"""Load a trace file into arrays: resolve its path, pick its reader, validate order.

Rows stream from `readers` into `array.array`s (8 bytes per number, no Python object per row
kept), so a 27-million-row trace costs ~0.6 GB, not the ~10 GB a list of tuples would.
"""
from __future__ import annotations

import gzip
import warnings
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from simserve.errors import ConfigError, WorkloadError
from simserve.workload import readers
from simserve.workload.readers import Columns, Row, Skip

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "workloads"


class WorkloadWarning(UserWarning):
    """Something in a trace was fixed up (sorted, truncated, rows skipped); the run goes on."""


@dataclass(frozen=True)
class TraceData:
    """A trace as read: arrival_s is on the trace's clock re-based to 0, or None if it has no times."""
    name: str
    fmt: str
    arrival_s: Optional[np.ndarray]
    isl: np.ndarray
    osl: np.ndarray
    prefix_hashes: Optional[tuple[tuple[int, ...], ...]] = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.isl)


def bundled_files() -> list[str]:
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if p.name.endswith((".gz", ".csv", ".jsonl")))


def resolve_trace(path: str | Path) -> Path:
    """A path as given, else a bundled trace of that file name (also as `workloads/NAME`, or without `.gz`)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        raise WorkloadError(f"trace path is a directory: {path}")
    for candidate in (BUNDLED_DIR / p.name, BUNDLED_DIR / (p.name + ".gz")):
        if candidate.is_file():
            return candidate
    raise WorkloadError(f"trace not found: {path} (bundled traces: {', '.join(bundled_files())})")


def _filters(fmt: str, model, log_type) -> dict[str, set[str]]:
    wanted = {"Model": model, "Log Type": log_type}
    wanted = {col: ({v.lower() for v in ([val] if isinstance(val, str) else val)}) for col, val in wanted.items()
              if val is not None}
    if wanted and fmt != "burstgpt":
        raise ConfigError(f"workload.filters (model, log_type) apply to BurstGPT traces, not to {fmt} files")
    return wanted


def _rows(path: Path, fmt: str, columns: Optional[Columns], filters: dict[str, set[str]]):
    if fmt == "azure":
        return readers.read_csv(path, readers.AZURE, fmt)
    if fmt == "burstgpt":
        return readers.read_csv(path, readers.BURSTGPT, fmt, filters, skip_failed=True)
    if fmt == "vidur":
        return readers.read_csv(path, readers.vidur_columns(path), fmt)
    if fmt == "mooncake":
        return readers.read_jsonl(path, readers.MOONCAKE)
    if columns is None:
        raise ConfigError(f"{readers.display_name(path)}: a generic {fmt} trace needs workload.columns "
                          f"(isl, osl, and arrival if it has times) naming its fields")
    return readers.read_jsonl(path, columns) if fmt == "jsonl" else readers.read_csv(path, columns, fmt)


def load_trace(trace: str | Path, fmt: str = "auto", columns: Optional[Columns] = None,
               model=None, log_type=None, strict: bool = False,
               max_rows: Optional[int] = None) -> TraceData:
    """`_read_trace`, with unreadable bytes (not UTF-8, a broken or truncated gzip stream) reported
    as one line naming the file instead of a decoder's traceback."""
    try:
        return _read_trace(trace, fmt, columns, model, log_type, strict, max_rows)
    except UnicodeDecodeError as exc:
        raise WorkloadError(f"{Path(str(trace)).name}: not UTF-8 text (byte {exc.start} of the decoded stream: "
                            f"{exc.reason}); traces are UTF-8 CSV or JSON lines, optionally gzipped") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise WorkloadError(f"{Path(str(trace)).name}: not a readable gzip file ({exc or type(exc).__name__}); "
                            f"truncated or not gzip") from None
    except IsADirectoryError:
        raise WorkloadError(f"{trace}: is a directory, not a trace file") from None


def _read_trace(trace, fmt, columns, model, log_type, strict, max_rows) -> TraceData:
    """Read, validate and time-sort a trace.

    `max_rows` stops reading after that many kept rows (file order): used when a run asks for
    the first N requests of a huge trace, so it need not read the rest. Unsorted timestamps are
    sorted (stable) with a `WorkloadWarning`, or refused with the first offending line under
    `strict`. BurstGPT rows with 0 response tokens are failed requests: skipped with a note, or
    refused under `strict`.
    """
    path = resolve_trace(trace)
    name = readers.display_name(path)
    if fmt == "auto":
        fmt = readers.detect_format(path, columns is not None)
    filters = _filters(fmt, model, log_type)
    times, isl, osl, lines = array("d"), array("q"), array("q"), array("q")
    hashes: list[tuple[int, ...]] = []
    skipped = {"filtered": 0, "failed": 0}
    has_time: Optional[bool] = None
    for row in _rows(path, fmt, columns, filters):
        if isinstance(row, Skip):
            reason, line = row.args
            if reason == "failed" and strict:
                raise WorkloadError(f"{name}: line {line}: a request with 0 response tokens (a failed request; "
                                    "strict refuses it, without strict such rows are skipped)")
            skipped[reason] += 1
            continue
        row: Row
        if has_time is None:
            has_time = row.arrival_s is not None
        if has_time:
            times.append(row.arrival_s)
        isl.append(row.isl)
        osl.append(row.osl)
        lines.append(row.line)
        if row.hash_ids is not None:
            hashes.append(row.hash_ids)
        if max_rows is not None and len(isl) >= max_rows:
            break
    notes = []
    if skipped["failed"]:
        notes.append(f"skipped {skipped['failed']} failed requests (0 response tokens)")
    if not isl:
        if skipped["filtered"]:
            raise WorkloadError(f"{name}: no rows match the filters {dict((k, sorted(v)) for k, v in filters.items())}")
        raise WorkloadError(f"{name}: no requests (header only)")
    if skipped["filtered"]:
        notes.append(f"kept {len(isl)} rows matching the filters, skipped {skipped['filtered']}")
    arrival = np.frombuffer(times, dtype=np.float64).copy() if has_time else None
    isl_a = np.frombuffer(isl, dtype=np.int64).copy()
    osl_a = np.frombuffer(osl, dtype=np.int64).copy()
    prefix = tuple(hashes) if len(hashes) == len(isl_a) else None
    if arrival is not None:
        arrival, isl_a, osl_a, prefix = _time_sorted(name, arrival, isl_a, osl_a, prefix,
                                                     np.frombuffer(lines, dtype=np.int64), strict, notes)
        arrival = arrival - arrival[0]
    for note in notes:
        warnings.warn(f"{name}: {note}", WorkloadWarning, stacklevel=2)
    return TraceData(name, fmt, arrival, isl_a, osl_a, prefix, tuple(notes))


def _time_sorted(name, arrival, isl, osl, prefix, lines, strict, notes):
    drops = np.flatnonzero(np.diff(arrival) < 0)
    if drops.size == 0:
        return arrival, isl, osl, prefix
    i = int(drops[0]) + 1
    if strict:
        raise WorkloadError(f"{name}: line {lines[i]}: timestamp goes back in time ({arrival[i]:.6f} s after "
                            f"{arrival[i - 1]:.6f} s on line {lines[i - 1]}); strict refuses unsorted traces")
    notes.append(f"timestamps not sorted ({drops.size} step(s) back, first at line {lines[i]}); sorted by time")
    order = np.argsort(arrival, kind="stable")
    if prefix is not None:
        prefix = tuple(prefix[j] for j in order)
    return arrival[order], isl[order], osl[order], prefix
