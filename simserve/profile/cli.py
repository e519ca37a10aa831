"""`simserve profile`: measure this machine's GPU into a profile folder, or re-fit one (--check)."""
from __future__ import annotations

from pathlib import Path

from simserve.errors import SimserveError


def _measure(out: Path, tables: list[str] | None) -> None:
    try:
        import torch
    except ImportError:
        raise SimserveError("simserve profile needs PyTorch: pip install 'simserve[profile]'") from None
    if not torch.cuda.is_available():
        raise SimserveError("simserve profile: no CUDA or ROCm GPU visible to PyTorch "
                            "(use --check DIR to re-fit a measured profile without one)")
    from simserve.profile.runner import EXTRA, TABLES, measure
    unknown = [t for t in tables or [] if t not in TABLES and t not in EXTRA]
    if unknown:
        raise SimserveError(f"--tables: unknown table {unknown[0]!r}; known: {', '.join([*TABLES, *EXTRA])}")
    measure(out, tables)


def cmd_profile(args) -> int:
    from simserve.profile.check import report
    if args.check:
        report(Path(args.check), args.hardware)
        return 0
    if not args.out:
        raise SimserveError("simserve profile: give --out DIR (measure) or --check DIR (re-fit)")
    out = Path(args.out)
    _measure(out, args.tables.split(",") if args.tables else None)
    if not args.tables:
        report(out, args.hardware)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("profile", help="measure this GPU's operator and layer tables and fit the cost model "
                                       "(needs PyTorch and a GPU); --check DIR re-fits without one")
    p.add_argument("--out", help="profile folder to write (CSV tables + meta.json)")
    p.add_argument("--check", metavar="DIR", help="re-fit a profile folder and print its held-out error")
    p.add_argument("--tables", help="measure only these tables (comma-separated)")
    p.add_argument("--hardware", help="catalog entry (or YAML card) with this GPU's peaks "
                                      "(default: matched from meta.json's GPU name)")
    p.set_defaults(func=cmd_profile)
