"""Running a plan's probes: local worker processes or Ray tasks, resumable, with a progress bar.

Each probe is one `simserve.sweep.run_point(config, {})` (the sweep runner's engine: one
simulation, its summary as a table row, bad input recorded as status `error`, a crash as
`failed`); a probe given the SLO ends its run once it is decided to fail (simserve.plan.stop).
As a probe finishes its row is appended to `DIR/probes.csv` and flushed; its key is a hash of the
probe's whole config (rate included) and of the SLO it may stop at, so re-running a plan after a kill replays
every rate search from the file and simulates only the probes not yet in it. Rows with status
`failed` are not reused (they are re-run).

The driver keeps one probe in flight per layout still searching (a search's next rate depends on
its last outcome), so up to `workers` layouts search at once.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable

from simserve.errors import ConfigError
from simserve.sweep import METRICS, run_point

PROBE_COLUMNS = ["key", "model", "hardware", "layout", "tp", "pp", "dp", "ep", "chunk_size",
                 "max_batch_size", "rate_index", "rate", "meets_slo", "violations", "status", "error", *METRICS,
                 "cpu_s", "stopped_s"]


def probe(config: dict, stop: dict | None = None) -> dict:
    """One probe in a worker: sweep.run_point plus the CPU seconds it took (time.process_time);
    with `stop` (SLO limits) the run ends once it is decided to break one (simserve.plan.stop)."""
    from simserve.plan.stop import measure

    start = time.process_time()
    outcome = run_point(config, {}, measure(stop) if stop else None)
    return {**outcome, "cpu_s": time.process_time() - start}


def probe_key(config: dict, stop: dict | None = None) -> str:
    """The probe's identity: its config, and the SLO it may stop at (a stopped probe is not a full one)."""
    what = config if stop is None else {"config": config, "stop_at": stop}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]


class ProbeStore:
    """probes.csv: every finished probe, appended as it finishes."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict] = {}
        if path.exists() and path.stat().st_size:
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames != PROBE_COLUMNS:
                    raise ConfigError(f"{path} was written by another simserve version (its columns differ); "
                                      f"use another --out")
                for row in reader:
                    if row["status"] in ("ok", "error"):
                        self.rows[row["key"]] = _typed(row)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        self.fh = path.open("a", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=PROBE_COLUMNS, extrasaction="ignore")
        if new:
            self.writer.writeheader()
            self.fh.flush()
        self.reused = 0

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def add(self, row: dict) -> None:
        self.writer.writerow(row)
        self.fh.flush()
        os.fsync(self.fh.fileno())
        if row["status"] in ("ok", "error"):
            self.rows[row["key"]] = row

    def close(self) -> None:
        self.fh.close()


def _typed(row: dict) -> dict:
    out = dict(row)
    for k in METRICS + ("rate", "cpu_s", "stopped_s"):
        if out.get(k) not in (None, ""):
            out[k] = float(out[k])
    return out


class LocalPool:
    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self.pool = ProcessPoolExecutor(max_workers=self.workers) if self.workers > 1 else None
        self.pending: dict = {}
        self.done: list = []

    def submit(self, tag, config: dict, stop: dict | None = None) -> None:
        if self.pool is None:
            self.done.append((tag, probe(config, stop)))
        else:
            self.pending[self.pool.submit(probe, config, stop)] = tag

    def next_done(self):
        if self.done:
            return self.done.pop(0)
        finished, _ = wait(self.pending, return_when=FIRST_COMPLETED)
        fut = min(finished, key=lambda f: self.pending[f])        # deterministic among ties
        return self.pending.pop(fut), fut.result()

    def busy(self) -> bool:
        return bool(self.pending or self.done)

    def capacity(self) -> int:
        return self.workers - len(self.pending) - len(self.done)

    def close(self) -> None:
        if self.pool is not None:
            if self.pending:      # interrupted: stop the probes in flight (a resume re-runs them)
                for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
                    proc.terminate()
            self.pool.shutdown(wait=False, cancel_futures=True)


class RayPool(LocalPool):
    """The same interface on a Ray cluster (`ray.init(address)`); one task per probe."""

    def __init__(self, address: str, workers: int | None):
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs the ray package (pip install 'ray[default]'); "
                              "or run locally with --workers N") from None
        self.ray = ray
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        self.remote = ray.remote(probe)
        self.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.pending, self.done, self.pool = {}, [], None

    def submit(self, tag, config: dict, stop: dict | None = None) -> None:
        self.pending[self.remote.remote(config, stop)] = tag

    def next_done(self):
        ready, _ = self.ray.wait(list(self.pending), num_returns=1)
        ref = ready[0]
        return self.pending.pop(ref), self.ray.get(ref)

    def close(self) -> None:
        pass


def drive(searches: list, pool, store: ProbeStore, make_row: Callable, on_probe: Callable | None = None) -> None:
    """Run every search to its verdict. `searches[i]` has `next_probe()` -> (k, config, stop, key)
    or None when it is done, and `record(k, key, row)`; make_row(i, k, key, config, outcome) -> the
    probes.csv row."""
    in_flight: set[int] = set()

    def feed(i, k, key, config, outcome, cached):
        row = outcome if cached else make_row(i, k, key, config, outcome)
        if not cached:
            store.add(row)
        searches[i].record(k, key, row)
        if on_probe:
            on_probe(i, row, cached)

    while True:
        progressed = True
        while progressed:            # replay cached probes and fill free workers, in layout order
            progressed = False
            for i, s in enumerate(searches):
                if i in in_flight or (nxt := s.next_probe()) is None:
                    continue
                k, config, stop, key = nxt
                cached = store.get(key)
                if cached is not None:
                    store.reused += 1
                    feed(i, k, key, config, cached, True)
                elif pool.capacity() > 0:
                    pool.submit((i, k, key), config, stop)
                    in_flight.add(i)
                else:
                    continue
                progressed = True
        if not pool.busy():
            return
        (i, k, key), outcome = pool.next_done()
        in_flight.discard(i)
        feed(i, k, key, searches[i].probe_config(k), outcome, False)
