"""`simserve sweep SWEEP [--out DIR] [--workers N] [--ray ADDRESS]` (docs/architecture.md (contracts)).

A SWEEP file (YAML) names a base config and the points to run, as override sets:

```yaml
base: llama70b-tp4pp2-mi325x.yaml      # a config file (relative to the sweep file) or an inline mapping
grid:                                  # cartesian product of the value lists, in key order
  parallelism.tp: [1, 2, 4, 8]
  scheduler.batch_size: [1, 32]
points:                                # and/or an explicit list of override sets
  - {parallelism.tp: 4, parallelism.pp: 2}
set: {seed: 3}                         # optional: overrides applied to every point
```

With both `grid` and `points`, every point is combined with every grid combination. Each point is
one `simulate(base, overrides=[...])`. As a point finishes, its row is appended to
`DIR/results.csv` (and flushed): the override columns, `status` (`ok`, or `error` with the
one-line reason, e.g. a layout that does not fit), and summary metrics. Re-running the same sweep
skips every point already in `results.csv` with status `ok` or `error` (both are deterministic
outcomes); a point whose worker died or crashed for another reason is recorded as `failed`, the
sweep goes on, and the next run re-runs it, replacing its row (one row per point). A sweep holds a
lock on its folder: a second sweep into it refuses with one line. `simserve sweep` exits 1 when a
point failed.

Points run in local worker processes (`--workers`, default: the CPU count; simserve.pool: workers
exit within a second of their parent, however it dies) or, with `--ray ADDRESS`, as Ray tasks
(`local`: a private instance for this sweep; the `ray` package must be installed).

Decisions: the point key is the canonical JSON of its override set; `goodput_per_gpu` is goodput
(requests/s meeting the SLO) divided by the number of GPUs; shares are `time_breakdown` fractions
of all GPUs' simulated time.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from simserve.errors import ConfigError, SimserveError

METRICS = (   # simserve.metrics.flat_summary's names (summary.json flattened), then per-GPU figures
    "num_gpus", "num_requests", "num_completed", "num_rejected",
    *(f"{k}_{s}_s" for k in ("ttft", "tpot", "itl", "e2e") for s in ("mean", "p50", "p90", "p99")),
    "throughput_output_tokens_per_s", "throughput_input_tokens_per_s", "throughput_total_tokens_per_s",
    "throughput_requests_per_s", "goodput_requests_per_s",
    "goodput_requests_per_s_per_gpu", "throughput_output_tokens_per_s_per_gpu",
    *(f"time_breakdown_{k}" for k in ("compute", "allreduce", "alltoall", "p2p", "bubble", "idle")),
    "sim_time_s", "wall_time_s",
)
SWEEP_KEYS = ("base", "grid", "points", "set")


# -- the sweep file ------------------------------------------------------------------------------

def _format_value(value: Any) -> str:
    """An override value as the YAML text `apply_overrides` parses back to the same value."""
    if isinstance(value, str):
        return value
    return json.dumps(value)       # JSON is YAML: numbers, booleans, null, lists, mappings


def point_key(overrides: Mapping[str, Any]) -> str:
    return json.dumps({k: overrides[k] for k in sorted(overrides)}, sort_keys=True, default=str)


def load_sweep(source: str | Path | Mapping[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """(base config as path or dict, list of override sets). Raises ConfigError with one line."""
    from simserve.config import load_yaml_text

    where = Path(".")
    name = "sweep"
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        path = Path(source)
        name, where = str(path), path.parent
        try:
            raw = load_yaml_text(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        except FileNotFoundError:
            raise ConfigError(f"sweep file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"sweep path is a directory: {path}") from None
        except Exception as exc:  # noqa: BLE001 -- any YAML error becomes one line
            raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: a sweep must be a mapping with base and grid and/or points")
    unknown = sorted(set(raw) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"{name}: unknown sweep key(s) {', '.join(map(repr, unknown))} "
                          f"(allowed: {', '.join(SWEEP_KEYS)})")
    if "grid" not in raw and "points" not in raw:
        raise ConfigError(f"{name}: a sweep needs a grid and/or a list of points")

    base = raw.get("base")
    if isinstance(base, str):
        base_path = Path(base)
        if not base_path.is_absolute() and (where / base_path).exists():
            base_path = where / base_path
        base = str(base_path)
    elif base is not None and not isinstance(base, dict):
        raise ConfigError(f"{name}: base must be a config file path or a mapping, got {type(base).__name__}")

    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"{name}: grid must map override keys to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{name}: grid.{key} must be a non-empty list of values, got {values!r}")
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [{}]

    points = raw.get("points")
    if points is None:
        points = [{}]
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise ConfigError(f"{name}: points must be a list of mappings of override key to value")
    common = raw.get("set") or {}
    if not isinstance(common, dict):
        raise ConfigError(f"{name}: set must map override keys to values")

    out, seen = [], set()
    for point in points:
        for combo in combos:
            overrides = {**common, **point, **combo}
            key = point_key(overrides)
            if key not in seen:
                seen.add(key)
                out.append(overrides)
    return base, out


def override_list(overrides: Mapping[str, Any]) -> list[str]:
    return [f"{k}={_format_value(v)}" for k, v in overrides.items()]


def validate_points(base, points: Iterable[Mapping[str, Any]]) -> None:
    """Load every point's config before anything runs, so a bad key fails at once, with one line."""
    from simserve.config import load_config

    for overrides in points:
        try:
            load_config(base, override_list(overrides))
        except SimserveError as exc:
            raise ConfigError(f"sweep point {point_key(overrides)}: {exc}") from None


