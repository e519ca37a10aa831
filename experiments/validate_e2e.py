"""End-to-end validation against published serving measurements (issue 13, part 6).

Each row below is one published measurement: model, GPU, engine and version, precision, TP,
workload (fixed ISL/OSL, all requests at once unless said otherwise), the metric and its value,
with its source. Every row is run through simserve with the matching runtime
(simserve/catalog/runtimes/*.yaml). Runtime host-time parameters are fitted on at most half of each
runtime's rows (the `fit` rows: every other row in table order); the error is reported separately
on the rows the fit never saw (`held_out`). The fit scales the sourced priors (`PRIORS`), never the
catalog's current values, so a refit after a model change does not compound earlier fits; the
catalog holds prior x fitted scale, which tests/test_validate_e2e.py checks against results.csv. Output: results.csv, findings.md and parity.png in
--out (default experiments/results/validate_e2e/).

Simulation sizes: the published runs use 1500-30000 requests; the simulation uses fewer
(`sim_requests`, at least ~3x the batch the KV cache admits) so that the run reaches the same
steady state; the throughput is total output tokens over the whole run, as trtllm-bench and
vLLM's benchmark_throughput report it.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from simserve.simulation import simulate  # noqa: E402

HERE = Path(__file__).resolve().parent

TRTLLM_OVERVIEW = ("NVIDIA TensorRT-LLM docs/source/performance/perf-overview.md (v1.0, PyTorch backend, "
                   "trtllm-bench throughput, ModelOpt FP8 checkpoints; github.com/NVIDIA/TensorRT-LLM commit "
                   "00f37686aa854010d68bcbd0f4ab000221541ca6): Total Output Throughput (tokens/sec)")
AMD_VLLM = ("AMD ROCm AI performance results, vLLM (rocm/vllm:rocm7.0.0_vllm_0.10.2_20251006, 8x MI300X, "
            "amd.com/en/developer/resources/rocm-hub/dev-ai/performance-results.html): throughput table, "
            "requests at an infinite rate, max-num-seqs = number of prompts; tokens/s as the table reports")
OCI_MI300X = ("Oracle Cloud blog 'Serving Llama 3.1 405B model with AMD MI300X GPUs' (2024, vLLM ROCm, "
              "BM.GPU.MI300X.8, amd/Llama-3.1-405B-Instruct-FP8-KV; blogs.oracle.com/cloud-infrastructure/"
              "serving-llama-31-405b-model-with-amd-mi300x-gpus): benchmark_latency.py / benchmark_throughput.py")


def row(id, source, runtime, model, hardware, tp, isl, osl, metric, value, sim_requests, *, engine_version,
        batch=None, max_batch_size=2048, policy="orca", kv="fp8", weights="fp8", max_batched_tokens=8192):
    return dict(id=id, source=source, runtime=runtime, engine_version=engine_version, model=model,
                hardware=hardware, weights=weights, kv=kv, tp=tp, isl=isl, osl=osl, metric=metric,
                measured=float(value), sim_requests=sim_requests, batch=batch, max_batch_size=max_batch_size,
                policy=policy, max_batched_tokens=max_batched_tokens)


T, A, O = TRTLLM_OVERVIEW, AMD_VLLM, OCI_MI300X
MEASUREMENTS = [
    # TensorRT-LLM v1.0, Llama-3.1-8B-Instruct-FP8, 1x H100 SXM (table "Llama 3.1 8B", column H100 TP1)
    row("trt-8b-h100-128-128", T, "trtllm", "llama-3.1-8b", "h100-sxm", 1, 128, 128, "output_tok_s", 28312, 8000, engine_version="1.0"),
    row("trt-8b-h100-128-2048", T, "trtllm", "llama-3.1-8b", "h100-sxm", 1, 128, 2048, "output_tok_s", 22714, 3000, engine_version="1.0"),
    row("trt-8b-h100-500-2000", T, "trtllm", "llama-3.1-8b", "h100-sxm", 1, 500, 2000, "output_tok_s", 17660, 3000, engine_version="1.0"),
    row("trt-8b-h100-1000-1000", T, "trtllm", "llama-3.1-8b", "h100-sxm", 1, 1000, 1000, "output_tok_s", 15220, 3000, engine_version="1.0"),
    row("trt-8b-h100-2048-128", T, "trtllm", "llama-3.1-8b", "h100-sxm", 1, 2048, 128, "output_tok_s", 3450, 3000, engine_version="1.0"),
    row("trt-8b-h100-2048-2048", T, "trtllm", "llama-3.1-8b", "h100-sxm", 1, 2048, 2048, "output_tok_s", 9305, 1500, engine_version="1.0"),
    row("trt-8b-h100-5000-500", T, "trtllm", "llama-3.1-8b", "h100-sxm", 1, 5000, 500, "output_tok_s", 3459, 1500, engine_version="1.0"),
    row("trt-8b-h200-1000-1000", T, "trtllm", "llama-3.1-8b", "h200", 1, 1000, 1000, "output_tok_s", 17744, 3000, engine_version="1.0"),
    # Llama-3.3-70B-Instruct-FP8 (same architecture as Llama 3.1 70B): H100 TP2 and H200 TP1 columns
    row("trt-70b-h100tp2-128-2048", T, "trtllm", "llama-3.1-70b", "h100-sxm", 2, 128, 2048, "output_tok_s", 6651, 3000, engine_version="1.0"),
    row("trt-70b-h100tp2-1000-1000", T, "trtllm", "llama-3.1-70b", "h100-sxm", 2, 1000, 1000, "output_tok_s", 4205, 3000, engine_version="1.0"),
    row("trt-70b-h100tp2-2048-128", T, "trtllm", "llama-3.1-70b", "h100-sxm", 2, 2048, 128, "output_tok_s", 762, 1500, engine_version="1.0"),
    row("trt-70b-h100tp2-5000-500", T, "trtllm", "llama-3.1-70b", "h100-sxm", 2, 5000, 500, "output_tok_s", 898, 1000, engine_version="1.0"),
    row("trt-70b-h200tp1-128-2048", T, "trtllm", "llama-3.1-70b", "h200", 1, 128, 2048, "output_tok_s", 4336, 3000, engine_version="1.0"),
    row("trt-70b-h200tp1-1000-1000", T, "trtllm", "llama-3.1-70b", "h200", 1, 1000, 1000, "output_tok_s", 2909, 3000, engine_version="1.0"),
    # Llama-3.1-405B-Instruct-FP8, 8x H100 TP8
    row("trt-405b-h100tp8-128-2048", T, "trtllm", "llama-3.1-405b", "h100-sxm", 8, 128, 2048, "output_tok_s", 4340, 1500, engine_version="1.0"),
    row("trt-405b-h100tp8-1000-1000", T, "trtllm", "llama-3.1-405b", "h100-sxm", 8, 1000, 1000, "output_tok_s", 2919, 1500, engine_version="1.0"),
    # vLLM 0.10.2 (V1 engine) on 8x MI300X, FP8 weights and KV (amd/*-FP8-KV), TP8
    row("amd-vllm-70b-mi300x-128-2048", A, "vllm-v1", "llama-3.1-70b", "mi300x", 8, 128, 2048, "output_tok_s", 13212.5, 3200,
        engine_version="0.10.2", max_batch_size=3200, policy="sarathi"),
    row("amd-vllm-70b-mi300x-500-2000", A, "vllm-v1", "llama-3.1-70b", "mi300x", 8, 500, 2000, "output_tok_s", 11376.7, 2000,
        engine_version="0.10.2", max_batch_size=2000, policy="sarathi"),
    row("amd-vllm-405b-mi300x-128-2048", A, "vllm-v1", "llama-3.1-405b", "mi300x", 8, 128, 2048, "output_tok_s", 4201.7, 1500,
        engine_version="0.10.2", max_batch_size=1500, policy="sarathi"),
    row("amd-vllm-405b-mi300x-500-2000", A, "vllm-v1", "llama-3.1-405b", "mi300x", 8, 500, 2000, "output_tok_s", 2992.0, 2000,
        engine_version="0.10.2", max_batch_size=2000, policy="sarathi"),
    # vLLM (V0 engine, ROCm build of 2024) Llama-3.1-405B FP8-KV on 8x MI300X TP8: static batches of
    # 128-in/128-out (benchmark_latency.py: output tokens/s) and one throughput run (benchmark_throughput.py)
    row("oci-vllm-405b-mi300x-bs1", O, "vllm-v0", "llama-3.1-405b", "mi300x", 8, 128, 128, "output_tok_s", 36, 1,
        engine_version="0.6 (ROCm)", batch=1, policy="static"),
    row("oci-vllm-405b-mi300x-bs32", O, "vllm-v0", "llama-3.1-405b", "mi300x", 8, 128, 128, "output_tok_s", 798, 32,
        engine_version="0.6 (ROCm)", batch=32, policy="static"),
    row("oci-vllm-405b-mi300x-bs256", O, "vllm-v0", "llama-3.1-405b", "mi300x", 8, 128, 128, "output_tok_s", 1846, 256,
        engine_version="0.6 (ROCm)", batch=256, policy="static"),
    row("oci-vllm-405b-mi300x-thr-128-128", O, "vllm-v0", "llama-3.1-405b", "mi300x", 8, 128, 128, "output_tok_s", 1993, 1000,
        engine_version="0.6 (ROCm)", max_batch_size=256, policy="vllm"),
]


def config(m: dict, runtime) -> dict:
    sched = {"policy": m["policy"], "max_batch_size": m["max_batch_size"], "max_batched_tokens": m["max_batched_tokens"]}
    if m["batch"]:
        sched.update(batch_size=m["batch"], max_batch_size=m["batch"])
    return {"model": m["model"], "cluster": {"hardware": m["hardware"]},
            "precision": {"weights": m["weights"], "kv": m["kv"], "activation_scale": "static"},
            "parallelism": {"tp": m["tp"]}, "scheduler": sched, "engine": {"runtime": runtime},
            "workload": {"lengths": {"isl": m["isl"], "osl": m["osl"]}, "arrivals": {"process": "batch"},
                         "num_requests": m["sim_requests"]}, "fidelity": "fast"}


def simulated(m: dict, runtime) -> float:
    s = simulate(config(m, runtime)).summary
    if m["metric"] == "output_tok_s":
        return float(s["throughput_output_tokens_per_s"])
    raise ValueError(m["metric"])


# Host-time priors (fixed s, per sampled sequence s, per scheduled token s) before any fit; each
# runtime YAML's `sources` cites where its prior comes from (host.fixed_s, host.per_seq_s, ...).
PRIORS = {
    "trtllm": (0.3e-3, 2.0e-6, 0.02e-6),    # an assumption (trtllm.yaml sources: host.prior), no public profile
    "vllm-v0": (1.5e-3, 20.0e-6, 0.1e-6),   # vLLM v0.6.0 blog (blog.vllm.ai/2024/09/05/perf-update.html)
    "vllm-v1": (0.5e-3, 4.0e-6, 0.05e-6),   # V1 engine core: ~8% of a 6.5 ms batch-1 decode step
}
FIXED_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
PER_SCALES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def prior_host(name: str, scale: tuple[float, float]) -> dict[str, float]:
    """The runtime's host costs at `scale` = (x fixed, x per-sequence and per-token) of its priors."""
    fixed, per_seq, per_token = PRIORS[name]
    return {"fixed_s": fixed * scale[0], "per_seq_s": per_seq * scale[1], "per_token_s": per_token * scale[1]}


