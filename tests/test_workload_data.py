"""Bundled data: every trace and profile loads, and matches the numbers recorded in SOURCES.md.

The tables are parsed from SOURCES.md itself, so the document and the data cannot drift apart.
"""
import math
import re

import numpy as np
import pytest

from simserve.workload import BUNDLED_DIR, PROFILES, describe
from simserve.workload.lengths import sample_profile
from simserve.workload.profiles import clipped_lognormal_mean, lognormal_mu_for_clipped_mean

SOURCES = (BUNDLED_DIR / "SOURCES.md").read_text()
PROFILE_SAMPLES = 20_000
MEAN_TOLERANCE = 0.03    # the requirement: sampled mean within 3% of the published average


def markdown_table(first_header_cell: str) -> list[dict]:
    lines = SOURCES.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header_cell} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


TRACES = markdown_table("file")
PROFILE_ROWS = markdown_table("profile")


def assert_shown(shown: str, actual, what: str):
    """`actual` rounds to the number as SOURCES.md shows it: within half a unit of its last digit."""
    if shown == "n/a":
        assert actual is None, what
        return
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    assert abs(actual - float(shown)) <= 0.5 * 10 ** -decimals + 1e-9, f"{what}: {actual} shown as {shown}"


def test_every_bundled_file_is_in_the_table():
    bundled = sorted(p.name for p in BUNDLED_DIR.glob("*.gz"))
    assert sorted(r["file"] for r in TRACES) == bundled


@pytest.mark.parametrize("row", TRACES, ids=lambda r: r["file"])
def test_bundled_trace_statistics_match_sources_md(row):
    stats = describe(row["file"])
    assert stats["format"] == row["format"]
    assert stats["requests"] == int(row["rows"])
    for key, column in [("duration_s", "duration s"), ("rate_per_s", "rate req/s"),
                        ("interarrival_cv", "inter-arrival CV"), ("peak_1min_rate_per_s", "peak_1min req/s")]:
        assert_shown(row[column], stats[key], f"{row['file']} {key}")
    for side in ("isl", "osl"):
        label = side.upper()
        assert_shown(row[f"{label} mean"], stats[side]["mean"], f"{row['file']} {side} mean")
        assert stats[side]["p50"] == int(row[f"{label} p50"])
        assert stats[side]["p99"] == int(row[f"{label} p99"])
        low, high = row[f"{label} min–max"].split("–")
        assert (stats[side]["min"], stats[side]["max"]) == (int(low), int(high))


def test_mooncake_prefix_blocks_match_sources_md():
    stats = describe("conversation_trace.jsonl.gz")
    blocks = int(re.search(r"holds ([\d,]+) prefix blocks", SOURCES).group(1).replace(",", ""))
    assert stats["prefix_blocks"] == blocks


def test_every_profile_is_in_the_table_with_its_average():
    canonical = {p.name for p in PROFILES.values()}
    assert sorted(r["profile"] for r in PROFILE_ROWS) == sorted(canonical)
    for row in PROFILE_ROWS:
        profile = PROFILES[row["profile"]]
        assert profile.kind == row["kind"]
        assert profile.isl_mean_tokens == float(row["ISL mean"])
        assert profile.osl_mean_tokens == float(row["OSL mean"])
        if profile.kind == "empirical":
            assert profile.file == row["data"]


def test_seed003_table2_averages():
    """The fitted profiles carry Table 2 of seed 003 (arXiv:2603.05692) exactly."""
    table2 = {"longalpaca": (9092, 208), "mlperf-llama3.1-405b": (9428, 684),
              "bbh-gsm8k-humaneval-70b": (106, 26), "bbh-gsm8k-humaneval-405b": (89, 20)}
    for name, (isl, osl) in table2.items():
        assert (PROFILES[name].isl_mean_tokens, PROFILES[name].osl_mean_tokens) == (isl, osl)
    assert PROFILES["bbh-gsm8k-humaneval"] is PROFILES["bbh-gsm8k-humaneval-70b"]


def relative_standard_error(profile, values, published) -> float:
    """Standard error of the sample mean, relative to the published mean.

    Fitted: i.i.d. draws, sd / sqrt(n). Empirical: whole shuffled decks of N rows are exact, only
    the last partial deck of r rows is random, drawn without replacement: its mean has standard
    error sd / sqrt(r) * sqrt((N - r) / (N - 1)) and weighs r / n in the overall mean.
    """
    n = len(values)
    if profile.kind == "fitted":
        return values.std() / math.sqrt(n) / published
    rows = describe(profile.file)["requests"]
    r = n % rows
    if r == 0:
        return 0.0
    partial = values.std() / math.sqrt(r) * math.sqrt((rows - r) / (rows - 1))
    return (r / n) * partial / published


@pytest.mark.parametrize("row", PROFILE_ROWS, ids=lambda r: r["profile"])
def test_profile_sampled_mean_within_3_percent_of_published(row):
    profile = PROFILES[row["profile"]]
    isl, osl = sample_profile(profile, PROFILE_SAMPLES, np.random.default_rng(2024))
    for values, published in ((isl, profile.isl_mean_tokens), (osl, profile.osl_mean_tokens)):
        assert values.dtype == np.int64 and values.min() >= 1
        # Why 3% is a safe tolerance and not a lucky seed: it is at least 4 standard errors of the
        # sample mean (a false failure below 1 in 10^4), computed for the way each kind samples.
        assert MEAN_TOLERANCE >= 4 * relative_standard_error(profile, values, published), row["profile"]
        assert abs(values.mean() / published - 1) < MEAN_TOLERANCE, (row["profile"], values.mean(), published)


@pytest.mark.parametrize("name", ["longalpaca", "mlperf-llama3.1-405b", "bbh-gsm8k-humaneval-70b",
                                  "bbh-gsm8k-humaneval-405b"])
def test_fitted_profile_mean_after_clipping_is_exactly_the_published_average(name):
    profile = PROFILES[name]
    for fit in (profile.isl_fit, profile.osl_fit):
        mu, sigma = lognormal_mu_for_clipped_mean(fit)
        assert clipped_lognormal_mean(mu, sigma, 1.0, fit.max_tokens) == pytest.approx(fit.mean_tokens, rel=1e-9)
    stats = describe(name)
    assert stats["isl"]["mean"] == profile.isl_mean_tokens and stats["requests"] is None


def test_clipped_lognormal_mean_closed_form_agrees_with_sampling():
    """Monte Carlo check of the closed form, with a cap that binds (mean 900, cap 1000)."""
    mu, sigma, cap = math.log(800), 0.5, 1000.0
    x = np.clip(np.random.default_rng(0).lognormal(mu, sigma, 400_000), 1, cap)
    # standard error of the mean of x: sd(x) / sqrt(4e5) ~ 0.4 tokens; 2 tokens is 5 of them
    assert clipped_lognormal_mean(mu, sigma, 1.0, cap) == pytest.approx(x.mean(), abs=2.0)