# -- one point -----------------------------------------------------------------------------------

def summary_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    from simserve.metrics import flat_summary

    flat = flat_summary(dict(summary))
    gpus = int(summary.get("num_gpus") or 1)
    flat["num_gpus"] = gpus
    flat["goodput_requests_per_s_per_gpu"] = summary["goodput_requests_per_s"] / gpus
    flat["throughput_output_tokens_per_s_per_gpu"] = summary["throughput_output_tokens_per_s"] / gpus
    return {k: flat.get(k, 0.0) for k in METRICS}


def run_point(base, overrides: Mapping[str, Any], measure=None) -> dict[str, Any]:
    """Simulate one point; returns {"status", "error", metrics...}. Never raises for bad input.
    `measure(config, overrides) -> metrics` replaces the simulation and its summary row (the
    planner's probes, which may end a run early: simserve/plan/stop.py)."""
    from simserve.simulation import simulate

    start = time.perf_counter()
    try:
        if measure is not None:
            return {"status": "ok", "error": "", **measure(base, override_list(overrides))}
        result = simulate(base, overrides=override_list(overrides))
    except SimserveError as exc:
        return {"status": "error", "error": str(exc), "wall_time_s": time.perf_counter() - start}
    except Exception as exc:  # noqa: BLE001 -- recorded, re-run next time
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                "wall_time_s": time.perf_counter() - start}
    return {"status": "ok", "error": "", **summary_row(result.summary)}


# -- results.csv ---------------------------------------------------------------------------------

def _columns(keys: list[str]) -> list[str]:
    return ["point", *keys, "status", "error", *METRICS]


def finished_points(csv_path: Path) -> tuple[set[str], list[str] | None]:
    """Keys of points already recorded as ok or error, and the file's header (None: no file)."""
    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return set(), None
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        done = {row["point"] for row in reader if row.get("status") in ("ok", "error")}
    return done, header


def _drop_rows(csv_path: Path, points: set[str]) -> None:
    """Rewrite results.csv (atomically) without the rows of these points: a point about to be
    re-run loses its `failed` row, so the rerun leaves exactly one row per point."""
    from simserve.export import atomic_write_text

    if not points or not csv_path.exists():
        return
    with csv_path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return
    col = rows[0].index("point") if "point" in rows[0] else 0
    kept = [rows[0]] + [r for r in rows[1:] if r and r[col] not in points]
    if len(kept) == len(rows):
        return
    buf = io.StringIO()
    csv.writer(buf).writerows(kept)
    atomic_write_text(csv_path, buf.getvalue())


class FolderLock:
    """An exclusive lock on a sweep folder (flock on DIR/.sweep.lock): a second sweep into the same
    folder refuses at once. The kernel drops the lock when its holder exits, however it exits."""

    def __init__(self, folder: Path):
        import fcntl

        folder.mkdir(parents=True, exist_ok=True)
        self.fh = (folder / ".sweep.lock").open("a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "?"
            self.fh.close()
            raise ConfigError(f"another sweep (pid {holder}) is writing into {folder}; wait for it to finish "
                              f"or choose another --out") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(str(os.getpid()))
        self.fh.flush()

    def release(self) -> None:
        self.fh.close()


class _Writer:
    def __init__(self, csv_path: Path, columns: list[str], header: list[str] | None):
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = csv_path.open("a", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=columns, extrasaction="ignore")
        if header is None:
            self.writer.writeheader()
            self.fh.flush()

    def write(self, overrides: Mapping[str, Any], outcome: Mapping[str, Any]) -> None:
        row = {"point": point_key(overrides),
               **{k: _format_value(v) if isinstance(v, (list, dict)) else v for k, v in overrides.items()},
               **outcome}
        self.writer.writerow(row)
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


# -- running -------------------------------------------------------------------------------------

def run_sweep(sweep: str | Path | Mapping[str, Any], out_dir: str | Path, workers: int | None = None,
              ray_address: str | None = None,
              on_point: Callable[[dict, dict], None] | None = None):
    """Run every unfinished point; append rows to out_dir/results.csv as they finish.
    Returns the whole results.csv as a pandas DataFrame."""
    import pandas as pd

    base, points = load_sweep(sweep)
    validate_points(base, points)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {workers})")
    keys = sorted({k for p in points for k in p})
    csv_path = Path(out_dir) / "results.csv"
    _, header = finished_points(csv_path)
    if header is not None and header != _columns(keys):
        raise ConfigError(f"{csv_path} holds another sweep's results (its columns differ); use another --out")
    lock = FolderLock(Path(out_dir))
    try:
        done, header = finished_points(csv_path)        # again, under the lock
        todo = [p for p in points if point_key(p) not in done]
        _drop_rows(csv_path, {point_key(p) for p in todo})
        writer = _Writer(csv_path, _columns(keys), header)

        def record(overrides, outcome):
            writer.write(overrides, outcome)
            if on_point:
                on_point(overrides, outcome)

        try:
            _run_points(base, todo, workers, ray_address, record)
        finally:
            writer.close()
    finally:
        lock.release()
    return pd.read_csv(csv_path)


