"""Vidur vs simserve: CPU time to simulate the same requests (issue 16's "Vidur ratio").

What is compared. simserve's bundled default (Llama-3.1-8B bf16 on one H100 SXM, sarathi chunked
prefill: chunk 512, batch cap 256, the Azure 2023 conversation trace at its own timestamps) on its
first N requests, against Vidur (microsoft/vidur, PyPI release 0.0.26, the latest) simulating the
same N requests: the same arrival times, prompt and output lengths (read through simserve's own
workload builder and written to Vidur's trace-replay CSV), on Vidur's closest setup:
`meta-llama/Llama-3-8B` (the same shapes as 3.1-8B: 32 layers, hidden 4096, 32 query / 8 KV heads,
MLP 14336, vocab 128256; only the RoPE scaling and context length differ, and Vidur enforces
neither), device `h100`, network `h100_dgx`, tp 1, pp 1, one replica, its `sarathi` replica
scheduler with chunk 512 and batch cap 256, block 16, gpu_memory_utilization 0.9 (simserve's).
Prompts are not cut (Vidur's trace `max_tokens` is raised above the longest request).

Vidur's profiles. Vidur 0.0.26 reads its compute and network profiles from Hugging Face dataset
repositories at start-up (`snapshot_download`), which cannot be reached here. The GitHub
repository (microsoft/vidur 7d47513, 2024-11-19) lists `data/profiling/compute/*/*/attention.csv`
but the copy available here lacks those blobs (only the `mlp.csv` files and network profiles are
there), and it has Meta-Llama-3-8B profiles for the A100 only. Profiling anew needs Vidur's GPU
kernels on a GPU. So the profiles are generated locally by `write_profiles` below: a roofline per
operator (H100 SXM dense bf16 989 TFLOP/s at 70 %, HBM3 3.35 TB/s at 80 %, 5 us per kernel;
`H100_*` below), in the columns 0.0.26 reads. Their values decide only the simulated times,
hence how requests batch; the CSV puts Vidur's batch count, simulated span and mean TTFT and
end-to-end latency beside simserve's (within 0.5 % of each other on the bundled hour), so the two
simulate nearly the same schedule. Vidur's only change is that its download step
(`_get_input_files`) returns the local files; its predictor training (random-forest grid search,
its default), prediction tables and event loop run as released.

How it is timed. Each simulator runs in its own process, one after the other, `--repeat` times
(the lower CPU time kept, this machine being shared). simserve: `time.process_time()` around
`simulate` (experiments/simspeed.py's figure: reading the trace, building the world, the run, the
summary). Vidur, in its own venv (`--vidur-python`), with `time.process_time()` and
`num_training_job_threads=1` (so sklearn trains in this process and its CPU is counted):
`setup` = building the Simulator (reading the trace, training the per-operator random forests by
grid search and tabulating their predictions, the one-off cost: Vidur caches both under its
cache directory, so only the first run pays it in full: `setup_cold` vs `setup_warm`), `loop` =
`Simulator.run()` less writing its output, and `output` = its metrics (CSV, no plots, no chrome
trace). The ratio compares Vidur's warm setup + loop + output (what a second run on the same
profiles costs) with simserve's whole `simulate`.

    python experiments/vidur_ratio.py --vidur-python /work/venv-vidur/bin/python --requests 2000 19366

experiments/results/vidur_ratio/ratio.csv holds two invocations: the first (simserve main
2d38a7a, cold cache) and `--keep-cache --append` on main 97e2f11 (while the test suite ran).

Needs Vidur only in the venv given (`pip install vidur==0.0.26`); nothing in simserve or its tests
imports this script. Writes experiments/results/vidur_ratio/ratio.csv (and the work files under
--work).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "vidur_ratio" / "ratio.csv"
VIDUR_VERSION = "0.0.26"

# Llama-3-8B = Llama-3.1-8B shapes (Meta's config.json for both).
HIDDEN, Q_HEADS, KV_HEADS, HEAD_DIM, MLP, VOCAB = 4096, 32, 8, 128, 14336, 128256
BF16 = 2
# H100 SXM: 989.4 TFLOP/s dense bf16 and 3.35 TB/s HBM3 (NVIDIA H100 datasheet); the efficiencies
# and the per-kernel launch cost are assumptions of this benchmark, not measurements: they set
# how long a simulated step is, not how fast either simulator runs.
H100_FLOPS, H100_BW, FLOP_EFF, BW_EFF, KERNEL_S = 989.4e12, 3.35e12, 0.70, 0.80, 5e-6
BLOCK = 16
TRACE_ROWS = 19366         # rows of AzureLLMInferenceTrace_conv (simserve/data/workloads/SOURCES.md)
MAX_TOKENS = 16384          # above the longest request of the trace (14,050 + 1,000 tokens)


def roofline_ms(flops: float, bytes_: float) -> float:
    """A kernel's time in ms: the slower of its compute and its memory traffic, plus launch."""
    return 1e3 * (max(flops / (H100_FLOPS * FLOP_EFF), bytes_ / (H100_BW * BW_EFF)) + KERNEL_S)


