"""Every bad input to every command: exit code 2, one line on stderr naming the problem, no
traceback, nothing written (the output folder is checked before any simulation starts).

Each case is a command line run in-process in a fresh folder that holds only the case's input
files; afterwards the folder must hold exactly those files again.
"""
import contextlib
import gzip
import io
import os
import signal

import pytest

from simserve.cli import main

SMALL = """\
model: llama-3.1-8b
workload:
  lengths: {isl: 64, osl: 4}
  arrivals: {process: poisson, rate: 5.0}
  num_requests: 4
"""
TRACE_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
TRACE_ROW = "2023-11-16 18:15:46.6805900,374,44\n"


def cfg(extra: str = "", replace: tuple[str, str] | None = None) -> dict:
    body = SMALL.replace(*replace) if replace else SMALL
    return {"cfg.yaml": body + extra}


def with_trace(content, name="trace.csv", extra: str = "") -> dict:
    body = f"workload: {{trace: {name}, num_requests: 4}}\n{extra}"
    return {"cfg.yaml": body, name: content}


SWEEP_OK = "base: cfg.yaml\ngrid:\n  seed: [1, 2]\n"
MODEL = ("{name: tiny, num_layers: 2, hidden: 256, intermediate: 512, num_heads: 4, num_kv_heads: 2, "
         "head_dim: 64, vocab: 1000, max_context: 4096}")


def model(**change) -> dict:
    text = MODEL
    for key, value in change.items():
        old = next(p for p in MODEL.strip("{}").split(", ") if p.startswith(f"{key}:"))
        text = text.replace(old, f"{key}: {value}")
    return cfg(replace=("model: llama-3.1-8b", f"model: {text}"))


def results_dir(summary: str = "{not json") -> dict:
    return {"res/requests.csv": "request_id\n", "res/summary.json": summary}


RUN = ["run", "cfg.yaml", "--out", "out", "--quiet"]

