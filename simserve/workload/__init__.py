"""Workloads: request arrival times and input/output lengths, from traces or length profiles.

Public API:
- `WorkloadConfig` (the `workload:` config section), `build_workload(cfg, max_context, rng)`.
- `Workload`: the arrays the engine replays.
- `load_trace`, `describe` (statistics of a trace file or profile), `PROFILES`.
See docs/architecture.md (contracts) and `simserve/data/workloads/SOURCES.md` for the bundled data.
"""
from simserve.workload.build import build_workload
from simserve.workload.config import DEFAULT_TRACE, WorkloadConfig
from simserve.workload.profiles import PROFILES
from simserve.workload.trace import BUNDLED_DIR, WorkloadWarning, load_trace, resolve_trace
from simserve.workload.types import Workload

__all__ = ["BUNDLED_DIR", "DEFAULT_TRACE", "PROFILES", "Workload", "WorkloadConfig", "WorkloadWarning",
           "build_workload", "describe", "load_trace", "resolve_trace"]


def describe(source, fmt=None) -> dict:
    """Statistics of a trace file or a length profile; see `simserve.workload.stats.describe`."""
    from simserve.workload.stats import describe as _describe
    return _describe(source, fmt)
