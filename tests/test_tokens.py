"""The weighted ITL sample (engine.tokens.ItlSample) a long run keeps equals the expanded one."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simserve.engine.tokens import ItlSample, TokenLog, itl_sample
from simserve.metrics import distribution, vllm_benchmark
from simserve.simulation import simulate
from simserve.world import build_world


@pytest.fixture(scope="module")
def world():
    """The bundled trace's first 1,500 requests (coalesced decode runs: most gaps are shared)."""
    return build_world(None, ["workload.num_requests=1500", "engine.timeline=false"]).run(False)


def test_weighted_sample_statistics_equal_the_expanded_samples(world):
    logs = [r.tokens for r in world.replicas]
    exact = itl_sample(logs)
    weighted = itl_sample(logs, exact_max=0)
    assert isinstance(exact, np.ndarray) and isinstance(weighted, ItlSample)
    assert weighted.size == exact.size and len(weighted.values) < exact.size / 3    # far fewer entries
    assert weighted.distribution() == distribution(exact)          # bit for bit: mean, p50, p90, p99, max
    for q in (0, 1, 25, 33.3, 75, 99.9, 100):
        assert weighted.percentile(q) == float(np.percentile(exact, q))
    assert weighted.median() == float(np.median(exact))
    # np.std sums squared deviations pairwise, ItlSample with fsum: the same up to rounding
    assert weighted.std() == pytest.approx(float(np.std(exact)), rel=1e-12)


def test_vllm_fields_of_a_weighted_sample_match_the_expanded_ones(world):
    r = simulate(None, overrides=["workload.num_requests=200"])
    logs = r.itl_gaps
    weighted = ItlSample(np.asarray(logs), np.ones(len(logs), dtype=np.int64))
    a, b = (vllm_benchmark(r.requests, s, r.summary) for s in (logs, weighted))
    assert a.keys() == b.keys()
    for key in a:       # the expanded path scales each gap to ms first, the weighted one its statistics
        assert b[key] == (pytest.approx(a[key], rel=1e-12) if isinstance(a[key], float) else a[key]), key


def test_a_run_above_the_exact_limit_has_the_same_summary(monkeypatch):
    from simserve.engine import tokens
    overrides = ["workload.num_requests=300", "parallelism.pp=2"]
    exact = simulate(None, overrides=overrides)
    monkeypatch.setattr(tokens, "EXACT_MAX_GAPS", 0)
    weighted = simulate(None, overrides=overrides)
    assert isinstance(weighted.itl_gaps, ItlSample)
    same = lambda s: {k: v for k, v in s.items() if k != "wall_time_s"}
    assert same(weighted.summary) == same(exact.summary)


def _entries(log: TokenLog) -> tuple:
    log._flush()
    return tuple(log.single), tuple(log._run_gaps), tuple(log._run_ends), tuple(log._run_weights)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.01, 0.02, 0.5]), st.integers(0, 4)), max_size=12))
def test_gaps_logs_the_entries_of_as_many_gap_calls(groups):
    """The replica logs a step's equal gaps with one gaps() call: the log's entries (their order
    decides a folded sketch's sums) are those of one gap() per sequence."""
    one_by_one, grouped = TokenLog(), TokenLog()
    for gap, count in groups:
        for _ in range(count):
            one_by_one.gap(gap)
        grouped.gaps(gap, count)
    assert _entries(grouped) == _entries(one_by_one)
