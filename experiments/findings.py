"""Findings tables: the paper's number, simserve's number, their ratio, a stated band, a numeric verdict.

A study builds its claims from its own CSVs (a `claims(out_dir)` function in each study script),
and `table(claims)` renders them. The verdict is computed here and nowhere else: "reproduced" when
simserve's value lies inside the band, "differs" outside it; no study passes a verdict in. Every
claim carries the reason it would differ (one sentence with its arithmetic, or a pointer to an open
modelling limit); the table prints it only for the rows that differ.

Bands (stated in every findings.md):
- `near(paper)`: within a factor 1.25 either way. Seed 003 reports its own simulator within 10%
  (prefill) and 14% (decode) of silicon on one GPU and 17.25% on TP8 (its Section 3); simserve's layer
  model is within 2.8% (bf16) / 7.0% (fp8) median of the measured H100 layers (tests/test_calibration.py).
  A factor 1.25 allows both errors; outside it, the two models disagree on the physics.
- `near_pts(paper)`: for a share or a reduction in percent, within 10 percentage points.
- `above(x)` / `below(x)`: the paper states only a direction or a bound ("PP > TP", "< 0.5%"); the
  bound is the paper's own, or the direction's threshold (1 for a ratio, 0 for a difference).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

REL = 1.25        # factor band; see the module docstring for where it comes from
PTS = 10.0        # percentage-point band for shares and reductions
HEADER = "| claim | paper | simserve | ratio | band | verdict | why it differs |"


@dataclass(frozen=True)
class Band:
    lo: float
    hi: float
    text: str
    strict: bool = False      # a direction ("> 1") excludes its bound; a tolerance band includes its ends

    def holds(self, x: float) -> bool:
        return self.lo < x < self.hi if self.strict else self.lo <= x <= self.hi


def near(paper: float, factor: float = REL) -> Band:
    lo, hi = sorted((paper / factor, paper * factor))
    return Band(lo, hi, f"x/÷{factor:g}")


def near_pts(paper: float, pts: float = PTS) -> Band:
    return Band(paper - pts, paper + pts, f"±{pts:g} pts")


def above(x: float) -> Band:
    return Band(x, math.inf, f"> {x:g}", strict=True)


def below(x: float) -> Band:
    return Band(-math.inf, x, f"< {x:g}", strict=True)


@dataclass(frozen=True)
class Claim:
    claim: str
    paper_text: str           # what the paper says, as it says it
    paper: float              # the paper's number (nan: the paper states a direction only)
    simserve: float           # simserve's number, same quantity and unit
    unit: str                 # "x", "%", "s", "ms", "tok/s", ...
    band: Band
    why: str                  # the physical reason it differs (shown only when it does)
    alternative: bool = False  # another reading of the same paper number, shown beside the one the paper's
    #                            text supports; its verdict is printed but not counted in the headline

    @property
    def verdict(self) -> str:
        if self.simserve is None or not math.isfinite(self.simserve):
            return "differs"
        return "reproduced" if self.band.holds(self.simserve) else "differs"

    @property
    def ratio(self) -> float:
        if not math.isfinite(self.paper) or self.paper == 0:
            return math.nan
        return self.simserve / self.paper


def fmt(value: float, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "":
        return f"{value:.3g}"
    return f"{value:.3g} {unit}"


def table(claims: list[Claim]) -> str:
    """The findings table, one row per claim; the only place a verdict is computed."""
    lines = [HEADER, "|---|---|---|---|---|---|---|"]
    for c in claims:
        ratio = "—" if not math.isfinite(c.ratio) else f"{c.ratio:.2f}"
        verdict = "reproduced" if c.verdict == "reproduced" else "**differs**"
        why = c.why if c.verdict == "differs" else ""
        lines.append(f"| {'(alternative reading) ' if c.alternative else ''}{c.claim} | {c.paper_text} | {fmt(c.simserve, c.unit)} | {ratio} | "
                     f"{c.band.text} | {verdict} | {why} |")
    return "\n".join(lines)


def counts(claims: list[Claim]) -> dict[str, int]:
    """Verdicts of the claims as the paper's text supports them (alternative readings apart)."""
    out = {"reproduced": 0, "differs": 0, "alternative": 0}
    for c in claims:
        out["alternative" if c.alternative else c.verdict] += 1
    return out


def to_frame(claims: list[Claim]) -> pd.DataFrame:
    rows = []
    for c in claims:
        d = asdict(c)
        band = d.pop("band")
        rows.append({**d, "band": band["text"], "band_lo": band["lo"], "band_hi": band["hi"],
                     "band_strict": band["strict"],
                     "ratio": c.ratio, "verdict": c.verdict})
    return pd.DataFrame(rows)