def scaled_runtime(name: str, scale: tuple[float, float]) -> dict:
    """The catalog runtime with its host costs at `scale` of the priors (the two fitted knobs)."""
    return {"base": name, "name": f"{name}-x{scale[0]:g}-x{scale[1]:g}", "host": prior_host(name, scale)}


def split(rows: list[dict]) -> None:
    """Every other row of each runtime (in table order) is a fit row: at most half are fitted."""
    seen: dict[str, int] = {}
    for m in rows:
        i = seen.get(m["runtime"], 0)
        m["role"] = "fit" if i % 2 == 1 else "held_out"
        seen[m["runtime"]] = i + 1


def _run(job: tuple[dict, tuple[float, float] | None]) -> float:
    """One row at a host scale of the priors, or (None) with the catalog's runtime as shipped."""
    m, scale = job
    return simulated(m, m["runtime"] if scale is None else scaled_runtime(m["runtime"], scale))


def run_all(jobs: list[tuple[dict, float]], workers: int) -> list[float]:
    """Simulate (row, host scale) pairs, in worker processes when workers > 1 (deterministic either way)."""
    if workers <= 1:
        return [_run(j) for j in jobs]
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_run, jobs, chunksize=1))


def fit(rows: list[dict], grid, workers: int) -> tuple[dict[str, float], dict]:
    """Per runtime, the host-time scale with the least median |error| on its fit rows; also every
    (row id, scale) -> simulated value computed on the way."""
    jobs = [(m, scale) for m in rows if m["role"] == "fit" for scale in grid]
    done = {(m["id"], scale): v for (m, scale), v in zip(jobs, run_all(jobs, workers))}
    best = {}
    for name in sorted({m["runtime"] for m in rows}):
        train = [m for m in rows if m["runtime"] == name and m["role"] == "fit"]
        scores = []
        for scale in grid:
            errs = [abs(done[(m["id"], scale)] / m["measured"] - 1) for m in train]
            scores.append((float(np.median(errs)) if errs else 0.0, scale))
        best[name] = min(scores)[1]
    return best, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "validate_e2e")
    parser.add_argument("--smoke", action="store_true", help="two small rows, no fit (for tests)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for the simulations")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = [dict(m) for m in MEASUREMENTS]
    if args.smoke:
        rows = [dict(m, sim_requests=min(m["sim_requests"], 64)) for m in rows if m["model"] == "llama-3.1-8b"][:2]
    split(rows)
    grid = [(1.0, 1.0)] if args.smoke else [(f, p) for f in FIXED_SCALES for p in PER_SCALES]
    scales, done = fit(rows, grid, args.workers)
    jobs = [(m, s) for m in rows for s in (scales[m["runtime"]], None) if (m["id"], s) not in done]
    done.update({(m["id"], s): v for (m, s), v in zip(jobs, run_all(jobs, args.workers))})
    for m in rows:
        m["fixed_scale"], m["per_scale"] = scales[m["runtime"]]
        m["simulated"] = done[(m["id"], scales[m["runtime"]])]
        m["simulated_catalog"] = done[(m["id"], None)]
        m["error"] = m["simulated"] / m["measured"] - 1
    df = pd.DataFrame(rows)
    df.to_csv(args.out / "results.csv", index=False)
    parity(df, args.out / "parity.png")
    findings(df, scales, args.out / "findings.md", time.perf_counter() - started, args.workers)
    print((args.out / "findings.md").read_text())


