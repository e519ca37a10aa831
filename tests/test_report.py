"""The HTML report is one self-contained file (nothing fetched over the network); the progress
bar shows progress without changing the simulation."""
import io
import re
from html.parser import HTMLParser

import pytest
import simpy

from simserve import progress
from simserve.cli import main
from simserve.export import write_results
from simserve.plots import RunData
from simserve.report import render, write_report
from simserve.simulation import simulate

WORKLOAD = {"lengths": {"isl": 256, "osl": 32}, "arrivals": {"process": "poisson", "rate": 5}, "num_requests": 50}


class Links(HTMLParser):
    """Every URL-carrying attribute and every element that could fetch something."""

    def __init__(self):
        super().__init__()
        self.urls, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in {"src", "href", "xlink:href", "srcset", "action", "data", "poster"}:
                self.urls.append(value or "")


def assert_self_contained(text: str) -> None:
    parser = Links()
    parser.feed(text)
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    for url in parser.urls:   # only inline images and in-document references
        assert url.startswith(("data:", "#")), url
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, flags=re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", text, flags=re.I)
    assert "@import" not in text


@pytest.fixture(scope="module")
def result():
    return simulate({"parallelism": {"tp": 2, "pp": 2}, "workload": WORKLOAD})


def test_report_is_one_self_contained_file(result, tmp_path):
    path = write_report(result, tmp_path / "report.html")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    text = path.read_text()
    assert_self_contained(text)
    assert text.count("src='data:image/png;base64,") == 4      # the four figures of a run
    assert f"{result.summary['ttft']['p99'] * 1e3:,.2f}" in text    # the summary table's TTFT p99 (ms)
    assert "tensor_parallel" not in text and "pp: 2" in text         # the resolved config


def test_report_with_inline_svg_is_self_contained(result):
    text = render(result, fmt="svg")
    assert_self_contained(text)
    assert text.count("<svg") == 4 and "<!DOCTYPE svg" not in text


def test_report_cli_from_folders(result, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_results(result, a)
    write_results(simulate({"workload": WORKLOAD}), b)
    assert main(["report", str(a)]) == 0
    assert_self_contained((a / "report.html").read_text())
    out = tmp_path / "both.html"
    assert main(["report", str(a), str(b), "--labels", "tp2pp2,tp1", "--out", str(out)]) == 0
    text = out.read_text()
    assert_self_contained(text)
    assert "tp2pp2" in text and "tp1" in text
    assert main(["report", str(tmp_path / "nothing")]) == 2
    RunData.from_dir(a)      # the folder still reads back after the report was added


# -- progress ----------------------------------------------------------------------------------
def _toy_run(track_it: bool, stream=None):
    """A SimPy world of 200 jobs; returns finish times, event count and the stream's text."""
    env = simpy.Environment()
    finished = []
    count = {"events": 0}
    original = env.schedule

    def counting_schedule(event, priority=1, delay=0):
        count["events"] += 1
        original(event, priority, delay)
    env.schedule = counting_schedule

    def job(i):
        yield env.timeout(i * 0.01)
        yield env.timeout(0.5 + (i % 7) * 0.1)
        finished.append((i, env.now))

    for i in range(200):
        env.process(job(i))
    if track_it:
        from rich.console import Console
        console = Console(file=stream, force_terminal=True, width=120)
        with progress.track(env, total=200, done=lambda: len(finished), enabled=True, refresh_s=0.0,
                            check_every=50, console=console) as tracker:
            assert tracker is not None
            env.run()
        assert "step" not in vars(env)          # the wrapper is removed afterwards
    else:
        env.run()
    return finished, count["events"]


def test_progress_bar_changes_nothing_in_the_simulation():
    stream = io.StringIO()
    plain = _toy_run(False)
    tracked = _toy_run(True, stream)
    assert tracked == plain                     # same finish times, same number of events
    assert "requests" in stream.getvalue()      # it did draw


def test_progress_is_quiet_off_a_terminal():
    assert progress.should_show(None, io.StringIO()) is False
    assert progress.should_show(False) is False and progress.should_show(True) is True
    env = simpy.Environment()
    with progress.track(env, total=1, done=lambda: 0, enabled=False) as tracker:
        assert tracker is None and "step" not in vars(env)


def test_progress_lines_without_a_bar_do_not_change_the_run(capsys, monkeypatch):
    """With LINES_EVERY_S set and no bar, a long run prints plain stderr lines; results identical."""
    from simserve import progress
    from simserve.simulation import simulate

    cfg = {"model": "llama-3.1-8b", "fidelity": "exact", "parallelism": {"tp": 2},  # tp: >4096 events
           "workload": {"lengths": {"isl": 128, "osl": 8}, "arrivals": {"process": "poisson", "rate": 20.0},
                        "num_requests": 4}}
    quiet = simulate(cfg)
    monkeypatch.setattr(progress, "LINES_EVERY_S", 0.0)       # every check: at least one line
    loud = simulate(cfg, show_progress=False)
    err = capsys.readouterr().err
    assert "simserve: simulating:" in err and "/4 requests" in err
    assert loud.summary["events"] == quiet.summary["events"]
    assert loud.requests.equals(quiet.requests)
