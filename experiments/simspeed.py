"""Simulator speed benchmark: simulated requests and events per wall-clock second.

Runs the bundled default (Llama-3.1-8B on one H100, the one-hour Azure conversation trace) and
variants given with --set, each once per repetition, and prints wall time, requests/s and
events/s. Speed is measured here, never in a timed test.

    python experiments/simspeed.py [--repeat 3] [--set parallelism.tp=8 ...]
"""
from __future__ import annotations

import argparse
import statistics

from simserve.simulation import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    walls, summary = [], {}
    for _ in range(args.repeat):
        summary = simulate(args.config, overrides=args.set).summary
        walls.append(summary["wall_time_s"])
    wall = statistics.median(walls)
    print(f"config: {args.config or 'bundled default'} {' '.join(args.set)}")
    print(f"requests {summary['num_requests']}, iterations {summary['iterations']}, events {summary['events']}, "
          f"simulated {summary['sim_time_s']:.0f} s")
    print(f"wall {wall:.2f} s (median of {len(walls)}): {summary['num_requests'] / wall:,.0f} requests/s, "
          f"{summary['events'] / wall:,.0f} events/s, {summary['iterations'] / wall:,.0f} iterations/s")


if __name__ == "__main__":
    main()
