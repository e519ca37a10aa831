"""Simulator speed benchmark: CPU time, wall time, peak memory, events and iterations of a run.

Runs the bundled default (Llama-3.1-8B on one H100, the one-hour Azure conversation trace) and
variants given with --set, each once per repetition, and prints per run (median of the
repetitions):
- CPU s: time.process_time() around the whole `simulate` call (this process's user + system CPU;
  the figure to compare on a shared machine, where wall time depends on other load);
- wall s: time.perf_counter() around the same call, and the summary's own `wall_time_s`;
- peak RSS: the process's resident-set high-water mark after the runs (resource.getrusage;
  it includes the interpreter and imports, ~150 MB here, and never goes down between runs);
- events (SimPy events scheduled) and iterations (engine steps), and the rates per CPU second.
Speed is measured here, never in a timed test.

    python experiments/simspeed.py [--repeat 3] [--set parallelism.tp=8 ...]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

from simserve.simulation import simulate


def peak_rss_mb() -> float:
    """The process's peak resident set in MB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def measure(config, overrides, repeat: int) -> dict:
    cpus, walls, inner, summary = [], [], [], {}
    for _ in range(repeat):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        summary = simulate(config, overrides=overrides).summary
        cpus.append(time.process_time() - cpu0)
        walls.append(time.perf_counter() - wall0)
        inner.append(summary["wall_time_s"])
    return {"cpu_s": statistics.median(cpus), "wall_s": statistics.median(walls),
            "summary_wall_s": statistics.median(inner), "peak_rss_mb": peak_rss_mb(),
            "requests": summary["num_requests"], "events": summary["events"],
            "iterations": summary["iterations"], "sim_time_s": summary["sim_time_s"], "runs": repeat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    m = measure(args.config, args.set, args.repeat)
    cpu = max(m["cpu_s"], 1e-9)
    print(f"config: {args.config or 'bundled default'} {' '.join(args.set)}")
    print(f"requests {m['requests']}, iterations {m['iterations']}, events {m['events']}, "
          f"simulated {m['sim_time_s']:.0f} s")
    print(f"CPU {m['cpu_s']:.2f} s, wall {m['wall_s']:.2f} s (summary wall_time_s {m['summary_wall_s']:.2f} s), "
          f"median of {m['runs']}; peak RSS {m['peak_rss_mb']:.0f} MB")
    print(f"per CPU second: {m['requests'] / cpu:,.0f} requests, {m['events'] / cpu:,.0f} events, "
          f"{m['iterations'] / cpu:,.0f} iterations")


if __name__ == "__main__":
    main()
