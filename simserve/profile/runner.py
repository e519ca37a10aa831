"""Measure every table into a profile folder (needs PyTorch and a GPU): `simserve profile --out DIR`."""
from __future__ import annotations

import csv
import json
import subprocess
import time
from pathlib import Path

import torch

from simserve.profile import kernels, layers, optables

LAYER_FIELDS = ["model", "tp", "phase", "batch", "seq", "ctx", "time_us"]
STATE = ["sm_clock_mhz", "power_w"]
TABLES = {   # name: (columns, writer); the order is the order they are measured in
    "layers": (LAYER_FIELDS, layers.layer_rows),
    "layers_fp8": (LAYER_FIELDS, lambda w: layers.layer_rows(w, fp8=True)),
    "attn_prefill": (["batch", "seq", "nq", "nkv", "d", "time_us"], optables.attn_prefill_rows),
    "attn_decode": (["batch", "ctx", "nq", "nkv", "d", "splits", "time_us"], optables.attn_decode_rows),
    "elementwise": (["op", "tokens", "width", "bytes", "time_us"], optables.elementwise_rows),
    "stream": (["bytes", "time_us"], optables.stream_rows),
    "gemm": (["dtype", "op", "m", "k", "n", "time_us"], optables.gemm_rows),
    "gemm_data": (["dtype", "op", "m", "k", "n", "data", "mode", "time_us"] + STATE, optables.gemm_data_rows),
    "breakdown": (["case", "dtype", "context", "op", "kernel", "calls", "time_us"] + STATE, layers.breakdown_rows),
}
EXTRA = {    # measured only when named: a second layer run (noise), and fp8 layers with the first
    # H100 profile's compiled quantisation kernel (to show what that kernel cost)
    "layers_repeat": (LAYER_FIELDS, layers.layer_rows),
    "layers_fp8_compiled_quant": (LAYER_FIELDS, lambda w: layers.layer_rows(
        w, fp8=True, quantize=kernels.quantize_fp8_compiled)),
}


def _driver() -> str:
    for cmd in (["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                ["rocm-smi", "--showdriverversion"]):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - the driver version is informative only
            continue
    return ""


def meta() -> dict:
    props = torch.cuda.get_device_properties(0)
    return dict(gpu=props.name, sms=props.multi_processor_count,
                memory_bytes=int(props.total_memory), l2_bytes=int(getattr(props, "L2_cache_size", 0)),
                driver=_driver(), torch=torch.__version__, cuda=torch.version.cuda, hip=torch.version.hip,
                date=time.strftime("%Y-%m-%d"), fused_elementwise=kernels.FUSED, attn_prefill_timing="graph",
                fp8_quantize="vLLM-like: inf-norm reduction, then fused scale-and-cast")


def measure(out: Path, only: list[str] | None = None) -> list[str]:
    """Write meta.json and each table (all, or `only`) into `out`; returns the tables written."""
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    info = meta()
    (out / "meta.json").write_text(json.dumps(info, indent=1) + "\n")
    print(info, flush=True)
    written = []
    chosen = [(n, t) for n, t in {**TABLES, **EXTRA}.items() if n in only] if only else list(TABLES.items())
    for name, (fields, fn) in sorted(chosen, key=lambda nt: only.index(nt[0]) if only else 0):
        t0 = time.time()
        try:
            with open(out / f"{name}.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", restval="")
                w.writeheader()
                fn(w)
            written.append(name)
        except Exception as exc:  # noqa: BLE001 - one table failing must not lose the others
            print(f"{name}: FAILED {exc.__class__.__name__}: {exc}", flush=True)
        print(f"{name}: {time.time() - t0:.1f}s", flush=True)
        torch.cuda.empty_cache()
    return written


if __name__ == "__main__":
    import sys
    measure(Path(sys.argv[1]), sys.argv[2].split(",") if len(sys.argv) > 2 else None)