def gemm_ms(t: int, k: int, n: int) -> float:
    return roofline_ms(2.0 * t * k * n, BF16 * (k * n + t * (k + n)))


def mlp_row(t: int) -> dict:
    """One row of Vidur's mlp.csv (per-layer times of the token-count-dependent operators, ms)."""
    kv = KV_HEADS * HEAD_DIM
    ops = {
        "attn_pre_proj": gemm_ms(t, HIDDEN, HIDDEN + 2 * kv),
        "attn_post_proj": gemm_ms(t, HIDDEN, HIDDEN),
        "mlp_up_proj": gemm_ms(t, HIDDEN, 2 * MLP),
        "mlp_down_proj": gemm_ms(t, MLP, HIDDEN),
        "mlp_act": roofline_ms(4.0 * t * MLP, BF16 * t * 3 * MLP),
        "input_layernorm": roofline_ms(4.0 * t * HIDDEN, BF16 * t * 2 * HIDDEN),
        "post_attention_layernorm": roofline_ms(4.0 * t * HIDDEN, BF16 * t * 2 * HIDDEN),
        "attn_rope": roofline_ms(6.0 * t * (HIDDEN + kv), BF16 * t * 2 * (HIDDEN + kv)),
        "add": roofline_ms(1.0 * t * HIDDEN, BF16 * t * 3 * HIDDEN),
    }
    row = {"n_head": Q_HEADS, "n_kv_head": KV_HEADS, "n_embd": HIDDEN, "n_expanded_embd": MLP,
           "use_gated_mlp": True, "vocab_size": VOCAB, "num_tensor_parallel_workers": 1, "num_tokens": t}
    row.update({f"time_stats.{k}.median": v for k, v in ops.items()})
    return row


