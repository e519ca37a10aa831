"""Run every study: `python experiments/run_all.py [--smoke] [--out DIR]` (DIR/<study>/ each)."""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STUDIES = ("study1_parallelism_dense", "study2_comm_patterns", "study3_multinode_allreduce",
           "study4_scaling_knee", "study5_survey_techniques", "cp_longcontext", "study6_accuracy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    failed = []
    for study in STUDIES:
        start = time.perf_counter()
        cmd = [sys.executable, str(HERE / f"{study}.py"), "--out", str(args.out / study)] + (["--smoke"] if args.smoke else [])
        rc = subprocess.run(cmd).returncode
        print(f"{study}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - start:.0f} s", flush=True)
        if rc:
            failed.append(study)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
