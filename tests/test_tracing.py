"""trace.json: valid trace event format, GPU slices never overlap, and a GPU's slices add up to
its busy time in the summary."""
import json
from collections import defaultdict

import pytest

from simserve.cli import main
from simserve.errors import SimserveError
from simserve.export import write_results
from simserve.plots import RunData
from simserve.simulation import simulate
from simserve.tracing import parse_window, trace_document, write_trace

WORKLOAD = {"lengths": {"isl": 256, "osl": 32}, "arrivals": {"process": "poisson", "rate": 5}, "num_requests": 50}
CONFIGS = {"one-gpu": {"workload": WORKLOAD},
           "tp2-pp2": {"parallelism": {"tp": 2, "pp": 2}, "workload": WORKLOAD},
           "dp2": {"parallelism": {"dp": 2}, "workload": WORKLOAD}}
LINK_TID = 100000          # tracing puts P2P link threads at and above this tid
# Slices are laid end to end in microseconds: a slice's ts + dur can exceed the next ts by float
# rounding only, below 1e-6 us at these times (a few seconds = a few 1e6 us, ulp ~1e-9 us).
OVERLAP_TOL_US = 1e-6


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def result(request):
    return simulate(CONFIGS[request.param])


@pytest.fixture(scope="module")
def trace(result, tmp_path_factory):
    path = write_trace(result, tmp_path_factory.mktemp("trace") / "trace.json")
    with open(path) as f:
        return json.load(f)


def slices_by_track(events):
    tracks = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            tracks[(e["pid"], e["tid"])].append(e)
    return tracks


def test_trace_follows_the_event_format(trace):
    events = trace["traceEvents"]
    assert events and trace["displayTimeUnit"] == "ms"
    for e in events:
        assert e["ph"] in {"X", "b", "e", "n", "M"}
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int) and isinstance(e["name"], str)
        if e["ph"] == "M":
            assert e["name"] in {"process_name", "thread_name", "process_sort_index", "thread_sort_index"}
            continue
        assert isinstance(e["ts"], float) and e["ts"] >= 0
        if e["ph"] == "X":
            assert isinstance(e["dur"], float) and e["dur"] >= 0
        else:
            assert e["cat"] == "request" and isinstance(e["id"], int)


def test_request_async_slices_are_balanced(result, trace):
    # per request, begins and ends nest like brackets, in file order, with time never going back
    stacks = defaultdict(list)
    last_ts = defaultdict(float)
    for e in (e for e in trace["traceEvents"] if e["ph"] in "be"):
        assert e["ts"] >= last_ts[e["id"]]
        last_ts[e["id"]] = e["ts"]
        if e["ph"] == "b":
            stacks[e["id"]].append(e["name"])
        else:
            assert stacks[e["id"]] and stacks[e["id"]].pop() == e["name"], e
    assert not any(stacks.values())
    starts = [e for e in trace["traceEvents"] if e["ph"] == "b" and e["name"].startswith("request ")]
    assert len(starts) == (result.requests.status != "rejected").sum()
    first = result.requests.iloc[0]
    phases = {e["name"]: e["ts"] for e in trace["traceEvents"] if e["ph"] == "b" and e.get("id") == 0}
    assert phases["queued"] == first.arrival_s * 1e6 and phases["decode"] == first.first_token_s * 1e6


def test_slices_on_one_track_never_overlap(trace):
    for track, slices in slices_by_track(trace["traceEvents"]).items():
        slices.sort(key=lambda e: e["ts"])
        for a, b in zip(slices, slices[1:]):
            assert a["ts"] + a["dur"] <= b["ts"] + OVERLAP_TOL_US, (track, a, b)


def test_compute_slices_add_up_to_the_summary(result, trace):
    s = result.summary
    tracks = slices_by_track(trace["traceEvents"])
    # one track per stage stands for its args.gpus GPUs
    compute_s = sum(e["dur"] * e["args"]["gpus"] for (pid, tid), sl in tracks.items() if tid < LINK_TID
                    for e in sl if e["cat"] == "compute") / 1e6
    # summed over ~10^3-10^4 slices, each scaled to us and back: relative error far below 1e-9
    assert compute_s == pytest.approx(s["time_breakdown"]["compute"] * s["num_gpus"] * s["sim_time_s"], rel=1e-9)
    for stage in s["stages"]:
        busy = sum(e["dur"] for e in tracks[(stage["replica"] + 1, 1 + stage["gpus"][0])]) / 1e6
        assert busy == pytest.approx(stage["busy_s"], rel=1e-9)
        for gpu in stage["gpus"][1:]:          # no per-GPU copies
            assert (stage["replica"] + 1, 1 + gpu) not in tracks


