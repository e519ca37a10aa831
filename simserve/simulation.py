"""simulate(config) -> Result: build the world, run it, measure it (docs/architecture.md)."""
from __future__ import annotations

from simserve.results import Result, summarize
from simserve.world import build_world

__all__ = ["Result", "simulate"]


def simulate(config=None, *, overrides=(), show_progress: bool | None = False) -> Result:
    """Run a config (path, dict or SimConfig; None: the bundled default). `show_progress`: a
    progress bar on the terminal (None: only when stdout is a terminal)."""
    return summarize(build_world(config, overrides).run(show_progress))
