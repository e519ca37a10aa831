"""The command line: the documented commands work, and bad input gets one line and exit code 2."""
import json
import subprocess
import sys

import pytest

from simserve.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "simserve.cli", *args], capture_output=True, text=True)


def small_config(tmp_path, body: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(body)
    return path


SMALL = """
model: llama-3.1-8b
workload:
  lengths: {isl: 256, osl: 16}
  arrivals: {process: poisson, rate: 5.0}
  num_requests: 20
"""


def test_run_writes_summary_and_requests(tmp_path):
    cfg = small_config(tmp_path, SMALL)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--set", "scheduler.max_batch_size=4", "--seed", "3",
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("num_requests", "num_completed", "num_rejected", "ttft", "tpot", "itl", "e2e", "queue_delay",
                "throughput_output_tokens_per_s", "throughput_requests_per_s", "goodput_requests_per_s",
                "time_breakdown", "bytes_moved", "gpu_utilization", "kv_peak_utilization", "preemptions",
                "sim_time_s", "wall_time_s", "events"):
        assert key in summary, key
    assert summary["num_completed"] == 20
    lines = (out / "requests.csv").read_text().splitlines()
    assert len(lines) == 21 and lines[0].startswith("request_id,")
    assert "max_batch_size: 4" in (out / "config.yaml").read_text()


def assert_clean_failure(result, out, *needles):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.parametrize("body, needles", [
    (SMALL + "schedular: {policy: vllm}\n", ["unknown key 'schedular'", "scheduler"]),
    (SMALL.replace("llama-3.1-8b", "llama-9"), ["unknown model 'llama-9'"]),
    (SMALL.replace("isl: 256", "isl: -5"), ["isl"]),
    (SMALL.replace("rate: 5.0", "rate: 0"), ["rate"]),
    (SMALL.replace("llama-3.1-8b", "llama-3.1-405b"), ["does not fit", "short by"]),
    (SMALL + "parallelism: {tp: 3}\n", ["tp"]),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, body, needles):
    out = tmp_path / "out"
    assert_clean_failure(run_cli("run", str(small_config(tmp_path, body)), "--out", str(out)), out, *needles)


def test_malformed_trace_row_names_the_line(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2023-11-16 18:15:46.6805900,374,44\n"
                     "2023-11-16 18:15:50.9951690,abc,109\n")
    cfg = small_config(tmp_path, f"workload: {{trace: {trace}}}\n")
    out = tmp_path / "out"
    assert_clean_failure(run_cli("run", str(cfg), "--out", str(out)), out, "line 3")


def test_unknown_set_key_and_missing_config(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run_cli("run", str(tmp_path / "nope.yaml"), "--out", str(out)), out, "not found")
    cfg = small_config(tmp_path, SMALL)
    assert_clean_failure(run_cli("run", str(cfg), "--out", str(out), "--set", "scheduler.policy=fifo"), out,
                         "scheduler.policy")


def test_estimate_prints_the_documented_json():
    r = run_cli("estimate", "--model", "llama-3.1-70b", "--hardware", "h100", "--precision", "fp8", "--tp", "2",
                "--batch", "32", "--isl", "2048", "--osl", "128")     # the README's example
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["prefill"]["time_s"] > d["decode"]["time_s"] > 0
    for step in ("prefill", "decode"):
        names = {op["name"] for op in d[step]["operators"]}
        assert {"qkv_proj", "gate_up_proj", "lm_head"} <= names
        assert all({"name", "flops", "bytes", "time_s"} <= set(op) for op in d[step]["operators"])
        assert "communication_s" in d[step]
    for key in ("weights_bytes", "kv_bytes_per_token", "kv_capacity_tokens", "max_batch"):
        assert key in d["memory"]


def test_estimate_bad_input():
    r = run_cli("estimate", "--model", "llama-3.1-70b", "--hardware", "h100", "--tp", "3")
    assert r.returncode == 2 and "tp=3" in r.stderr
    r = run_cli("estimate", "--model", "llama-3.1-70b", "--hardware", "tpu")
    assert r.returncode == 2 and "unknown hardware" in r.stderr


def test_catalog_lists_everything():
    r = run_cli("catalog", "--json")
    data = json.loads(r.stdout)
    assert {"h100-sxm", "h200", "b200", "a100-80gb", "mi300x", "mi325x", "mi355x"} <= set(data["hardware"])
    assert {"llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "mixtral-8x7b", "mixtral-8x22b",
            "qwen3-30b-a3b", "deepseek-v3"} <= set(data["models"])


def test_out_must_be_empty_unless_force_which_clears_it(tmp_path, capsys):
    cfg = small_config(tmp_path, SMALL)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--plots"]) == 0
    assert (out / "plots").is_dir()
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2       # not empty: refused
    assert "--force" in capsys.readouterr().err
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--force"]) == 0
    assert not (out / "plots").exists() and (out / "summary.json").is_file()   # the old run's plots are gone


def test_every_documented_command_is_registered():
    """The CLI contract (docs/architecture.md): a subcommand whose module failed to import must not
    vanish silently from the parser."""
    from simserve.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command" or getattr(a, "choices", None))
    for name in ("run", "sweep", "plan", "estimate", "collective", "profile", "catalog", "workload",
                 "plot", "report", "trace"):
        assert name in sub.choices, name