# (id, files, argv, words the line must contain)
CASES = [
    # -- config: unknown keys, types, choices --------------------------------------------------
    ("unknown-top-key", cfg("schedular: {policy: vllm}\n"), RUN, ["schedular", "scheduler"]),
    ("unknown-nested-key", cfg("engine: {blocksize: 16}\n"), RUN, ["engine.blocksize", "block_size"]),
    ("unknown-model", cfg(replace=("llama-3.1-8b", "llama-9")), RUN, ["llama-9"]),
    ("unknown-hardware", cfg("cluster: {hardware: tpu-v9}\n"), RUN, ["tpu-v9"]),
    ("unknown-topology", cfg("cluster: {topology: moon}\n"), RUN, ["moon"]),
    ("bad-policy", cfg("scheduler: {policy: fifo}\n"), RUN, ["scheduler.policy"]),
    ("bad-router", cfg("router: {policy: random}\n"), RUN, ["router.policy"]),
    ("affinity-without-cache", cfg("router: {policy: prefix_affinity}\n"), RUN, ["prefix_affinity",
                                                                                  "scheduler.prefix_caching"]),
    ("shared-prefix-zero", cfg(replace=("num_requests: 4", "num_requests: 4\n  shared_prefix: {tokens: 0, groups: 2}")),
     RUN, ["workload.shared_prefix.tokens"]),
    ("shared-prefix-no-groups", cfg(replace=("num_requests: 4", "num_requests: 4\n  shared_prefix: {tokens: 64}")),
     RUN, ["workload.shared_prefix.groups"]),
    ("cache-threshold", cfg("router: {cache_threshold: 2}\n"), RUN, ["router.cache_threshold"]),
    ("sync-drop-above-one", cfg("collectives: {sync_point_drop: 1.5}\n"), RUN, ["collectives.sync_point_drop"]),
    ("spec-draft-without-model", cfg("scheduler: {speculative: {method: draft}}\n"), RUN,
     ["scheduler.speculative", "draft_model"]),
    ("spec-unknown-method", cfg("scheduler: {speculative: {method: medusa}}\n"), RUN, ["scheduler.speculative.method"]),
    ("spec-beta-too-wide", cfg("scheduler: {speculative: {method: eagle, acceptance: {dist: beta, mean: 0.9, std: 0.4}}}\n"),
     RUN, ["scheduler.speculative.acceptance", "std"]),
    ("bad-fidelity", cfg("fidelity: medium\n"), RUN, ["fidelity"]),
    ("bad-dtype", cfg("precision: {weights: fp6}\n"), RUN, ["precision.weights"]),
    ("bad-allreduce", cfg("collectives: {allreduce: magic}\n"), RUN, ["all-reduce", "magic"]),
    ("section-not-mapping", cfg("scheduler: 5\n"), RUN, ["scheduler"]),
    ("tp-string", cfg("parallelism: {tp: two}\n"), RUN, ["parallelism.tp"]),
    ("tp-float", cfg("parallelism: {tp: 2.5}\n"), RUN, ["parallelism.tp"]),
    ("tp-zero", cfg("parallelism: {tp: 0}\n"), RUN, ["parallelism.tp"]),
    ("tp-not-dividing", cfg("parallelism: {tp: 3}\n"), RUN, ["tp=3"]),
    ("tp-huge", cfg("parallelism: {tp: 100000}\n"), RUN, ["parallelism.tp"]),
    ("dp-huge", cfg("parallelism: {dp: 1000000000}\n"), RUN, ["parallelism.dp"]),
    ("pp-more-than-layers", cfg("parallelism: {pp: 64}\n"), RUN, ["pp"]),
    ("ep-dense", cfg("parallelism: {ep: 2}\n"), RUN, ["ep"]),
    ("cp", cfg("model: mixtral-8x7b\nparallelism: {cp: 2}\n"), RUN, ["cp"]),   # CP of MoE models is not modelled
    ("stage-layers-bad", cfg("parallelism: {pp: 2, stage_layers: [1, 2]}\n"), RUN, ["stage_layers"]),
    ("nodes-huge", cfg("cluster: {nodes: 1000000}\n"), RUN, ["cluster.nodes"]),
    ("nodes-zero", cfg("cluster: {nodes: 0}\n"), RUN, ["cluster.nodes"]),
    ("gpus-per-node-huge", cfg("cluster: {gpus_per_node: 100000}\n"), RUN, ["cluster.gpus_per_node"]),
    ("seed-negative", cfg("seed: -1\n"), RUN, ["seed"]),
    ("seed-huge", cfg("seed: 123456789012345678901234567890\n"), RUN, ["seed"]),
    ("num-requests-huge", cfg(replace=("num_requests: 4", "num_requests: 1e12")), RUN, ["num_requests"]),
    ("num-requests-zero", cfg(replace=("num_requests: 4", "num_requests: 0")), RUN, ["num_requests"]),
    ("num-requests-float", cfg(replace=("num_requests: 4", "num_requests: 2.5")), RUN, ["num_requests"]),
    ("isl-negative", cfg(replace=("isl: 64", "isl: -5")), RUN, ["isl"]),
    ("isl-21-digits", cfg(replace=("isl: 64", "isl: 123456789012345678901")), RUN, ["isl"]),
    ("osl-huge", cfg(replace=("osl: 4", "osl: 100000000000")), RUN, ["osl"]),
    ("isl-float", cfg(replace=("isl: 64", "isl: 2.5")), RUN, ["isl"]),
    ("isl-dist-bad-key", cfg(replace=("isl: 64", "isl: {mean: 50, sd: 3}")), RUN, ["isl.sd"]),
    ("isl-dist-inf-mean", cfg(replace=("isl: 64", "isl: {mean: .inf}")), RUN, ["isl.mean"]),
    ("isl-dist-nan-cv", cfg(replace=("isl: 64", "isl: {mean: 50, cv: .nan}")), RUN, ["isl.cv"]),
    ("isl-dist-max-below-min", cfg(replace=("isl: 64", "isl: {mean: 50, min: 10, max: 5}")), RUN, ["max"]),
    ("isl-dist-bad-kind", cfg(replace=("isl: 64", "isl: {dist: pareto, mean: 50}")), RUN, ["isl.dist"]),
    ("lengths-missing-osl", cfg(replace=("osl: 4", "profile: null")), RUN, ["osl"]),
    ("unknown-profile", cfg(replace=("{isl: 64, osl: 4}", "{profile: nope}")), RUN, ["profile", "nope"]),
    ("rate-zero", cfg(replace=("rate: 5.0", "rate: 0")), RUN, ["rate"]),
    ("rate-nan", cfg(replace=("rate: 5.0", "rate: .nan")), RUN, ["rate"]),
    ("rate-inf", cfg(replace=("rate: 5.0", "rate: .inf")), RUN, ["rate"]),
    ("rate-string", cfg(replace=("rate: 5.0", "rate: fast")), RUN, ["rate"]),
    ("gamma-cv-inf", cfg(replace=("process: poisson", "process: gamma, cv: .inf")), RUN, ["cv"]),
    ("poisson-no-rate", cfg(replace=("process: poisson, rate: 5.0", "process: poisson")), RUN, ["rate"]),
    ("duration-inf", cfg(replace=("num_requests: 4", "duration_s: .inf")), RUN, ["duration_s"]),
    ("duration-negative", cfg(replace=("num_requests: 4", "duration_s: -3")), RUN, ["duration_s"]),
    ("gpu-util-nan", cfg("engine: {gpu_memory_utilization: .nan}\n"), RUN, ["gpu_memory_utilization"]),
    ("gpu-util-above-1", cfg("engine: {gpu_memory_utilization: 1.5}\n"), RUN, ["gpu_memory_utilization"]),
    ("reserved-inf", cfg("engine: {reserved_GiB: .inf}\n"), RUN, ["reserved_GiB"]),
    ("overlap-pipeline-sends-unbuilt", cfg("engine: {overlap: pipeline_sends}\nparallelism: {pp: 2}\n"), RUN,
     ["engine.overlap"]),
    ("reserved-negative", cfg("engine: {reserved_GiB: -1}\n"), RUN, ["reserved_GiB"]),
    # -- swap preemption (engine/swap.py): values, and the layouts it is not modelled for ------
    ("preemption-unknown", cfg("scheduler: {preemption: offload}\n"), RUN, ["scheduler.preemption"]),
    ("swap-space-negative", cfg("engine: {swap_space_GiB: -1}\n"), RUN, ["engine.swap_space_GiB"]),
    ("swap-space-inf", cfg("engine: {swap_space_GiB: .inf}\n"), RUN, ["engine.swap_space_GiB"]),
    ("runtime-preemption-unknown", cfg("engine: {runtime: {base: vllm-v0, preemption: later}}\n"), RUN,
     ["preemption", "recompute"]),
    ("runtime-swap-space-text", cfg("engine: {runtime: {base: vllm-v0, swap_space_GiB: lots}}\n"), RUN,
     ["swap_space_GiB"]),
    ("swap-with-pp", cfg("scheduler: {preemption: swap}\nparallelism: {pp: 2}\n"), RUN,
     ["scheduler.preemption=swap", "parallelism.pp"]),
    ("swap-with-prefix-caching", cfg("scheduler: {preemption: swap, prefix_caching: true}\n"), RUN,
     ["scheduler.preemption=swap", "scheduler.prefix_caching"]),
    ("swap-with-cp", cfg("scheduler: {preemption: swap}\nparallelism: {cp: 2}\n"), RUN,
     ["scheduler.preemption=swap", "parallelism.cp"]),
    ("runtime-swap-with-disaggregation", cfg("engine: {runtime: {base: vllm-v0, preemption: swap}}\n"
                                             "disaggregation: {prefill: {tp: 1}, decode: {tp: 1}}\n"), RUN,
     ["scheduler.preemption=swap", "disaggregation"]),
    ("swap-with-moe", cfg("scheduler: {preemption: swap}\nparallelism: {ep: 8}\n",
                          replace=("model: llama-3.1-8b", "model: mixtral-8x7b")), RUN,
     ["scheduler.preemption=swap", "mixture-of-experts"]),
    ("watermark-one", cfg("engine: {kv_watermark: 1}\n"), RUN, ["kv_watermark"]),
    ("block-size-huge", cfg("engine: {block_size: 1000000}\n"), RUN, ["engine.block_size"]),
    ("block-size-zero", cfg("engine: {block_size: 0}\n"), RUN, ["engine.block_size"]),
    ("max-batch-zero", cfg("scheduler: {max_batch_size: 0}\n"), RUN, ["max_batch_size"]),
    ("max-batch-huge", cfg("scheduler: {max_batch_size: 100000000000}\n"), RUN, ["max_batch_size"]),
    ("chunk-huge", cfg("scheduler: {chunk_size: 100000000000}\n"), RUN, ["chunk_size"]),
    ("slo-ttft-inf", cfg("slo: {ttft_s: .inf}\n"), RUN, ["slo.ttft_s"]),
    ("slo-tpot-negative", cfg("slo: {tpot_s: -0.1}\n"), RUN, ["slo.tpot_s"]),
    ("slo-e2e-zero", cfg("slo: {e2e_s: 0}\n"), RUN, ["slo.e2e_s"]),
    ("links-bw-nan", cfg("cluster: {links: {scale_up_GBps: .nan}}\n"), RUN, ["scale_up_GBps"]),
    ("links-bw-inf", cfg("cluster: {links: {scale_out_GBps: .inf}}\n"), RUN, ["scale_out_GBps"]),
    ("links-bw-zero", cfg("cluster: {links: {scale_up_GBps: 0}}\n"), RUN, ["scale_up_GBps"]),
    ("links-latency-negative", cfg("cluster: {links: {latency_us: -1}}\n"), RUN, ["latency_us"]),
    ("links-latency-nan", cfg("cluster: {links: {latency_us: .nan}}\n"), RUN, ["latency_us"]),
    ("moe-zipf-inf", cfg("moe: {zipf_s: .inf}\n"), RUN, ["moe.zipf_s"]),
    ("moe-trace-missing", cfg("moe: {routing: trace}\n"), RUN, ["moe.trace"]),
    ("too-big-model", cfg(replace=("llama-3.1-8b", "llama-3.1-405b")), RUN, ["does not fit", "short by"]),
    # -- inline model and hardware cards: the catalog's validation ------------------------------
    ("card-layers-float", model(num_layers=2.5), RUN, ["num_layers"]),
    ("card-layers-zero", model(num_layers=0), RUN, ["num_layers"]),
    ("card-hidden-negative", model(hidden=-256), RUN, ["hidden"]),
    ("card-hidden-string", model(hidden="wide"), RUN, ["hidden"]),
    ("card-vocab-inf", model(vocab=".inf"), RUN, ["vocab"]),
    ("card-heads-kv", model(num_kv_heads=3), RUN, ["num_kv_heads"]),
    ("card-context-huge", model(max_context=10 ** 15), RUN, ["max_context"]),
    ("card-unknown-field", cfg(replace=("model: llama-3.1-8b", "model: " + MODEL.replace("}", ", wings: 2}"))),
     RUN, ["wings"]),
    ("card-missing-field", cfg(replace=("model: llama-3.1-8b", "model: {name: x, num_layers: 2}")), RUN,
     ["hidden"]),
    ("hardware-card-partial", cfg("cluster: {hardware: {name: g, hbm_bytes: .nan}}\n"), RUN, ["'g"]),
    # -- config files --------------------------------------------------------------------------
    ("config-missing", {}, RUN, ["not found"]),
    ("config-directory", {"cfg.yaml/x": ""}, RUN, ["directory"]),
    ("config-not-yaml", {"cfg.yaml": "model: [unclosed\n"}, RUN, ["YAML"]),
    ("config-a-list", {"cfg.yaml": "- a\n- b\n"}, RUN, ["mapping"]),
    ("config-not-utf8", {"cfg.yaml": b"model: llama\xff\xfe\n"}, RUN, ["UTF-8"]),
    ("config-binary", {"cfg.yaml": bytes(range(256))}, RUN, ["cfg.yaml"]),
    ("named-example-unknown", {}, ["run", "no-such-example", "--out", "out"], ["no-such-example"]),
    # -- traces --------------------------------------------------------------------------------
    ("trace-missing", {"cfg.yaml": "workload: {trace: nope.csv}\n"}, RUN, ["nope.csv"]),
    ("trace-bad-row", with_trace(TRACE_HEAD + TRACE_ROW + "2023-11-16 18:15:50.99,abc,109\n"), RUN, ["line 3"]),
    ("trace-negative-row", with_trace(TRACE_HEAD + TRACE_ROW + "2023-11-16 18:15:50.99,-4,109\n"), RUN,
     ["line 3"]),
    ("trace-header-only", with_trace(TRACE_HEAD), RUN, ["no requests"]),
    ("trace-empty", with_trace(""), RUN, ["trace.csv"]),
    ("trace-not-utf8", with_trace(TRACE_HEAD.encode() + b"\xff\xfe\x00garbage,1,2\n"), RUN, ["UTF-8"]),
    ("trace-binary", with_trace(bytes(range(256)) * 4), RUN, ["trace.csv"]),
    ("trace-fake-gzip", with_trace(b"\x1f\x8b" + (TRACE_HEAD + TRACE_ROW).encode(), name="t.csv.gz"), RUN,
     ["t.csv.gz"]),
    ("trace-truncated-gzip", with_trace(gzip.compress((TRACE_HEAD + TRACE_ROW * 200).encode())[:60],
                                        name="t.csv.gz"), RUN, ["t.csv.gz"]),
    ("trace-gzip-of-garbage", with_trace(gzip.compress(b"\xff\xfe\xfd" * 100), name="t.csv.gz"), RUN,
     ["t.csv.gz"]),
    ("trace-bad-format", with_trace(TRACE_HEAD + TRACE_ROW, extra="") | {
        "cfg.yaml": "workload: {trace: trace.csv, format: excel}\n"}, RUN, ["workload.format"]),
    ("trace-jsonl-bad", with_trace('{"timestamp": 1, "input_length": 5}\nnot json\n', name="t.jsonl"), RUN,
     ["t.jsonl"]),
    # -- run flags -----------------------------------------------------------------------------
    ("set-no-equals", cfg(), RUN + ["--set", "scheduler.policy"], ["--set"]),
    ("set-empty-key", cfg(), RUN + ["--set", "=3"], ["--set"]),
    ("set-unknown-key", cfg(), RUN + ["--set", "scheduler.polcy=vllm"], ["scheduler.polcy"]),
    ("set-bad-value", cfg(), RUN + ["--set", "scheduler.policy=fifo"], ["scheduler.policy"]),
    ("set-into-scalar", cfg(), RUN + ["--set", "seed.x=1"], ["seed"]),
    ("set-nan", cfg(), RUN + ["--set", "workload.arrivals.rate=nan"], ["rate"]),
    ("seed-flag-negative", cfg(), RUN + ["--seed", "-3"], ["seed"]),
    ("seed-flag-text", cfg(), RUN + ["--seed", "abc"], ["--seed"]),
    ("trace-window-text", cfg(), RUN + ["--trace-window", "a:b"], ["window"]),
    ("trace-window-reversed", cfg(), RUN + ["--trace-window", "5:1"], ["window"]),
    ("timeline-window-text", cfg(), RUN + ["--timeline-window", "a:b"], ["--timeline-window"]),
    ("timeline-window-reversed", cfg(), RUN + ["--timeline-window", "5:1"], ["--timeline-window"]),
    ("plots-bad-format", cfg(), RUN + ["--plots", "--format", "gif"], ["--format"]),
    ("out-under-a-file", cfg() | {"afile": "x"}, ["run", "cfg.yaml", "--out", "afile/sub", "--quiet"],
     ["afile/sub"]),
    ("out-is-a-file", cfg() | {"afile": "x"}, ["run", "cfg.yaml", "--out", "afile", "--quiet"], ["afile"]),
    ("out-in-proc", cfg(), ["run", "cfg.yaml", "--out", "/proc/simserve-out", "--quiet"], ["/proc/simserve-out"]),
    ("out-not-empty", cfg() | {"out/old.txt": "keep me"}, RUN, ["out", "--force"]),
    ("run-unknown-flag", cfg(), RUN + ["--bogus"], ["--bogus"]),
    # -- estimate ------------------------------------------------------------------------------
    ("est-no-model", {}, ["estimate", "--hardware", "h100"], ["--model"]),
    ("est-unknown-model", {}, ["estimate", "--model", "gpt-9", "--hardware", "h100"], ["gpt-9"]),
    ("est-unknown-hardware", {}, ["estimate", "--model", "llama-3.1-8b", "--hardware", "tpu"], ["tpu"]),
    ("est-tp-3", {}, ["estimate", "--model", "llama-3.1-70b", "--hardware", "h100", "--tp", "3"], ["tp=3"]),
    ("est-tp-0", {}, ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100", "--tp", "0"], ["tp"]),
    ("est-batch-0", {}, ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100", "--batch", "0"], ["batch"]),
    ("est-batch-1e9-text", {}, ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100", "--batch", "1e9"],
     ["--batch"]),
    ("est-batch-huge", {}, ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100", "--batch",
                            "1000000000"], ["batch"]),
    ("est-isl-21-digits", {}, ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100", "--isl",
                               "123456789012345678901"], ["isl"]),
    ("est-osl-0", {}, ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100", "--osl", "0"], ["osl"]),
    ("est-pp-huge", {}, ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100", "--pp", "1000"], ["pp"]),
    ("est-precision", {}, ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100", "--precision", "fp7"],
     ["precision"]),
    ("est-kv-precision", {}, ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100", "--kv-precision",
                              "int3"], ["kv-precision"]),
    ("est-topology", {}, ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100", "--topology", "moon"],
     ["moon"]),
    ("est-does-not-fit", {}, ["estimate", "--model", "llama-3.1-405b", "--hardware", "h100"],
     ["does not fit", "short by"]),
    ("est-batch-does-not-fit", {}, ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100", "--batch",
                                    "4000", "--isl", "8192"], ["does not fit"]),
    # -- collective ----------------------------------------------------------------------------
    ("coll-bw-negative", {}, ["collective", "--scale-up-GBps", "-1"], ["--scale-up-GBps"]),
    ("coll-bw-nan", {}, ["collective", "--scale-up-GBps", "nan"], ["--scale-up-GBps"]),
    ("coll-bw-zero", {}, ["collective", "--scale-up-GBps", "0"], ["--scale-up-GBps"]),
    ("coll-bw-inf", {}, ["collective", "--scale-up-GBps", "inf"], ["--scale-up-GBps"]),
    ("coll-out-bw-negative", {}, ["collective", "--scale-out-GBps", "-5"], ["--scale-out-GBps"]),
    ("coll-latency-negative", {}, ["collective", "--latency-us", "-1"], ["--latency-us"]),
    ("coll-latency-nan", {}, ["collective", "--latency-us", "nan"], ["--latency-us"]),
    ("coll-latency-text", {}, ["collective", "--latency-us", "slow"], ["--latency-us"]),
    ("coll-nodes-huge", {}, ["collective", "--gpus", "1000000", "--nodes", "1000000"], ["--nodes"]),
    ("coll-gpus-0", {}, ["collective", "--gpus", "0"], ["--gpus"]),
    ("coll-uneven", {}, ["collective", "--gpus", "3", "--nodes", "2"], ["--nodes"]),
    ("coll-bytes-1e400", {}, ["collective", "--bytes", "1e400"], ["--bytes"]),
    ("coll-bytes-text", {}, ["collective", "--bytes", "lots"], ["lots"]),
    ("coll-bytes-zero", {}, ["collective", "--bytes", "0"], ["--bytes"]),
    ("coll-sweep-reversed", {}, ["collective", "--sweep", "1GiB:8B"], ["--sweep"]),
    ("coll-sweep-text", {}, ["collective", "--sweep", "small"], ["--sweep"]),
    ("coll-topology", {}, ["collective", "--topology", "moon"], ["moon"]),
    ("coll-hardware", {}, ["collective", "--hardware", "tpu"], ["tpu"]),
    ("coll-op", {}, ["collective", "--op", "broadcastall"], ["--op"]),
    ("coll-algo", {}, ["collective", "--algo", "magic"], ["magic"]),
    ("coll-too-many-gpus", {}, ["collective", "--gpus", "64"], ["GPUs per node"]),
    # -- workload describe ---------------------------------------------------------------------
    ("wl-missing", {}, ["workload", "describe", "nope.csv"], ["nope.csv"]),
    ("wl-not-utf8", {"t.csv": TRACE_HEAD.encode() + b"\xff\xfe,1,2\n"}, ["workload", "describe", "t.csv"],
     ["UTF-8"]),
    ("wl-fake-gzip", {"t.csv.gz": b"\x1f\x8b" + (TRACE_HEAD + TRACE_ROW).encode()}, ["workload", "describe", "t.csv.gz"], ["t.csv.gz"]),
    ("wl-truncated-gzip", {"t.csv.gz": gzip.compress((TRACE_HEAD + TRACE_ROW * 200).encode())[:60]},
     ["workload", "describe", "t.csv.gz"], ["t.csv.gz"]),
    ("wl-empty", {"t.csv": ""}, ["workload", "describe", "t.csv"], ["t.csv"]),
    ("wl-bad-format", {"t.csv": TRACE_HEAD + TRACE_ROW}, ["workload", "describe", "t.csv", "--format", "xls"],
     ["--format"]),
    ("wl-plot-unwritable", {"t.csv": TRACE_HEAD + TRACE_ROW, "afile": "x"},
     ["workload", "describe", "t.csv", "--plot", "afile/p.png"], ["afile/p.png"]),
    # -- sweep ---------------------------------------------------------------------------------
    ("sweep-missing", {}, ["sweep", "nope.yaml", "--out", "out"], ["not found"]),
    ("sweep-not-yaml", {"s.yaml": "grid: [\n"}, ["sweep", "s.yaml", "--out", "out"], ["YAML"]),
    ("sweep-not-utf8", {"s.yaml": b"grid: \xff\n"}, ["sweep", "s.yaml", "--out", "out"], ["UTF-8"]),
    ("sweep-a-list", {"s.yaml": "- 1\n"}, ["sweep", "s.yaml", "--out", "out"], ["mapping"]),
    ("sweep-unknown-key", {"s.yaml": "base: cfg.yaml\ngird: {seed: [1]}\n"} | cfg(),
     ["sweep", "s.yaml", "--out", "out"], ["gird"]),
    ("sweep-no-points", {"s.yaml": "base: cfg.yaml\n"} | cfg(), ["sweep", "s.yaml", "--out", "out"], ["grid"]),
    ("sweep-grid-not-list", {"s.yaml": "base: cfg.yaml\ngrid: {seed: 3}\n"} | cfg(),
     ["sweep", "s.yaml", "--out", "out"], ["grid.seed"]),
    ("sweep-bad-point", {"s.yaml": "base: cfg.yaml\ngrid: {scheduler.polcy: [vllm]}\n"} | cfg(),
     ["sweep", "s.yaml", "--out", "out"], ["scheduler.polcy"]),
    ("sweep-bad-value", {"s.yaml": "base: cfg.yaml\ngrid: {workload.arrivals.rate: [1, .nan]}\n"} | cfg(),
     ["sweep", "s.yaml", "--out", "out"], ["rate"]),
    ("sweep-base-bad", {"s.yaml": "base: 5\ngrid: {seed: [1]}\n"}, ["sweep", "s.yaml", "--out", "out"], ["base"]),
    ("sweep-workers-0", {"s.yaml": SWEEP_OK} | cfg(), ["sweep", "s.yaml", "--out", "out", "--workers", "0"],
     ["--workers"]),
    ("sweep-out-under-file", {"s.yaml": SWEEP_OK, "afile": "x"} | cfg(), ["sweep", "s.yaml", "--out", "afile/o"],
     ["afile/o"]),
    ("sweep-other-results", {"s.yaml": SWEEP_OK, "out/results.csv": "point,x\n"} | cfg(),
     ["sweep", "s.yaml", "--out", "out"], ["results.csv"]),
    # -- plot, report, trace -------------------------------------------------------------------
    ("plot-missing-dir", {}, ["plot", "nope"], ["nope"]),
    ("plot-empty-dir", {"res/x.txt": ""}, ["plot", "res"], ["res"]),
    ("plot-bad-summary", results_dir(), ["plot", "res"], ["summary.json"]),
    ("plot-labels-mismatch", results_dir(), ["plot", "res", "res", "--labels", "a"], ["--labels"]),
    ("report-missing-dir", {}, ["report", "nope"], ["nope"]),
    ("report-bad-summary", results_dir(), ["report", "res"], ["summary.json"]),
    ("trace-missing-dir", {}, ["trace", "nope"], ["nope"]),
    ("trace-bad-window", results_dir(), ["trace", "res", "--window", "x"], ["window"]),
    ("trace-no-timeline", results_dir("{}"), ["trace", "res"], ["timeline"]),
    # -- the command line itself ---------------------------------------------------------------
    ("no-command", {}, [], ["command"]),
    ("unknown-command", {}, ["simulate"], ["simulate"]),
    ("catalog-bad-flag", {}, ["catalog", "--yaml"], ["--yaml"]),
]


def _write(root, files: dict) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _snapshot(root) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else None) for p in root.rglob("*")}


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout("a bad input must be refused within seconds, not simulated")


def test_there_are_at_least_a_hundred_cases():
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name, files, argv, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, monkeypatch, name, files, argv, words):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, files)
    before = _snapshot(tmp_path)
    err, out = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(30)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    lines = err.getvalue().strip().splitlines()
    assert code == 2, (code, err.getvalue())
    assert len(lines) == 1, err.getvalue()
    assert "Traceback" not in err.getvalue()
    for word in words:
        assert word in lines[0], lines[0]
    assert _snapshot(tmp_path) == before, "something was written"
    assert not os.path.exists(tmp_path / "results")