def test_pipeline_transfers_have_link_tracks(result, trace):
    links = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "p2p"]
    expected = (result.timeline.kind == "p2p").sum()
    assert len(links) == expected
    if expected:
        names = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name" and e["tid"] >= LINK_TID}
        assert "P2P stage 0 -> 1" in names and "P2P stage 1 -> 0" in names


def test_window_limits_and_clips_the_trace(result):
    full = trace_document(result)["traceEvents"]
    start, end = 2.0, 4.0
    part = trace_document(result, (start, end))["traceEvents"]
    timed = [e for e in part if e["ph"] != "M"]
    assert 0 < len(timed) < len([e for e in full if e["ph"] != "M"])
    for e in timed:
        assert start * 1e6 <= e["ts"] <= end * 1e6
        if e["ph"] == "X":
            assert e["ts"] + e["dur"] <= end * 1e6 + OVERLAP_TOL_US


def test_trace_from_a_saved_folder_equals_the_in_memory_one(tmp_path):
    r = simulate(CONFIGS["tp2-pp2"])
    write_results(r, tmp_path)
    saved = trace_document(RunData.from_dir(tmp_path))["traceEvents"]
    live = trace_document(r)["traceEvents"]
    x_saved = [(e["tid"], e["ts"], e["dur"]) for e in saved if e["ph"] == "X"]
    x_live = [(e["tid"], e["ts"], e["dur"]) for e in live if e["ph"] == "X"]
    assert x_saved == x_live          # timeline.csv.gz keeps 17 digits: exact round trip


def test_parse_window():
    assert parse_window("10:20") == (10.0, 20.0)
    assert parse_window(":5") == (0.0, 5.0)
    assert parse_window("5:")[1] == float("inf")
    assert parse_window(None) is None
    for bad in ("20:10", "abc", "1:2:3", "-1:2"):
        with pytest.raises(SimserveError):
            parse_window(bad)


def test_run_trace_cli(tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text("workload: {lengths: {isl: 256, osl: 32}, arrivals: {process: poisson, rate: 5}, "
                   "num_requests: 30}\n")
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--trace-window", "1:2", "--quiet"]) == 0
    doc = json.loads((out / "trace.json").read_text())
    assert doc["otherData"]["window_s"] == [1.0, 2.0]
    assert main(["run", str(cfg), "--out", str(out), "--trace-window", "2:1", "--quiet"]) == 2
    assert main(["trace", str(out), "--out", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["traceEvents"]


def test_long_run_trace_defaults_to_a_window_and_big_traces_warn(tmp_path, capsys, monkeypatch):
    """A run longer than DEFAULT_WINDOW_S traced without a window keeps its first DEFAULT_WINDOW_S;
    a trace above WARN_BYTES is written with a one-line warning naming --trace-window."""
    import json as _json

    import yaml

    from simserve import tracing
    from simserve.cli import main

    cfg = tmp_path / "long.yaml"          # ~90 s of arrivals at 1 request/s
    cfg.write_text(yaml.safe_dump({"model": "llama-3.1-8b", "workload": {
        "lengths": {"isl": 64, "osl": 4}, "arrivals": {"process": "poisson", "rate": 1.0}, "num_requests": 90}}))
    monkeypatch.setattr(tracing, "WARN_BYTES", 1000)
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--trace"]) == 0
    captured = capsys.readouterr()
    summary = _json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sim_time_s"] > tracing.DEFAULT_WINDOW_S
    assert f"the first {tracing.DEFAULT_WINDOW_S:g} s" in captured.out
    doc = _json.loads((tmp_path / "out" / "trace.json").read_text())
    assert doc["otherData"]["window_s"] == [0.0, tracing.DEFAULT_WINDOW_S]
    assert max(e["ts"] + e.get("dur", 0) for e in doc["traceEvents"] if "ts" in e) <= tracing.DEFAULT_WINDOW_S * 1e6
    warning = [ln for ln in captured.err.splitlines() if "warning" in ln]
    assert len(warning) == 1 and "--trace-window" in warning[0]
    assert tracing.default_window(10.0, None) is None and tracing.default_window(100.0, (1.0, 2.0)) == (1.0, 2.0)
