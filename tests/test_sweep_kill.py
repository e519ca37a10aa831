"""Sweeps survive kills and neighbours: workers die with their parent, a killed worker is one
failed point (the rerun fixes it with one row), and a second sweep into a busy folder refuses."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from simserve.cli import main

ROOT = Path(__file__).resolve().parents[1]
# A worker is handed its point as soon as it starts, and importing the simulator alone takes over a
# second, so a worker killed as soon as it appears dies with its point unfinished. SLOW: a point of
# a few seconds (exact fidelity, 600 requests: ~2.5 s on one core), for the lock test.
SMALL = {"model": "llama-3.1-8b",
         "workload": {"lengths": {"isl": 128, "osl": 8}, "arrivals": {"process": "batch"}, "num_requests": 8}}
SLOW = {"model": "llama-3.1-8b", "fidelity": "exact",
        "workload": {"lengths": {"isl": 256, "osl": 64}, "arrivals": {"process": "poisson", "rate": 40.0},
                     "num_requests": 600}}


def write_sweep(tmp_path, seeds, base=SMALL):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": base, "grid": {"seed": list(seeds)}}))
    return path


def start_sweep(tmp_path, sweep, *extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "simserve.cli", "sweep", str(sweep), "--out",
                             str(tmp_path / "out"), "--quiet", *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def children(pid: int) -> set[int]:
    """Live descendants of pid, from /proc (zombies count as gone)."""
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            for k in kids:
                if k not in out:
                    out.add(k)
                    todo.append(k)
    return {k for k in out if alive(k)}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_for(cond, timeout_s: float, step_s: float = 0.1):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(step_s)
    return cond()


def pool_workers(proc, count: int) -> set[int]:
    """The sweep's worker processes (multiprocessing spawn children), once `count` exist."""
    def workers():
        found = set()
        for k in children(proc.pid):
            try:
                if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text():
                    found.add(k)
            except OSError:
                pass
        return found if len(found) >= count else set()
    return wait_for(workers, 60, step_s=0.02)


pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")


def test_killing_the_parent_takes_the_workers_with_it(tmp_path):
    proc = start_sweep(tmp_path, write_sweep(tmp_path, range(4), base=SLOW), "--workers", "2")
    workers = pool_workers(proc, 2)
    assert len(workers) == 2, workers
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the parent watch polls every 0.5 s (simserve.pool.WATCH_S): well under 5 s
    left = wait_for(lambda: not any(alive(w) for w in workers), 5.0)
    assert left, [w for w in workers if alive(w)]


def test_a_killed_worker_is_one_failed_point_and_the_rerun_fixes_it(tmp_path):
    sweep = write_sweep(tmp_path, range(3))
    proc = start_sweep(tmp_path, sweep, "--workers", "2")
    victim = min(pool_workers(proc, 2))
    os.kill(victim, signal.SIGKILL)           # it holds its first point, unfinished
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err           # finished, with a failed point
    assert "1 point(s) failed" in err
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(df) == 3 and df.point.is_unique
    assert (df.status == "failed").sum() == 1 and (df.status == "ok").sum() == 2
    assert "worker process died" in df[df.status == "failed"].error.iloc[0]
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "out"), "--quiet", "--workers", "1"]) == 0
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(df) == 3 and df.point.is_unique and (df.status == "ok").all()


def test_a_second_sweep_into_a_busy_folder_refuses(tmp_path, capsys):
    sweep = write_sweep(tmp_path, range(2), base=SLOW)
    proc = start_sweep(tmp_path, sweep, "--workers", "1")
    try:                                    # the header is written under the lock, before any point runs
        assert wait_for(lambda: (tmp_path / "out" / "results.csv").exists(), 60)
        code = main(["sweep", str(sweep), "--out", str(tmp_path / "out"), "--quiet"])
        assert code == 2
        line = capsys.readouterr().err.strip()
        assert "another sweep" in line and str(proc.pid) in line and len(line.splitlines()) == 1
    finally:
        proc.kill()
        proc.wait()