def parity(df: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for role, marker in (("fit", "o"), ("held_out", "s")):
        part = df[df.role == role]
        ax.scatter(part.measured, part.simulated, marker=marker, label=role.replace("_", " "))
    lo, hi = df[["measured", "simulated"]].min().min() * 0.7, df[["measured", "simulated"]].max().max() * 1.4
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured output tokens/s",
           ylabel="simserve output tokens/s", title="simserve vs published end-to-end measurements")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def findings(df: pd.DataFrame, scales: dict, path: Path, wall_s: float, workers: int) -> None:
    def stats(part):
        e = part.error.abs()
        return f"median |error| {e.median():.1%}, max {e.max():.1%} over {len(part)} rows" if len(part) else "no rows"
    lines = ["# simserve vs published end-to-end measurements", "",
             f"Held out (never fitted): {stats(df[df.role == 'held_out'])}.",
             f"Fit rows: {stats(df[df.role == 'fit'])}.", "",
             "Fitted host-time scales per runtime (multiplying the priors' fixed, and per-sequence and "
             "per-token, host costs; validate_e2e.PRIORS): " + ", ".join(f"{k} x{f:g} / x{p:g}" for k, (f, p) in scales.items()) + ".", "",
             "| id | runtime | role | measured | simulated | error | with the catalog's runtime |", "|---|---|---|---|---|---|---|"]
    for m in df.itertuples():
        lines.append(f"| {m.id} | {m.runtime} | {m.role} | {m.measured:,.0f} | {m.simulated:,.0f} | {m.error:+.1%} | "
                     f"{m.simulated_catalog:,.0f} |")
    lines += ["", "Sources:"] + [f"- {s}" for s in sorted(df.source.unique())]
    lines += ["", f"Wall time of this run: {wall_s:.0f} s with {workers} worker process(es)."]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
