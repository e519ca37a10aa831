"""Digests of what simserve outputs for the example configs and a few layouts the examples miss.

The digest of a run hashes requests (every column, 12 significant digits; `--digits 17` for every bit), the summary (wall-clock
fields removed) and the timeline. `tests/test_digests.py` pins them, so a change that moves any
number anywhere is deliberate: after such a change, regenerate with

    python -m tests.digests --update

and say in the commit why the numbers moved. A pure restructuring must leave them alone.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import simserve
from simserve.simulation import simulate

EXAMPLES_DIR = Path(simserve.__file__).parent / "examples"
DIGESTS = Path(__file__).parent / "data" / "digests.json"
WALL_CLOCK = {"wall_time_s"}
REQUESTS = {"fast": 40, "exact": 6}   # queueing and chunking in fast; exact plays every collective of every
                                      # layer (the 405B TP16 example: seconds per request), so fewer

# layouts the examples do not cover: played pipelines with TP (sends share NVSwitch ports with the
# all-reduces), DP replicas on a mesh, MoE with attention TP groups, other policies
EXTRA = {
    "tp2pp2dp2-dgx": ["model=llama-3.1-8b", "cluster.topology=dgx-h100", "parallelism.tp=2",
                      "parallelism.pp=2", "parallelism.dp=2"],
    "pp4-mesh": ["model=llama-3.1-70b", "cluster.hardware=mi300x", "cluster.topology=mi300x-mesh",
                 "parallelism.pp=4", "parallelism.tp=2"],
    "vllm-policy": ["scheduler.policy=vllm", "parallelism.tp=2", "cluster.topology=dgx-h100"],
    "orca-policy": ["scheduler.policy=orca"],
    "mixtral-tp2ep4": ["model=mixtral-8x7b", "cluster.topology=dgx-h100", "parallelism.tp=2",
                       "parallelism.ep=4", "moe.routing=zipf"],
}


def cases() -> dict[str, tuple[str | None, list[str]]]:
    out = {}
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        out[path.stem] = (str(path), [])
    for name, overrides in EXTRA.items():
        out[name] = (None, overrides)
    return out


def _rounded(value, digits: int):
    if isinstance(value, dict):
        return {str(k): _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    if isinstance(value, float) or hasattr(value, "dtype"):
        return float(f"{float(value):.{digits}g}")
    return value


def digest(config, overrides, fidelity: str, digits: int = 12) -> str:
    """sha256 of requests, summary (less wall-clock fields) and timeline at `digits` significant digits."""
    res = simulate(config, overrides=[*overrides, f"workload.num_requests={REQUESTS[fidelity]}", f"fidelity={fidelity}"])
    fmt = f"%.{digits}g"
    h = hashlib.sha256()
    h.update(res.requests.to_csv(index=False, float_format=fmt).encode())
    summary = {k: v for k, v in res.summary.items() if k not in WALL_CLOCK}
    h.update(json.dumps(_rounded(summary, digits), sort_keys=True, default=repr).encode())
    if res.timeline is not None:
        h.update(res.timeline.to_csv(index=False, float_format=fmt).encode())
    return h.hexdigest()


# exact plays every collective of every layer: Llama-3.1-405B's 126 layers x 2 all-reduces over 16 or 8
# GPUs make minutes of CPU per run; their fast digests cover them (fast == exact is tested elsewhere)
FAST_ONLY = {"llama405b-tp16-2node", "static-batch-mi355x"}


def compute_all(verbose: bool = False, digits: int = 12) -> dict[str, str]:
    out = {}
    for name, (cfg, ov) in cases().items():
        for fid in ("fast",) if name in FAST_ONLY else ("fast", "exact"):
            t0 = time.process_time()
            out[f"{name}/{fid}"] = digest(cfg, ov, fid, digits)
            if verbose:
                print(f"{name}/{fid}: {time.process_time() - t0:.1f} s CPU", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite tests/data/digests.json")
    parser.add_argument("--digits", type=int, default=12, help="significant digits hashed (17: every bit)")
    parser.add_argument("--file", type=Path, default=DIGESTS)
    args = parser.parse_args()
    found = compute_all(verbose=True, digits=args.digits)
    known = json.loads(args.file.read_text()) if args.file.exists() else {}   # before any rewrite
    for key, value in found.items():
        state = "same" if known.get(key) == value else ("new" if key not in known else "CHANGED")
        print(f"{key:40s} {state}")
    for key in sorted(set(known) - set(found)):
        print(f"{key:40s} gone")
    if args.update:
        tmp = args.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        tmp.replace(args.file)


if __name__ == "__main__":
    main()
