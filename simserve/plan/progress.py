"""The plan's progress: layouts searched and probes run (rich bar on a terminal, one line per
finished layout otherwise)."""
from __future__ import annotations

import sys

from simserve.progress import should_show


class PlanProgress:
    def __init__(self, layouts: int, pruned: int, enabled: bool | None, log=None):
        self.layouts, self.pruned = layouts, pruned
        self.enabled = should_show(enabled)
        self.log = log if log is not None else (lambda text: print(text, file=sys.stderr, flush=True))
        self.done: set[int] = set()
        self.probes = self.reused = 0
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[note]}"), TimeElapsedColumn(), transient=False)
            self.bar.start()
            self.task = self.bar.add_task("layouts", total=max(self.layouts, 1), note=f"{self.pruned} pruned")
            self.ptask = self.bar.add_task("probes ", total=None, note="")
        elif self.log:
            self.log(f"plan: {self.layouts} layouts to search, {self.pruned} pruned before simulating")
        return self

    def probe(self, search, row, cached: bool) -> None:
        self.probes += 1
        self.reused += cached
        lay = search.candidate.layout
        finished = search.search.propose() is None and id(search) not in self.done
        if finished:
            self.done.add(id(search))
        if self.bar is not None:
            self.bar.update(self.ptask, completed=self.probes, note=f"{self.reused} reused | last: {lay.hardware} "
                            f"{lay.name} @ {row['rate']:.3g} req/s {'ok' if row['meets_slo'] else 'fails'}")
            self.bar.update(self.task, completed=len(self.done))
        elif self.log and finished:
            s = search.search
            verdict = (f"{s.grid.rate(s.lo):.4g} req/s" if s.lo is not None else
                       "bounded out" if s.verdict == "bounded" else "cannot meet the SLO")
            self.log(f"[{len(self.done)}/{self.layouts}] {lay.model} {lay.hardware} {lay.name}: {verdict} "
                     f"({len(s.ok)} probes)")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