def attention_row(batch: int, kv_cache: int, chunk: int) -> dict:
    """One row of Vidur's attention.csv: a decode batch (chunk 0) or one prefill chunk."""
    kv = KV_HEADS * HEAD_DIM
    if chunk:
        ctx = kv_cache + chunk / 2.0                       # causal: the chunk sees half of itself
        prefill = roofline_ms(4.0 * chunk * ctx * Q_HEADS * HEAD_DIM,
                              BF16 * (2 * (kv_cache + chunk) * kv + 2 * chunk * HIDDEN))
        decode, tokens = 0.0, chunk
    else:
        prefill = 0.0
        decode = roofline_ms(4.0 * batch * kv_cache * Q_HEADS * HEAD_DIM,
                             BF16 * (2 * batch * kv_cache * kv + 2 * batch * HIDDEN))
        tokens = batch
    return {"n_embd": HIDDEN, "n_q_head": Q_HEADS, "n_kv_head": KV_HEADS, "block_size": BLOCK,
            "num_tensor_parallel_workers": 1, "batch_size": batch, "kv_cache_size": kv_cache,
            "prefill_chunk_size": chunk, "time_stats.attn_prefill.median": prefill,
            "time_stats.attn_decode.median": decode,
            "time_stats.attn_kv_cache_save.median": roofline_ms(0.0, BF16 * 2 * tokens * kv * 2)}


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_profiles(folder: Path) -> dict:
    """Vidur's four profile files for Llama-3-8B on one H100, on the grid its profilers sweep
    (token counts 1..4096 in powers of two and steps; KV sizes up to MAX_TOKENS)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = sorted(set(list(range(1, 128)) + list(range(128, 4097, 64)) + [2 ** i for i in range(13)]))
    _write_csv(folder / "mlp.csv", [mlp_row(t) for t in tokens])
    kvs = [0] + [2 ** i for i in range(4, 15)] + list(range(1024, MAX_TOKENS + 1, 1024))
    kvs = sorted(set(kvs))
    decode = [attention_row(b, k, 0) for b, k in itertools.product([1, 2, 4, 8, 16, 32, 64, 128, 256], kvs) if k]
    chunks = [32, 64, 128, 256, 512, 1024, 2048, 4096]
    prefill = [attention_row(1, k, c) for k, c in itertools.product(kvs, chunks)]
    _write_csv(folder / "attention.csv", decode + prefill)
    # tp 1 and pp 1 use no collective, but Vidur opens both files
    net = {"collective": "all_reduce", "num_workers": 1, "devices_per_node": 1, "size": 2 * HIDDEN,
           "time_stats.all_reduce.median": 0.0, "time_stats.send_recv.median": 0.0}
    _write_csv(folder / "all_reduce.csv", [net])
    _write_csv(folder / "send_recv.csv", [dict(net, collective="send_recv", devices_per_node=2)])
    return {k: str(folder / f"{k}.csv") for k in ("mlp", "attention", "all_reduce", "send_recv")}


# ---------------------------------------------------------------- Vidur side (Vidur's venv)
def vidur_config(job: dict):
    from vidur.config import (CacheConfig, ClusterConfig, MetricsConfig, RandomForrestExecutionTimePredictorConfig,
                              ReplicaConfig, SarathiSchedulerConfig, SimulationConfig, TraceRequestGeneratorConfig)
    replica = ReplicaConfig(model_name="meta-llama/Llama-3-8B", device="h100", network_device="h100_dgx",
                            num_pipeline_stages=1, tensor_parallel_size=1, gpu_memory_utilization=0.9)
    cluster = ClusterConfig(num_replicas=1, replica_config=replica, cache_config=CacheConfig(block_size=BLOCK),
                            replica_scheduler_config=SarathiSchedulerConfig(batch_size_cap=256, chunk_size=512))
    trace = TraceRequestGeneratorConfig(trace_file=job["trace"], date="2023-11-16", prefill_scale_factor=1,
                                        decode_scale_factor=1, time_scale_factor=1, max_tokens=MAX_TOKENS)
    predictor = RandomForrestExecutionTimePredictorConfig(
        cache_dir=job["cache_dir"], num_training_job_threads=1, prediction_max_batch_size=256,
        prediction_max_tokens_per_request=MAX_TOKENS, prediction_max_prefill_chunk_size=4096)
    metrics = MetricsConfig(output_dir=job["out_dir"], write_metrics=True, enable_chrome_trace=False,
                            store_plots=False)
    return SimulationConfig(seed=0, log_level="info", cluster_config=cluster, request_generator_config=trace,
                            execution_time_predictor_config=predictor, metrics_config=metrics)


def vidur_child(job: dict) -> dict:
    """Build and run Vidur on one trace file; CPU seconds of each phase (process_time)."""
    from vidur.execution_time_predictor import sklearn_execution_time_predictor as sk
    from vidur.simulator import Simulator
    from vidur.utils.random import set_seeds

    files = job["profiles"]
    sk.SklearnExecutionTimePredictor._get_input_files = lambda self: (
        files["mlp"], files["attention"], files["all_reduce"], files["send_recv"])
    spent = {}
    write_output = Simulator._write_output

    def timed_output(self):
        t0 = time.process_time()
        write_output(self)
        spent["output"] = time.process_time() - t0
    Simulator._write_output = timed_output

    t0 = time.process_time()
    config = vidur_config(job)
    set_seeds(config.seed)
    sim = Simulator(config)
    t1 = time.process_time()
    sim.run()
    t2 = time.process_time()
    from vidur.entities import Batch
    return {"setup_s": t1 - t0, "loop_s": t2 - t1 - spent["output"], "output_s": spent["output"],
            "sim_time_s": float(sim._time), "batches": Batch._id + 1,
            **_vidur_latency(config.metrics_config.output_dir)}


def _vidur_latency(out_dir: str) -> dict:
    """Mean end-to-end latency and TTFT of Vidur's request metrics (read after timing)."""
    import pandas as pd

    df = pd.read_csv(Path(out_dir) / "request_metrics.csv")
    return {"requests": len(df), "e2e_mean_s": float(df["request_e2e_time"].mean()),
            "ttft_mean_s": float(df["prefill_e2e_time"].mean())}


