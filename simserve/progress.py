"""A progress bar for long simulations: requests done, simulated time, wall time and ETA (rich).

It watches the SimPy environment from outside the simulation: `track` wraps the environment's
`step` on this one instance and, every `check_every` events, looks at the wall clock and redraws
at most `refresh_s` apart. It schedules no SimPy event, so a run with the bar gives exactly the
same results and event count as one without (tests/test_report.py checks it).

How the simulation uses it (one `with` around `env.run()` in `World.run`, simserve/world.py):

    from simserve import progress
    with progress.track(env, total=len(book), done=lambda: book.recorded, enabled=show_progress):
        env.run()

`enabled=None` shows the bar only when stdout is a terminal; the CLI passes False for --quiet.
Where no bar is shown and `LINES_EVERY_S` is set (the CLI sets it), a run that lasts longer than
that gets a plain line on stderr every `LINES_EVERY_S` seconds of wall time instead, so a long
`exact` run under --quiet or in a log file does not look hung. The library default is silence.
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable

LINES_EVERY_S: float | None = None     # plain progress lines when no bar is shown (the CLI: 10 s)


def should_show(enabled: bool | None = None, stream=None) -> bool:
    if enabled is not None:
        return bool(enabled)
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


class _Tracker:
    def __init__(self, env, total: int, done: Callable[[], int], horizon_s: float | None, refresh_s: float,
                 check_every: int, console=None):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.env = env
        self.total = max(int(total), 1)
        self.done = done
        self.horizon_s = horizon_s
        self.refresh_s = refresh_s
        self.check_every = check_every
        self.progress = Progress(
            TextColumn("[bold]simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("requests"),
            TextColumn("sim {task.fields[sim]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=True, auto_refresh=False)
        self.task = self.progress.add_task("simulate", total=self.total, sim="0.0 s")
        self._count = 0
        self._last = 0.0

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.refresh_s:
            return
        self._last = now
        sim = f"{self.env.now:,.1f} s" + (f" / {self.horizon_s:,.0f} s" if self.horizon_s else "")
        self.progress.update(self.task, completed=min(int(self.done()), self.total), sim=sim)
        self.progress.refresh()

    def wrap(self, step):
        check_every = self.check_every

        def step_and_report():
            step()
            self._count += 1
            if self._count >= check_every:
                self._count = 0
                self.update()
        return step_and_report


@contextlib.contextmanager
def track(env, *, total: int, done: Callable[[], int], horizon_s: float | None = None,
          enabled: bool | None = None, refresh_s: float = 0.2, check_every: int = 4096, console=None):
    """Show a progress bar while the body runs `env.run()`; see the module docstring.

    total: requests in the run; done(): requests finished or rejected so far; horizon_s: the
    last arrival time, if known, shown beside the simulated clock."""
    if not should_show(enabled, getattr(console, "file", None)):
        if LINES_EVERY_S is None:
            yield None
            return
        with _lines(env, total, done, horizon_s, LINES_EVERY_S, check_every) as reporter:
            yield reporter
        return
    tracker = _Tracker(env, total, done, horizon_s, refresh_s, check_every, console)
    had_own = "step" in vars(env)
    original = env.step
    env.step = tracker.wrap(original)
    tracker.progress.start()
    try:
        tracker.update(force=True)
        yield tracker
    finally:
        if had_own:
            env.step = original
        else:
            del env.step
        tracker.progress.stop()


@contextlib.contextmanager
def _lines(env, total: int, done: Callable[[], int], horizon_s: float | None, every_s: float, check_every: int):
    """One stderr line every `every_s` of wall time (first after `every_s`): requests done,
    simulated and wall time. Like the bar, it only reads the environment between events."""
    start = time.monotonic()
    state = {"next": start + every_s, "count": 0}
    had_own = "step" in vars(env)
    original = env.step

    def step_and_report():
        original()
        state["count"] += 1
        if state["count"] >= check_every:
            state["count"] = 0
            now = time.monotonic()
            if now >= state["next"]:
                state["next"] = now + every_s
                sim = f"{env.now:,.1f} s" + (f" of ~{horizon_s:,.0f} s" if horizon_s else "")
                print(f"simserve: simulating: {int(done()):,}/{int(total):,} requests, sim {sim}, "
                      f"wall {now - start:,.0f} s", file=sys.stderr, flush=True)
    env.step = step_and_report
    try:
        yield None
    finally:
        if had_own:
            env.step = original
        else:
            del env.step
