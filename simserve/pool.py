"""Running sweep points in worker processes that die with their parent.

Each worker slot is a one-process `concurrent.futures.ProcessPoolExecutor` (spawned, so no state
is inherited) whose initializer starts a parent-death watch: a thread that exits the worker within
`WATCH_S` of its parent vanishing, even in the middle of a point. One process per slot pins a
crash to its point: when a worker dies (killed, out of memory), only its pool breaks, that point
is recorded as `failed` and the slot gets a fresh process; the other points go on.

`run_points(fn, items, workers, on_done)` calls `on_done(item, outcome)` in the parent as each
finishes, in completion order; `fn(item)` must return a picklable outcome and never raise for
bad input (sweep.run_point does so).
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable

WATCH_S = 0.5      # how often a worker checks that its parent is alive


def _watch_parent(parent_pid: int) -> None:
    """Worker initializer: exit at once when the parent is gone (reparented: getppid changes)."""
    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(WATCH_S)
    threading.Thread(target=watch, name="simserve-parent-watch", daemon=True).start()


def _slot() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_watch_parent, initargs=(os.getpid(),))


def worker_died(item: Any, exc: BaseException) -> dict:
    return {"status": "failed", "error": f"worker process died ({type(exc).__name__}); re-run to retry",
            "wall_time_s": float("nan")}


def run_points(fn: Callable[[Any], dict], items: Iterable[Any], workers: int,
               on_done: Callable[[Any, dict], None]) -> None:
    queue = list(items)
    queue.reverse()
    slots = [_slot() for _ in range(min(workers, len(queue)))]
    running: dict = {}                  # future -> (slot index, item)
    try:
        for i, pool in enumerate(slots):
            item = queue.pop()
            running[pool.submit(fn, item)] = (i, item)
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                i, item = running.pop(fut)
                try:
                    outcome = fut.result()
                except BrokenProcessPool as exc:     # this slot's worker died: that point failed
                    outcome = worker_died(item, exc)
                    slots[i].shutdown(wait=False, cancel_futures=True)
                    slots[i] = _slot()
                on_done(item, outcome)
                if queue:
                    nxt = queue.pop()
                    running[slots[i].submit(fn, nxt)] = (i, nxt)
    finally:                            # normally idle by now; on Ctrl-C or an error, stop the workers too
        for pool in slots:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)


def run_ray(fn: Callable[[Any], dict], items: list, address: str, workers: int | None,
            on_done: Callable[[Any, dict], None]) -> None:
    """The same with Ray tasks (no retries: a task whose worker dies is a failed point). `local`
    starts a private Ray instance with `workers` CPUs (default: the CPU count) for this call."""
    from simserve.errors import ConfigError

    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the ray package (pip install 'simserve[ray]'); "
                          "or run locally with --workers N") from None
    started = address == "local"
    try:
        if started:
            ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"--ray {address}: cannot connect ({str(exc).splitlines()[0]}); start a cluster "
                          f"with `ray start --head`, or use --ray local") from None
    try:
        remote = ray.remote(max_retries=0)(_call)
        pending = {remote.remote(fn, item): item for item in items}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                item = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 -- a crashed worker or node: that point failed
                    outcome = {"status": "failed", "error": f"Ray task died ({type(exc).__name__})"}
                on_done(item, outcome)
    finally:
        if started:
            ray.shutdown()


def _call(fn, item):
    return fn(item)
