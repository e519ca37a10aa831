"""Trace file formats: detection and row-by-row parsing, streamed.

Each parser is a generator of `Row`s read with the csv module or by line, so a trace of tens of
millions of rows (the Azure 2024 week-long files) never sits in memory as text or as a DataFrame;
`simserve.workload.trace` packs the rows into typed arrays as they come.

Every row is validated where it is read, and the first bad one raises a `WorkloadError` naming the
file, the line (1-based, counted in the decompressed text, header included) and the reason, e.g.
`AzureLLMInferenceTrace_conv.csv: line 17: GeneratedTokens is -3, must be a positive integer`.
The file is named without its `.gz` because the line number counts lines of the decompressed text.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, NamedTuple, Optional, Sequence

from simserve.errors import WorkloadError

# Mooncake's hash_ids name prefix blocks of this many tokens (Mooncake FAST25-release README).
MOONCAKE_BLOCK_TOKENS = 512

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type")
VIDUR_COLUMNS = ("num_prefill_tokens", "num_decode_tokens")
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")
TIME_UNIT_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


class Row(NamedTuple):
    """One request as read (a NamedTuple: ~3x cheaper to build than a frozen dataclass per row)."""
    line: int
    arrival_s: Optional[float]        # seconds on the trace's own clock (not yet re-based)
    isl: int
    osl: int
    hash_ids: Optional[tuple[int, ...]] = None


@dataclass(frozen=True)
class Columns:
    """Where a generic file keeps its fields (the config's `columns`, or a known format's)."""
    isl: str
    osl: str
    arrival: Optional[str] = None
    time_unit: str = "s"
    hash_ids: Optional[str] = None


class Skip(Exception):
    """A row that is valid data but not a request to replay (a BurstGPT failure, a filtered row)."""


def display_name(path: Path) -> str:
    return path.name[:-3] if path.name.endswith(".gz") else path.name


def open_text(path: Path):
    """The file as text, decompressing `.gz` on the fly (by magic number, not only by name)."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")   # -sig: Excel's byte-order mark is not a column name


