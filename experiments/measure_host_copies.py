"""Measure GPU <-> pinned host memory copies as a KV swap issues them (issue 13, swap preemption).

vLLM's swap (V0 `CacheEngine.swap_in/swap_out` -> `ops.swap_blocks`, csrc/cache_kernels.cu) copies
a preempted sequence's KV block by block: one `cudaMemcpyAsync` per block per layer for K and for V,
between the GPU cache and a pinned CPU cache. Its cost is therefore a per-copy overhead plus the
bytes over PCIe. This script times runs of `copies` back-to-back async copies of `nbytes` each
(pinned memory, one stream, CUDA events), in both directions, over the block sizes serving engines
use, plus large copies for the link's bandwidth, issued two ways: `torch` (a Python loop of
`Tensor.copy_(non_blocking=True)`) and `native` (a C++ loop of cudaMemcpyAsync, as vLLM's
swap_blocks issues them; compiled with torch.utils.cpp_extension where a toolchain exists). Output:
CSV rows `issuer, direction, nbytes, copies, total_s, per_copy_s, GBps` and a meta.json (GPU,
driver, torch, CUDA).

    python experiments/measure_host_copies.py --out DIR      # on a machine with a CUDA GPU and PyTorch

`simserve/catalog/profiles/<gpu>/host_copies.csv` holds the committed measurement;
`simserve.cost.swap.fit_host_copies` fits it (overhead and bandwidth per direction, one third of the
sizes held out).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
from pathlib import Path

SIZES = [4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20]
TOTAL_BYTES = 512 << 20      # each run moves about this much (at least 8, at most 4096 copies)


def time_run(torch, src, dst, nbytes: int, copies: int, repeats: int = 5) -> float:
    """Median seconds of `copies` async copies of nbytes each, src slices -> dst slices."""
    stream = torch.cuda.Stream()
    times = []
    for _ in range(repeats + 1):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        with torch.cuda.stream(stream):
            start.record(stream)
            for i in range(copies):
                off = (i * nbytes) % (src.numel() - nbytes + 1)
                dst[off:off + nbytes].copy_(src[off:off + nbytes], non_blocking=True)
            end.record(stream)
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    times = sorted(times[1:])                 # the first run warms up
    return times[len(times) // 2]


CPP = r"""
#include <torch/extension.h>
#include <cuda_runtime.h>
// vLLM's swap_blocks (csrc/cache_kernels.cu): one cudaMemcpyAsync per block, issued from C++
double copy_loop(torch::Tensor src, torch::Tensor dst, int64_t nbytes, int64_t copies) {
  auto kind = src.is_cuda() ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice;
  char* s = (char*)src.data_ptr(); char* d = (char*)dst.data_ptr();
  int64_t span = src.numel() - nbytes + 1;
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  cudaStream_t st; cudaStreamCreate(&st);
  cudaEventRecord(a, st);
  for (int64_t i = 0; i < copies; ++i) { int64_t off = (i * nbytes) % span;
    cudaMemcpyAsync(d + off, s + off, nbytes, kind, st); }
  cudaEventRecord(b, st); cudaEventSynchronize(b);
  float ms = 0; cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a); cudaEventDestroy(b); cudaStreamDestroy(st);
  return ms * 1e-3;
}
"""


def native_loop(torch):
    """copy_loop compiled from C++ (as vLLM issues its swap copies), or None where no compiler is."""
    try:
        from torch.utils.cpp_extension import load_inline
        return load_inline("host_copy_loop", cpp_sources=CPP, functions=["copy_loop"], with_cuda=True,
                           verbose=False).copy_loop
    except Exception as exc:       # no toolchain on this machine: the torch loop only
        print(f"native loop unavailable: {exc}", flush=True)
        return None


def time_native(loop, src, dst, nbytes: int, copies: int, repeats: int = 5) -> float:
    times = sorted(loop(src, dst, nbytes, copies) for _ in range(repeats + 1))[1:]
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("measure_host_copies: no CUDA GPU visible")
    args.out.mkdir(parents=True, exist_ok=True)
    buf = TOTAL_BYTES + (256 << 20)
    host = torch.empty(buf, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(buf, dtype=torch.uint8, device="cuda")
    rows = []
    loop = native_loop(torch)
    for nbytes in SIZES:
        copies = max(8, min(4096, TOTAL_BYTES // nbytes))
        for direction, src, dst in (("h2d", host, dev), ("d2h", dev, host)):
            timed = [("torch", time_run(torch, src, dst, nbytes, copies))]
            if loop is not None:
                timed.append(("native", time_native(loop, src, dst, nbytes, copies)))
            for issuer, total in timed:
                rows.append({"issuer": issuer, "direction": direction, "nbytes": nbytes, "copies": copies,
                             "total_s": total, "per_copy_s": total / copies, "GBps": nbytes * copies / total / 1e9})
                print(rows[-1], flush=True)
    with open(args.out / "host_copies.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    meta = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
            "driver": _driver(), "host": platform.node(), "date": datetime.date.today().isoformat(),
            "what": "pinned host <-> device cudaMemcpyAsync runs, one stream (experiments/measure_host_copies.py)"}
    (args.out / "host_copies_meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _driver() -> str:
    import subprocess
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


if __name__ == "__main__":
    main()