def _run_points(base, todo, workers, ray_address, record) -> None:
    from functools import partial

    from simserve.pool import run_points   # noqa: I001

    if ray_address is not None:
        from simserve.pool import run_ray
        run_ray(partial(run_point, base), todo, ray_address, workers, record)
        return
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(todo) <= 1:
        for overrides in todo:
            record(overrides, run_point(base, overrides))
        return
    run_points(partial(run_point, base), todo, workers, record)


# -- the latency-throughput figure of a sweep folder (`simserve plot DIR`) -------------------------

LOAD_KNOBS = ("workload.", "seed", "slo.")     # overrides that move a point along a curve, not to another one


def figure_table(df):
    """results.csv as `plots.sweep_figure` reads it: ok rows, a `layout` label made of the
    overrides that are not load knobs (one curve per layout), metric columns as written."""
    cols = list(df.columns)
    overrides = cols[cols.index("point") + 1:cols.index("status")] if "point" in cols and "status" in cols else []
    layout_keys = [k for k in overrides if not k.startswith(LOAD_KNOBS)]
    ok = df[df.status == "ok"].copy()
    if ok.empty:
        raise ConfigError("the sweep has no finished (ok) points to draw")
    ok["layout"] = ok.apply(lambda r: " ".join(f"{k.split('.')[-1]}={r[k]}" for k in layout_keys) or "all",
                            axis=1) if layout_keys else "all"
    return ok


FIGURE_COLUMNS = {"layout": "layout", "throughput": "throughput_output_tokens_per_s", "latency": "e2e_p99_s",
                  "goodput": "goodput_requests_per_s", "num_gpus": "num_gpus",
                  "latency_label": "E2E latency p99 (s)", "throughput_label": "output tokens/s"}


# -- CLI -----------------------------------------------------------------------------------------

def cmd_sweep(args) -> int:
    from simserve.export import check_writable_dir

    out = Path(args.out) if args.out else Path("results") / Path(args.sweep).stem
    _, points = load_sweep(args.sweep)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {args.workers})")
    check_writable_dir(out)
    done, _ = finished_points(out / "results.csv")
    todo = sum(point_key(p) not in done for p in points)
    if not args.quiet:
        print(f"{len(points)} points, {len(points) - todo} already in {out / 'results.csv'}, running {todo}")
    counter = {"n": 0}

    def progress(overrides, outcome):
        counter["n"] += 1
        if args.quiet:
            return
        what = ", ".join(f"{k}={_format_value(v)}" for k, v in overrides.items()) or "(base)"
        tail = (f"ttft_p50_s {outcome['ttft_p50_s']:.3g}, throughput_output_tokens_per_s "
                f"{outcome['throughput_output_tokens_per_s']:.1f}"
                if outcome["status"] == "ok" else f"{outcome['status']}: {outcome['error']}")
        print(f"[{counter['n']}/{todo}] {what}: {tail}", flush=True)

    df = run_sweep(args.sweep, out, workers=args.workers, ray_address=args.ray, on_point=progress)
    failed = int((df.status == "failed").sum())
    if failed:
        print(f"simserve sweep: {failed} point(s) failed (worker died or internal error); re-run the same "
              f"command to retry them", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="run a grid or list of config overrides; one CSV row per point")
    p.add_argument("sweep", help="sweep YAML: base, grid and/or points, set")
    p.add_argument("--out", help="results folder (default: results/SWEEP_NAME); results.csv inside")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: CPU count)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run points as Ray tasks on this cluster (auto, ray://host:port, or local: a private instance)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_sweep)
