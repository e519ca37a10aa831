"""The quantile sketch a long run's ITL folds into (simserve.sketch) keeps its documented bound:
every percentile within a relative ALPHA of numpy's exact one, count and max exact."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simserve.engine import tokens
from simserve.engine.tokens import itl_sample
from simserve.metrics import vllm_benchmark
from simserve.simulation import simulate
from simserve.sketch import ALPHA, MIN_VALUE, QuantileSketch
from simserve.world import build_world

# float rounding of log(x) / log(gamma) at a bucket edge may put a value one bucket over: a relative
# error of ALPHA plus ~1e-12, far below any reported digit
BOUND = ALPHA * (1 + 1e-9)


def _within(estimate: float, exact: float) -> bool:
    return abs(estimate - exact) <= BOUND * abs(exact) + MIN_VALUE


@pytest.fixture(scope="module")
def bundled():
    """Every gap of the bundled trace's first 5,000 requests, exact, and the sketch of the same logs."""
    world = build_world(None, ["workload.num_requests=5000", "engine.timeline=false"]).run(False)
    logs = [r.tokens for r in world.replicas]
    sketch = QuantileSketch()
    for log in logs:
        sketch.add(*log.weighted())
    return itl_sample(logs), sketch


def test_itl_percentiles_of_the_bundled_trace_are_within_the_bound(bundled):
    exact, sketch = bundled
    assert sketch.size == exact.size and sketch.max == float(exact[-1])
    for q in (50, 90, 99, 1, 99.9):
        assert _within(sketch.percentile(q), float(np.percentile(exact, q))), q
    assert sketch.distribution()["mean"] == pytest.approx(float(exact.mean()), rel=1e-12)
    assert sketch.std() == pytest.approx(float(np.std(exact)), rel=1e-6)
    # the sketch is an estimate (some percentiles move by more than ALPHA / 50), so the checks compare something
    misses = [q for q in range(1, 100) if abs(sketch.percentile(q) / np.percentile(exact, q) - 1) > ALPHA / 50]
    assert misses


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(1e-7, 100.0), st.integers(1, 50)), min_size=1, max_size=200),
       st.integers(0, 3))
def test_any_weighted_sample_is_within_the_bound(pairs, zeros):
    values = np.array([v for v, _ in pairs] + [0.0] * zeros)
    weights = np.array([w for _, w in pairs] + [1] * zeros)
    sketch = QuantileSketch()
    half = len(values) // 2                      # merged from two parts, as replicas' logs are
    other = QuantileSketch()
    sketch.add(values[:half], weights[:half])
    other.add(values[half:], weights[half:])
    sketch.merge(other)
    expanded = np.repeat(values, weights)
    assert sketch.size == expanded.size and sketch.max == float(expanded.max())
    for q in (0, 50, 90, 99, 100):
        assert _within(sketch.percentile(q), float(np.percentile(expanded, q))), q


def test_a_value_out_of_range_is_refused():
    with pytest.raises(ValueError, match="outside"):
        QuantileSketch().add(np.array([-1.0]))


def test_a_run_whose_log_outgrows_its_bound_reports_the_sketch(monkeypatch):
    """A 300-request run with a 4 KB log bound folds many times; its ITL stays within the bound of
    the exact run's, every other summary field is the same, and the summary says it is an estimate."""
    overrides = ["workload.num_requests=300", "engine.timeline=false"]
    exact = simulate(None, overrides=overrides)
    monkeypatch.setattr(tokens, "EXACT_MAX_BYTES", 4096)
    folded = simulate(None, overrides=overrides)
    assert isinstance(folded.itl_gaps, QuantileSketch) and "itl_estimate" not in exact.summary
    assert folded.summary["itl_estimate"] == {"method": "quantile_sketch", "relative_error": ALPHA}
    for key in ("p50", "p90", "p99", "max"):
        assert _within(folded.summary["itl"][key], exact.summary["itl"][key]), key
    skip = {"wall_time_s", "itl", "itl_estimate"}
    assert {k: v for k, v in folded.summary.items() if k not in skip} == \
        {k: v for k, v in exact.summary.items() if k not in skip}
    fields = vllm_benchmark(folded.requests, folded.itl_gaps, folded.summary)
    assert _within(fields["p99_itl_ms"], vllm_benchmark(exact.requests, exact.itl_gaps, exact.summary)["p99_itl_ms"])
