"""Moved into the package: `simserve profile --out DIR` (simserve/profile/).

This script measured the first H100 profile (simserve/catalog/profiles/h100-sxm, 2026-11-25); the
same measurements, plus elementwise kernels, a stream table, the fp8 data/power table and a
per-kernel breakdown, now run as a package command on any CUDA or ROCm GPU:

    pip install 'simserve[profile]'
    simserve profile --out my-gpu/             # measure (about 3 minutes on an H200)
    simserve profile --check my-gpu/           # re-fit and print the held-out error, no GPU

Kept so old instructions still work: `python experiments/profile_h100.py OUT_DIR [TABLE,...]`.
"""
import sys

from simserve.cli import main

if __name__ == "__main__":
    args = ["profile", "--out", sys.argv[1] if len(sys.argv) > 1 else "profile_out"]
    if len(sys.argv) > 2:
        args += ["--tables", sys.argv[2]]
    sys.exit(main(args))
