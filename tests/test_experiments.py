"""Every study script runs in its --smoke size and writes CSV, PNG and a findings.md with claims."""
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
STUDIES = ("study1_parallelism_dense", "study2_comm_patterns", "study3_multinode_allreduce",
           "study4_scaling_knee", "study5_survey_techniques")


@pytest.mark.parametrize("study", STUDIES)
def test_study_smoke_writes_csv_png_and_findings(study, tmp_path):
    out = tmp_path / study
    proc = subprocess.run([sys.executable, str(EXPERIMENTS / f"{study}.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(out.glob("*.csv")), "no CSV"
    assert list(out.glob("*.png")), "no PNG"
    text = (out / "findings.md").read_text()
    assert "| claim | paper | simserve | trend holds |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    assert len(rows) >= 3, text


def test_run_all_lists_every_study():
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location("run_all", EXPERIMENTS / "run_all.py")
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert tuple(mod.STUDIES) == STUDIES
    assert all((EXPERIMENTS / f"{s}.py").exists() for s in STUDIES)
