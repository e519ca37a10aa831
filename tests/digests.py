"""Digests of what simserve outputs for the example configs and a few layouts the examples miss.

The digest of a run hashes requests (every column, 17 significant digits), the summary (wall-clock
fields removed) and the timeline. `tests/test_digests.py` pins them, so a change that moves any
number anywhere is deliberate: after such a change, regenerate with

    python -m tests.digests --update

and say in the commit why the numbers moved. A pure restructuring must leave them alone.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import simserve
from simserve.simulation import simulate

EXAMPLES_DIR = Path(simserve.__file__).parent / "examples"
DIGESTS = Path(__file__).parent / "data" / "digests.json"
WALL_CLOCK = {"wall_time_s"}
REQUESTS = 120          # enough for queueing, chunking and preemption on every example; seconds to run

# layouts the examples do not cover: played pipelines with TP (sends share NVSwitch ports with the
# all-reduces), DP replicas on a mesh, MoE with attention TP groups, latent attention, other policies
EXTRA = {
    "tp2pp2dp2-dgx": ["model=llama-3.1-8b", "cluster.topology=dgx-h100", "parallelism.tp=2",
                      "parallelism.pp=2", "parallelism.dp=2"],
    "pp4-mesh": ["model=llama-3.1-70b", "cluster.hardware=mi300x", "cluster.topology=mi300x-mesh",
                 "parallelism.pp=4", "parallelism.tp=2"],
    "vllm-policy": ["scheduler.policy=vllm", "parallelism.tp=2", "cluster.topology=dgx-h100"],
    "orca-policy": ["scheduler.policy=orca"],
    "mixtral-tp2ep4": ["model=mixtral-8x7b", "cluster.topology=dgx-h100", "parallelism.tp=2",
                       "parallelism.ep=4", "moe.routing=zipf"],
    "deepseek-ep8": ["model=deepseek-v3", "cluster.topology=dgx-h100", "precision.weights=fp8",
                     "precision.kv=fp8", "parallelism.ep=8", "parallelism.tp=1"],
}


def cases() -> dict[str, tuple[str | None, list[str]]]:
    out = {}
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        out[path.stem] = (str(path), [])
    for name, overrides in EXTRA.items():
        out[name] = (None, overrides)
    return out


def digest(config, overrides, fidelity: str) -> str:
    res = simulate(config, overrides=[*overrides, f"workload.num_requests={REQUESTS}", f"fidelity={fidelity}"])
    h = hashlib.sha256()
    h.update(res.requests.to_csv(index=False, float_format="%.17g").encode())
    summary = {k: v for k, v in res.summary.items() if k not in WALL_CLOCK}
    h.update(json.dumps(summary, sort_keys=True, default=repr).encode())
    if res.timeline is not None:
        h.update(res.timeline.to_csv(index=False, float_format="%.17g").encode())
    return h.hexdigest()


def compute_all() -> dict[str, str]:
    return {f"{name}/{fid}": digest(cfg, ov, fid)
            for name, (cfg, ov) in cases().items() for fid in ("fast", "exact")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite tests/data/digests.json")
    args = parser.parse_args()
    found = compute_all()
    if args.update:
        DIGESTS.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    known = json.loads(DIGESTS.read_text()) if DIGESTS.exists() else {}
    for key, value in found.items():
        print(f"{key:40s} {'same' if known.get(key) == value else 'CHANGED'}")


if __name__ == "__main__":
    main()
