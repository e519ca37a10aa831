"""experiments/validate_e2e.py: every measurement row is well formed, and a smoke run writes its outputs."""
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import validate_e2e  # noqa: E402


def test_rows_cite_a_source_and_at_most_half_are_fitted():
    rows = [dict(m) for m in validate_e2e.MEASUREMENTS]
    assert len(rows) >= 15 and len({m["id"] for m in rows}) == len(rows)
    assert all(m["source"] and m["measured"] > 0 and m["engine_version"] for m in rows)
    validate_e2e.split(rows)
    for runtime in {m["runtime"] for m in rows}:
        mine = [m for m in rows if m["runtime"] == runtime]
        assert sum(m["role"] == "fit" for m in mine) <= len(mine) / 2


def test_committed_results_match_the_table():
    df = pd.read_csv(ROOT / "experiments/results/validate_e2e/results.csv")
    assert set(df.id) == {m["id"] for m in validate_e2e.MEASUREMENTS}
    assert {"measured", "simulated", "role", "runtime", "source"} <= set(df.columns)


def test_smoke_run_writes_table_and_plot(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "experiments/validate_e2e.py"), "--smoke", "--out", str(tmp_path)],
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "results.csv").exists() and (tmp_path / "parity.png").exists()
    assert "Held out" in (tmp_path / "findings.md").read_text()
