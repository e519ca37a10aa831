"""experiments/validate_e2e.py: every measurement row is well formed, and a smoke run writes its outputs."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

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


def test_catalog_host_costs_are_the_fitted_scales_of_the_priors():
    """Each fitted runtime's YAML holds prior x the scale the committed fit chose (results.csv), so the
    `simulated` column is what a user of the shipped runtime gets, and a refit starts from the priors."""
    from simserve.runtime import get_runtime

    df = pd.read_csv(ROOT / "experiments/results/validate_e2e/results.csv")
    for name, part in df.groupby("runtime"):
        assert part.fixed_scale.nunique() == 1 and part.per_scale.nunique() == 1, name
        want = validate_e2e.prior_host(name, (part.fixed_scale.iloc[0], part.per_scale.iloc[0]))
        host = get_runtime(name).host
        for key, value in want.items():
            assert getattr(host, key) == pytest.approx(value, rel=1e-9), (name, key)
        # so the table's two columns agree: the fit's runtime is the shipped one
        assert part.simulated.to_numpy() == pytest.approx(part.simulated_catalog.to_numpy(), rel=1e-6), name