def main_child(argv: list[str]) -> None:
    job = json.loads(argv[0])
    print("VIDUR_RESULT " + json.dumps(vidur_child(job)), flush=True)


# ---------------------------------------------------------------- driver (simserve's venv)
def write_trace(n: int, path: Path) -> dict:
    """The first n requests of simserve's bundled default, exactly as simserve builds them, in
    Vidur's trace-replay columns (Time in seconds from the first arrival, as simserve replays)."""
    from simserve.world import build_world

    book = build_world(None, [f"workload.num_requests={n}"]).requests
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Date", "Time", "PromptTokenCount", "CompletionTokenCount"])
        for t, i, o in zip(book.arrival_s.tolist(), book.isl.tolist(), book.osl.tolist()):
            writer.writerow(["2023-11-16", repr(t), i, o])
    return {"requests": len(book), "prompt_tokens": int(book.isl.sum()), "output_tokens": int(book.osl.sum()),
            "last_arrival_s": float(book.arrival_s[-1])}


def run_vidur(python: str, job: dict) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    with open(Path(job["out_dir"]) / "vidur.log", "a") as log:     # Vidur's own log, to follow a long run
        out = subprocess.run([python, __file__, "--vidur-child", json.dumps(job)], stdout=subprocess.PIPE,
                             stderr=log, text=True, env=env, cwd=job["out_dir"])
    for line in out.stdout.splitlines():
        if line.startswith("VIDUR_RESULT "):
            return json.loads(line[len("VIDUR_RESULT "):])
    raise SystemExit(f"vidur run failed (exit {out.returncode}): see {job['out_dir']}/vidur.log")