def valid_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs that were simulated, fit memory and preempted nothing (the only rows a claim
    may use). A row that was not run (fits False, no results) is dropped, not counted."""
    ok = df
    if "fits" in ok:
        ok = ok[ok.fits.astype(bool)]
    if "preemptions" in ok:
        ok = ok[ok.preemptions.fillna(0) == 0]
    return ok


def run_check(frames: dict[str, pd.DataFrame]) -> str:
    """One sentence for the setup: how many runs, and that every run a claim uses fits and did not
    preempt (a test, tests/test_experiments.py, checks the same on the CSVs)."""
    runs = sum(int(f.fits.astype(bool).sum()) if "fits" in f else len(f) for f in frames.values())
    bad = sum(len(f) - len(valid_runs(f)) for f in frames.values())
    skipped = sum(int((~f.fits.astype(bool)).sum()) for f in frames.values() if "fits" in f)
    text = (f"Baselines checked: {runs} simulated runs; each was checked to fit in memory (the weights, and "
            f"for a static batch the whole batch's KV cache at once) and to finish with zero preemptions "
            f"before any claim uses it")
    if skipped:
        text += f"; {skipped} grid points that do not fit were not run (fits=False in the CSV)"
    if bad - skipped > 0:
        text += f"; **{bad - skipped} runs preempted and are excluded**"
    return text + "."


@dataclass
class Page:
    """findings.md: setup, the claims table, notes."""
    title: str
    source: str
    setup: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def write(self, out: Path, claims: list[Claim], smoke: bool, started: float, script: str) -> Path:
        lines = [f"# {self.title}", "", f"Source: {self.source}", ""]
        if smoke:
            lines += ["**Smoke run** (`--smoke`): tiny sizes, numbers are not meaningful.", ""]
        n = counts(claims)
        lines += ["## Setup", "", *[f"- {s}" for s in self.setup],
                  f"- Verdicts are numeric: 'reproduced' when simserve's value lies in the band, 'differs' "
                  f"otherwise. Bands: x/÷{REL:g} for a number (seed 003's own simulator is within 10-17% "
                  f"of silicon, simserve's layers within 5-8% median of measured ones), ±{PTS:g} points "
                  f"for a percentage, the paper's own bound or direction where it gives no number "
                  f"(experiments/findings.py).", "",
                  "## Claims", "", f"{n['reproduced']} reproduced, {n['differs']} differ"
                  + (f" (and {n['alternative']} alternative readings, marked, not counted)" if n["alternative"] else "")
                  + ".", "",
                  table(claims)]
        if self.notes:
            lines += ["", "## Notes", "", *[f"- {t}" for t in self.notes]]
        lines += ["", f"_Generated by `{script}`; the table is rebuilt from this folder's CSVs by the study's "
                      f"`claims()` (`python experiments/findings.py` rewrites it without rerunning)._", ""]
        to_frame(claims).to_csv(out / "claims.csv", index=False)
        path = out / "findings.md"
        path.write_text("\n".join(lines))
        return path


def table_in(text: str) -> str:
    """The claims table of a findings.md (for the test that rebuilds it)."""
    lines = text.splitlines()
    start = lines.index(HEADER)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end])


def publish(out: Path, title: str, source: str, claims_fn, smoke: bool, started: float, script: str) -> Path:
    """Build the claims from out's CSVs (the study's `claims`) and write findings.md and claims.csv."""
    found, setup, notes = claims_fn(out)
    return Page(title, source, setup, notes).write(out, found, smoke, started, script)


def rebuild(names: list[str], results: Path) -> None:
    """Rewrite findings.md of committed results from their CSVs, without rerunning a simulation
    (`python experiments/findings.py [study ...]`), e.g. after a reason's wording changed."""
    import importlib

    for name in names:
        mod = importlib.import_module(name)
        out = results / name
        smoke = "**Smoke run**" in (out / "findings.md").read_text()
        publish(out, mod.TITLE, mod.SOURCE, mod.claims, smoke, time.perf_counter(), f"{name}.py")


if __name__ == "__main__":
    import sys

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from run_all import STUDIES

    names = [s for s in sys.argv[1:] if s != "--summary"] or [s for s in STUDIES if s != "study6_accuracy"]
    if "--summary" in sys.argv:
        for name in names:
            frame = pd.read_csv(here / "results" / name / "claims.csv")
            main = frame[~frame.alternative.astype(bool)]
            print(f"{name}: {int((main.verdict == 'reproduced').sum())} reproduced, "
                  f"{int((main.verdict == 'differs').sum())} differ; alternative readings: "
                  f"{int(frame.alternative.astype(bool).sum())}")
    else:
        rebuild(names, here / "results")
