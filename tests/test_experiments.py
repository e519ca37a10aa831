"""The studies: each runs in its --smoke size; each findings table is rebuilt from its own CSVs by the
study's `claims()` and equals the committed findings.md; verdicts are numeric; no claim rests on a run
that does not fit or preempts."""
import importlib
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
RESULTS = EXPERIMENTS / "results"
STUDIES = ("study1_parallelism_dense", "study2_comm_patterns", "study3_multinode_allreduce",
           "study4_scaling_knee", "study5_survey_techniques", "cp_longcontext")
sys.path.insert(0, str(EXPERIMENTS))
findings = importlib.import_module("findings")


def study(name):
    return importlib.import_module(name)


@pytest.mark.parametrize("name", STUDIES)
def test_study_smoke_writes_csv_png_and_a_table_its_csvs_rebuild(name, tmp_path):
    out = tmp_path / name
    proc = subprocess.run([sys.executable, str(EXPERIMENTS / f"{name}.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(out.glob("*.csv")) and list(out.glob("*.png"))
    text = (out / "findings.md").read_text()
    claims, _, _ = study(name).claims(out)
    assert len(claims) >= 3, text
    assert findings.table(claims) == findings.table_in(text)


@pytest.mark.parametrize("name", STUDIES)
def test_committed_findings_table_is_rebuilt_from_the_committed_csvs(name):
    out = RESULTS / name
    claims, _, _ = study(name).claims(out)
    assert findings.table(claims) == findings.table_in((out / "findings.md").read_text())
    for c in claims:          # every row that differs says why, with its numbers
        assert c.verdict == "reproduced" or len(c.why) > 20, c.claim


@pytest.mark.parametrize("name", STUDIES)
def test_no_committed_run_that_a_claim_could_use_preempts_or_does_not_fit(name):
    checked = 0
    for csv in sorted((RESULTS / name).glob("*.csv")):
        if csv.name == "claims.csv":
            continue
        df = pd.read_csv(csv)
        if "preemptions" not in df:
            continue
        checked += 1
        ran = df[df.preemptions.notna()]           # rows not run (fits=False grid points) have no results
        assert (ran.preemptions == 0).all(), f"{csv.name}: runs that preempted"
        assert ran.fits.astype(bool).all(), f"{csv.name}: runs that do not fit"
    assert checked, f"{name}: no CSV records fits and preemptions"


def test_verdicts_come_from_the_numbers_alone():
    near = findings.near(2.0)                       # x/÷1.25: 1.6 .. 2.5
    assert findings.Claim("c", "2x", 2.0, 2.4, "x", near, "w").verdict == "reproduced"
    assert findings.Claim("c", "2x", 2.0, 2.6, "x", near, "w").verdict == "differs"
    assert findings.Claim("c", "2x", 2.0, math.nan, "x", near, "w").verdict == "differs"
    assert findings.Claim("c", "> 1", math.nan, 1.0, "x", findings.above(1.0), "w").verdict == "differs"
    assert findings.Claim("c", "< 1", math.nan, 0.9, "x", findings.below(1.0), "w").verdict == "reproduced"
    row = findings.table([findings.Claim("c", "2x", 2.0, 2.6, "x", near, "because 2.6 > 2.5")]).splitlines()[-1]
    assert "**differs**" in row and "because 2.6 > 2.5" in row and "1.30" in row


def test_run_all_lists_every_study():
    spec = importlib.util.spec_from_file_location("run_all", EXPERIMENTS / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert tuple(mod.STUDIES[:len(STUDIES)]) == STUDIES
    assert all((EXPERIMENTS / f"{s}.py").exists() for s in mod.STUDIES)


def test_accuracy_page_table_is_rebuilt_from_its_csv():
    accuracy = importlib.import_module("study6_accuracy")
    out = RESULTS / "study6_accuracy"
    points = pd.read_csv(out / "accuracy.csv")
    assert accuracy.table(points) in (out / "findings.md").read_text()
    held = points[points.component == "compute"].held_out.astype(bool)
    assert held.any() and (~held).any()           # held-out layers and fitted operators, reported apart


def test_accuracy_smoke_writes_parity_plot(tmp_path):
    proc = subprocess.run([sys.executable, str(EXPERIMENTS / "study6_accuracy.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "parity.png").exists()
    points = pd.read_csv(tmp_path / "accuracy.csv")
    assert {"compute", "collectives"} <= set(points.component)