def run_simserve(n: int) -> dict:
    """simserve's figure, as experiments/simspeed.py takes it, in a fresh process."""
    code = ("import json,time,sys; from simserve.simulation import simulate; t=time.process_time(); "
            f"s=simulate(None, overrides=['workload.num_requests={n}']).summary; c=time.process_time()-t; "
            "print('SIMSERVE_RESULT '+json.dumps({'cpu_s':c,'iterations':s['iterations'],'events':s['events'],"
            "'sim_time_s':s['sim_time_s'],'e2e_mean_s':s['e2e']['mean'],'ttft_mean_s':s['ttft']['mean']}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("SIMSERVE_RESULT "):
            return json.loads(line[len("SIMSERVE_RESULT "):])
    raise SystemExit(f"simserve run failed (exit {out.returncode}):\n{out.stderr[-4000:]}")


def best(runs: list[dict], key) -> dict:
    """The repetition with the lowest CPU time (the machine is shared: load only adds)."""
    return min(runs, key=key)


def compare(args, profiles: dict, n: int) -> dict:
    work = Path(args.work)
    trace = work / f"trace_{n}.csv"
    shape = write_trace(n, trace)
    job = {"trace": str(trace), "cache_dir": str(work / "cache"), "out_dir": str(work / "out"),
           "profiles": profiles}
    vidur, simserve = [], []
    for _ in range(args.repeat):
        vidur.append(run_vidur(args.vidur_python, job))
        simserve.append(run_simserve(n))
    v = best(vidur, lambda r: r["setup_s"] + r["loop_s"] + r["output_s"])
    s = best(simserve, lambda r: r["cpu_s"])
    total = v["setup_s"] + v["loop_s"] + v["output_s"]
    return {"requests": n, "output_tokens": shape["output_tokens"], "repeats": args.repeat,
            "simserve_cpu_s": round(s["cpu_s"], 3), "vidur_cpu_s": round(total, 3),
            "ratio": round(total / s["cpu_s"], 2),
            "vidur_setup_warm_s": round(v["setup_s"], 3), "vidur_loop_s": round(v["loop_s"], 3),
            "vidur_output_s": round(v["output_s"], 3), "loop_ratio": round(v["loop_s"] / s["cpu_s"], 2),
            "simserve_iterations": s["iterations"], "vidur_batches": v["batches"],
            "simserve_sim_time_s": round(s["sim_time_s"], 1), "vidur_sim_time_s": round(v["sim_time_s"], 1),
            "simserve_e2e_mean_s": round(s["e2e_mean_s"], 3), "vidur_e2e_mean_s": round(v["e2e_mean_s"], 3),
            "simserve_ttft_mean_s": round(s["ttft_mean_s"], 4), "vidur_ttft_mean_s": round(v["ttft_mean_s"], 4),
            "vidur_runs_cpu_s": " ".join(f"{r['setup_s'] + r['loop_s'] + r['output_s']:.2f}" for r in vidur),
            "simserve_runs_cpu_s": " ".join(f"{r['cpu_s']:.2f}" for r in simserve)}


def cold_setup(args, profiles: dict) -> float:
    """Vidur's one-off cost: a run on an empty cache trains its predictors and tabulates them."""
    work = Path(args.work)
    shutil.rmtree(work / "cache", ignore_errors=True)
    trace = work / "trace_cold.csv"
    write_trace(1, trace)
    job = {"trace": str(trace), "cache_dir": str(work / "cache"), "out_dir": str(work / "out"),
           "profiles": profiles}
    return run_vidur(args.vidur_python, job)["setup_s"]


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vidur-python", required=True, help="python of a venv with vidur==0.0.26")
    parser.add_argument("--requests", type=int, nargs="+", default=[2000, 19366])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--work", default="/tmp/vidur_ratio")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--keep-cache", action="store_true", help="skip the cold run (cache already trained)")
    parser.add_argument("--append", action="store_true", help="add the rows to --out instead of replacing it")
    args = parser.parse_args()
    if any(n < 1 or n > TRACE_ROWS for n in args.requests):
        fail(f"--requests: each must be 1..{TRACE_ROWS}")
    if args.repeat < 1:
        fail("--repeat: must be at least 1")
    (Path(args.work) / "out").mkdir(parents=True, exist_ok=True)
    profiles = write_profiles(Path(args.work) / "profiles")
    cold = None if args.keep_cache else cold_setup(args, profiles)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    rows = [dict(compare(args, profiles, n), vidur_setup_cold_s=None if cold is None else round(cold, 1),
                 vidur_version=VIDUR_VERSION, simserve_commit=commit) for n in args.requests]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.exists():
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f)) + rows
    _write_csv(out, rows)
    for r in rows:
        print(f"{r['requests']} requests: simserve {r['simserve_cpu_s']:.2f} s CPU, Vidur {r['vidur_cpu_s']:.2f} s "
              f"(setup {r['vidur_setup_warm_s']:.2f}, loop {r['vidur_loop_s']:.2f}, output {r['vidur_output_s']:.2f}); "
              f"ratio {r['ratio']:.1f}x; iterations {r['simserve_iterations']} vs batches {r['vidur_batches']}")
    if cold is not None:
        print(f"Vidur one-off setup on an empty cache (predictor training + tables): {cold:.1f} s CPU")


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--vidur-child":
    main_child(sys.argv[2:])
elif __name__ == "__main__":
    main()
