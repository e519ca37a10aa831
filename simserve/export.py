"""Writing results: every file lands whole or not at all (write to a temporary file, then rename)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644 & ~_umask())    # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=float) + "\n")


def write_results(result, out_dir: str | Path) -> dict[str, Path]:
    """summary.json, requests.csv, the resolved config.yaml and, when the result has one, the
    timeline (timeline.csv.gz, gzip without a timestamp so equal runs give equal bytes; `simserve
    plot` and `simserve report` redraw from it); returns the paths written."""
    import gzip

    import yaml
    out = Path(out_dir)
    paths = {"summary": out / "summary.json", "requests": out / "requests.csv", "config": out / "config.yaml"}
    atomic_write_text(paths["requests"], result.requests.to_csv(index=False, float_format="%.9g"))
    # --- timeline for plots and traces (issue 7) ---
    timeline = getattr(result, "timeline", None)
    if timeline is not None:
        paths["timeline"] = out / "timeline.csv.gz"
        csv = timeline.to_csv(index=False, float_format="%.17g").encode()
        atomic_write_bytes(paths["timeline"], gzip.compress(csv, compresslevel=6, mtime=0))
    # --- end timeline ---
    atomic_write_text(paths["config"], yaml.safe_dump(result.config.model_dump(mode="json"), sort_keys=False))
    atomic_write_json(paths["summary"], result.summary)
    return paths
