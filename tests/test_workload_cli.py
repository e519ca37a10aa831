"""`simserve workload describe`: table, --json keys, --plot, --format, and exit code 2 on bad input."""
import json

import pytest

from simserve.cli import main


def run_cli(capsys, *argv):
    code = main(["workload", "describe", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_the_contract_keys(capsys):
    code, out, _ = run_cli(capsys, "workloads/AzureLLMInferenceTrace_conv.csv.gz", "--json")
    stats = json.loads(out)
    assert code == 0
    assert stats["requests"] == 19366 and stats["rate_per_s"] == pytest.approx(5.530, abs=5e-4)
    for side in ("isl", "osl"):
        assert {"mean", "p50", "p99"} <= set(stats[side])
    assert {"duration_s", "interarrival_cv"} <= set(stats)


def test_table_for_a_profile(capsys):
    code, out, _ = run_cli(capsys, "longalpaca")
    assert code == 0 and "mean 9,092.0" in out and "seed 003" in out


def test_plot_writes_a_png(capsys, tmp_path):
    png = tmp_path / "conv.png"
    code, _, _ = run_cli(capsys, "AzureLLMInferenceTrace_conv.csv.gz", "--plot", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, _ = run_cli(capsys, "bbh-gsm8k-humaneval", "--plot", str(tmp_path / "bbh.png"))
    assert code == 0 and (tmp_path / "bbh.png").stat().st_size > 1000


def test_format_flag_overrides_detection(capsys, tmp_path):
    path = tmp_path / "lengths.txt"
    path.write_text("num_prefill_tokens,num_decode_tokens\n10,2\n20,4\n")
    code, out, _ = run_cli(capsys, str(path), "--format", "vidur", "--json")
    assert code == 0 and json.loads(out)["isl"]["mean"] == 15.0


@pytest.mark.parametrize("argv, message", [
    (["nope.csv"], "nope.csv is neither a file, a bundled trace nor a length profile"),
    (["BAD"], "BAD: line 3: ContextTokens is -5, must be a positive integer"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "BAD").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                  "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,-5,44\n")
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err
