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


# -- checking where results go, before any simulation runs ----------------------------------------

def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _unwritable(path: Path) -> str | None:
    """Why no folder can be created or written at `path` (None: it can). Probes by making and
    removing a temporary folder in the nearest existing ancestor: nothing is left behind."""
    if path.exists() and not path.is_dir():
        return "is a file, not a folder"
    base = _nearest_existing(path)
    if not base.is_dir():
        return f"{base} is a file, so no folder can be made under it"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".simserve-probe-", dir=base))
    except OSError as exc:
        return f"cannot write there ({exc.strerror or exc})"
    return None


def check_writable_dir(path: str | Path, what: str = "--out") -> None:
    """Raise ConfigError (one line) unless results can be written into the folder `path`."""
    from simserve.errors import ConfigError

    why = _unwritable(Path(path))
    if why:
        raise ConfigError(f"{what} {path}: {why}")


def check_writable_file(path: str | Path, what: str) -> None:
    """The same for a file: not a folder, and its folder writable."""
    from simserve.errors import ConfigError

    path = Path(path)
    why = "is a folder, not a file" if path.is_dir() else _unwritable(Path(os.path.abspath(path)).parent)
    if why:
        raise ConfigError(f"{what} {path}: {why}")


def check_out_dir(path: str | Path, force: bool) -> None:
    """`run --out`: writable, and empty unless --force (which clears it when results are written)."""
    from simserve.errors import ConfigError

    path = Path(path)
    check_writable_dir(path)
    if path.is_dir() and any(path.iterdir()) and not force:
        held = ", ".join(sorted(p.name for p in path.iterdir())[:3])
        raise ConfigError(f"--out {path} is not empty ({held}{', ...' if len(list(path.iterdir())) > 3 else ''}); "
                          f"pass --force to replace its contents, or choose another --out")


def clear_dir(path: str | Path) -> None:
    """Empty a results folder (for --force), keeping the folder itself."""
    import shutil

    path = Path(path)
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def write_vllm(result, path: str | Path) -> Path:
    """vLLM benchmark_serving's result fields (simserve.metrics.vllm_benchmark) as JSON."""
    from simserve.metrics import vllm_benchmark

    gaps = result.itl_gaps if result.itl_gaps is not None else []
    atomic_write_json(path, vllm_benchmark(result.requests, gaps, result.summary))
    return Path(path)


def write_parquet(result, out_dir: str | Path) -> dict[str, Path]:
    """requests.parquet and timeline.parquet (pyarrow), beside the CSV files."""
    import io

    out = Path(out_dir)
    paths = {}
    for name, frame in (("requests", result.requests), ("timeline", getattr(result, "timeline", None))):
        if frame is None:
            continue
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        paths[name] = out / f"{name}.parquet"
        atomic_write_bytes(paths[name], buf.getvalue())
    return paths