# ---------------------------------------------------------------- field parsing
def positive_int(value, column: str, where: str) -> int:
    """A token count: a positive integer (an integral float such as `12.0` is accepted)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise WorkloadError(f"{where}: {column} is {value!r}, not an integer")   # JSON 10.5: no silent cut
    try:
        number = int(value)
    except (TypeError, ValueError):
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise WorkloadError(f"{where}: {column} is {value!r}, not an integer") from None
        if not (math.isfinite(as_float) and as_float.is_integer()):
            raise WorkloadError(f"{where}: {column} is {value!r}, not an integer") from None
        number = int(as_float)
    if number < 1:
        raise WorkloadError(f"{where}: {column} is {number}, must be a positive integer")
    return number


def seconds(value, column: str, unit: str, where: str) -> float:
    """A timestamp in seconds: a number in `unit`, or an ISO date-time when unit is `datetime`."""
    if unit == "datetime":
        return datetime_s(value, column, where)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise WorkloadError(f"{where}: {column} is {value!r}, not a number") from None
    if not math.isfinite(number) or isinstance(value, bool):
        raise WorkloadError(f"{where}: {column} is {value!r}, not a finite number")
    return number * TIME_UNIT_S[unit]


_minute_epoch_cache: dict[str, float] = {}


def datetime_s(value, column: str, where: str) -> float:
    """Seconds since the epoch of an ISO date-time such as Azure's `2023-11-16 18:15:46.6805900`.

    Fast path: the `YYYY-MM-DD HH:MM` prefix is converted once per minute and the seconds field
    added as a float, ~5x faster than `datetime.fromisoformat` per row, which matters for the
    27-million-row Azure 2024 files. Naive stamps are taken as UTC (only differences matter).
    Anything else (a time zone, a `T`, 7 fractional digits) goes through the slow path.
    """
    text = str(value).strip()
    if text.endswith(("+00:00", "Z")):      # UTC, as the Azure 2024 files write it
        text = text[:-6] if text[-1] == "0" else text[:-1]
    if len(text) >= 19 and text[16] == ":" and text[4] == "-" and text[13] == ":":
        tail = text[17:]
        if tail.replace(".", "", 1).isdigit():
            base = _minute_epoch_cache.get(text[:16])
            if base is None:
                base = _slow_datetime_s(text[:16], column, where)
                if len(_minute_epoch_cache) > 100_000:
                    _minute_epoch_cache.clear()
                _minute_epoch_cache[text[:16]] = base
            second = float(tail)
            if second < 61:
                return base + second
    return _slow_datetime_s(text, column, where)


def _slow_datetime_s(text: str, column: str, where: str) -> float:
    cleaned = text.replace("Z", "+00:00")
    # Python's fromisoformat before 3.11 accepts at most 6 fractional digits; Azure writes 7.
    if "." in cleaned:
        head, frac = cleaned.split(".", 1)
        digits = len(frac) - len(frac.lstrip("0123456789"))
        cleaned = head + "." + frac[:min(digits, 6)] + frac[digits:]
    try:
        stamp = datetime.fromisoformat(cleaned)
    except ValueError:
        raise WorkloadError(f"{where}: {column} is {text!r}, not a date-time") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def hash_list(value, column: str, where: str) -> tuple[int, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise WorkloadError(f"{where}: {column} is {value!r}, not a list of integers") from None
    if not isinstance(value, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in value):
        raise WorkloadError(f"{where}: {column} is {value!r}, not a list of integers")
    return tuple(value)


# ---------------------------------------------------------------- detection
def detect_format(path: Path, has_columns: bool) -> str:
    """The format of a trace from its extension, header or first record.

    `.jsonl`/`.json` (and a first character `{`) is Mooncake when its first record has Mooncake's
    keys, else generic JSONL. A CSV is Azure, BurstGPT or Vidur by its header columns, else
    generic CSV (which needs `columns`). Explicit `columns` always mean the generic reader.
    """
    name = display_name(path).lower()
    with open_text(path) as f:
        first = ""
        for line in f:
            if line.strip():
                first = line.strip()
                break
    if not first:
        raise WorkloadError(f"{display_name(path)}: empty file")
    is_json = name.endswith((".jsonl", ".json", ".ndjson")) or first.startswith("{")
    if has_columns:
        return "jsonl" if is_json else "csv"
    if is_json:
        try:
            record = json.loads(first)
        except ValueError:
            return "jsonl"
        return "mooncake" if isinstance(record, dict) and all(k in record for k in MOONCAKE_KEYS) else "jsonl"
    header = {h.strip() for h in next(csv.reader([first]))}
    if set(AZURE_COLUMNS) <= header:
        return "azure"
    if {"Timestamp", "Request tokens", "Response tokens"} <= header:
        return "burstgpt"
    if set(VIDUR_COLUMNS) <= header:
        return "vidur"
    return "csv"


# ---------------------------------------------------------------- CSV formats
def _header_index(header: Sequence[str], wanted: Sequence[Optional[str]], name: str, fmt: str) -> list:
    cols = {h.strip(): i for i, h in enumerate(header)}
    missing = [w for w in wanted if w is not None and w not in cols]
    if missing:
        raise WorkloadError(f"{name}: line 1: {fmt} header lacks column(s) {', '.join(missing)} "
                            f"(found: {', '.join(h.strip() for h in header)})")
    return [None if w is None else cols[w] for w in wanted]


def _match(value: str, allowed: Optional[set[str]]) -> bool:
    return allowed is None or value.strip().lower() in allowed


def read_csv(path: Path, columns: Columns, fmt: str, filters: Optional[dict[str, set[str]]] = None,
             skip_failed: bool = False) -> Iterator[Row]:
    """Rows of a CSV trace whose fields are named by `columns` (plus filter columns).

    `filters` maps a column to the allowed lower-case values; non-matching rows are skipped.
    With `skip_failed` (BurstGPT), a row whose output is 0 tokens is a failed request: it raises
    `Skip` to the caller's counter instead of an error. Negative counts are always errors.
    """
    name = display_name(path)
    filters = filters or {}
    with open_text(path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        while header is not None and not any(h.strip() for h in header):
            header = next(reader, None)
        if header is None:
            raise WorkloadError(f"{name}: empty file")
        filter_cols = list(filters)
        t_i, i_i, o_i, *f_idx = _header_index(
            header, [columns.arrival, columns.isl, columns.osl, *filter_cols], name, fmt)
        allowed = [filters[c] for c in filter_cols]
        width = len(header)
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            where = f"{name}: line {line}"
            if len(row) != width:
                raise WorkloadError(f"{where}: {len(row)} fields, expected {width} as in the header")
            if f_idx and not all(_match(row[i], a) for i, a in zip(f_idx, allowed)):
                yield Skip("filtered", line)
                continue
            if skip_failed and row[o_i].strip() in ("0", "0.0"):
                yield Skip("failed", line)
                continue
            arrival = None if t_i is None else seconds(row[t_i], columns.arrival, columns.time_unit, where)
            yield Row(line, arrival, positive_int(row[i_i], columns.isl, where),
                      positive_int(row[o_i], columns.osl, where))


def read_jsonl(path: Path, columns: Columns) -> Iterator[Row]:
    """Rows of a JSON Lines trace; one object per line, blank lines ignored."""
    name = display_name(path)
    seen_any = False
    with open_text(path) as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            seen_any = True
            where = f"{name}: line {line}"
            try:
                record = json.loads(text)
            except ValueError as exc:
                raise WorkloadError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise WorkloadError(f"{where}: a record must be a JSON object")
            wanted = [c for c in (columns.arrival, columns.isl, columns.osl) if c is not None]
            missing = [c for c in wanted if c not in record]
            if missing:
                raise WorkloadError(f"{where}: missing key(s) {', '.join(missing)}")
            arrival = (None if columns.arrival is None
                       else seconds(record[columns.arrival], columns.arrival, columns.time_unit, where))
            hashes = None
            if columns.hash_ids is not None and columns.hash_ids in record:
                hashes = hash_list(record[columns.hash_ids], columns.hash_ids, where)
            yield Row(line, arrival, positive_int(record[columns.isl], columns.isl, where),
                      positive_int(record[columns.osl], columns.osl, where), hashes)
    if not seen_any:
        raise WorkloadError(f"{name}: empty file")


AZURE = Columns(isl="ContextTokens", osl="GeneratedTokens", arrival="TIMESTAMP", time_unit="datetime")
BURSTGPT = Columns(isl="Request tokens", osl="Response tokens", arrival="Timestamp", time_unit="s")
MOONCAKE = Columns(isl="input_length", osl="output_length", arrival="timestamp", time_unit="ms",
                   hash_ids="hash_ids")


def vidur_columns(path: Path) -> Columns:
    """Vidur length files; the `arrived_at` column (seconds) of its processed traces is used if present."""
    with open_text(path) as f:
        header = next(csv.reader(f), [])
    arrival = "arrived_at" if "arrived_at" in {h.strip() for h in header} else None
    return Columns(isl="num_prefill_tokens", osl="num_decode_tokens", arrival=arrival, time_unit="s")
