"""build_workload: the config contract, arrival processes, limits, context fitting, determinism."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simserve.config import load_config
from simserve.errors import ConfigError, WorkloadError
from simserve.workload import Workload, WorkloadConfig, WorkloadWarning, build_workload, describe

BIG_CONTEXT = 1 << 20     # no truncation unless a test asks for it


def build(seed=0, max_context=BIG_CONTEXT, **cfg) -> Workload:
    return build_workload(WorkloadConfig(**cfg), max_context, np.random.default_rng(seed))


def assert_valid(w: Workload, n=None):
    assert w.arrival_s.dtype == np.float64 and w.isl.dtype == np.int64 and w.osl.dtype == np.int64
    assert len(w.arrival_s) == len(w.isl) == len(w.osl)
    assert np.all(np.diff(w.arrival_s) >= 0) and w.arrival_s[0] >= 0
    assert w.isl.min() >= 1 and w.osl.min() >= 1
    if n is not None:
        assert len(w) == n


# ------------------------------------------------------------------ the default and traces
def test_default_is_the_bundled_azure_conversation_hour():
    w = build()
    assert_valid(w, 19366)        # rows of AzureLLMInferenceTrace_conv.csv (SOURCES.md)
    assert w.arrival_s[0] == 0.0 and w.arrival_s[-1] == pytest.approx(3501.72, abs=0.01)
    assert "AzureLLMInferenceTrace_conv" in w.source and w.prefix_hashes is None


def test_rate_scale_divides_the_trace_clock():
    base, fast = build(), build(arrivals={"process": "trace", "rate_scale": 2.0})
    assert np.allclose(fast.arrival_s, base.arrival_s / 2) and np.array_equal(fast.isl, base.isl)


def test_trace_rescaled_to_a_target_rate():
    w = build(arrivals={"process": "trace", "rate": 11.0})
    assert len(w) / (w.arrival_s[-1] - w.arrival_s[0]) == pytest.approx(11.0, rel=1e-9)


def test_num_requests_and_duration_limits_take_a_trace_prefix():
    full = build()
    first = build(num_requests=100)           # read stops early; must equal the full read's prefix
    assert np.array_equal(first.arrival_s, full.arrival_s[:100]) and np.array_equal(first.osl, full.osl[:100])
    window = build(duration_s=600.0)
    assert window.arrival_s[-1] < 600.0 and len(window) == int(np.searchsorted(full.arrival_s, 600.0))
    both = build(duration_s=600.0, num_requests=50, arrivals={"process": "trace", "rate_scale": 4.0})
    assert len(both) == 50 and both.arrival_s[-1] < 600.0


def test_trace_lengths_replaced_by_configured_lengths():
    w = build(trace="conversation_trace.jsonl.gz", lengths={"isl": 100, "osl": 10})
    assert set(w.isl) == {100} and set(w.osl) == {10}
    assert w.prefix_hashes is None     # the trace's prefix blocks described its own prompts


def test_trace_with_synthetic_arrivals_keeps_its_lengths():
    w = build(trace="AzureLLMInferenceTrace_code.csv.gz", arrivals={"process": "poisson", "rate": 3.0})
    assert np.array_equal(w.isl, build(trace="AzureLLMInferenceTrace_code.csv.gz").isl)
    assert "poisson 3 req/s" in w.source


def test_mooncake_prefix_hashes_and_jitter_within_its_3s_steps():
    plain = build(trace="conversation_trace.jsonl.gz")
    assert len(plain.prefix_hashes) == len(plain) == 12031
    jittered = build(trace="conversation_trace.jsonl.gz", arrivals={"process": "trace", "jitter_s": 3.0})
    assert_valid(jittered, 12031)
    # jitter moves each request by less than one step, so sorted times stay within 3 s of the originals
    assert np.all(np.abs(np.sort(jittered.arrival_s) - plain.arrival_s) < 3.0)
    assert np.mean(np.diff(jittered.arrival_s) == 0) < 0.01        # was 90% zero gaps
    # lengths and prefix blocks move together: 512-token blocks cover each prompt exactly
    assert all(len(h) == -(-isl // 512) for h, isl in zip(jittered.prefix_hashes, jittered.isl))


def test_truncated_mooncake_prompts_keep_only_their_prefix_blocks():
    with pytest.warns(WorkloadWarning, match="truncated"):
        w = build(trace="conversation_trace.jsonl.gz", max_context=8192)
    assert (w.isl + w.osl).max() <= 8192
    assert all(len(h) == -(-isl // 512) for h, isl in zip(w.prefix_hashes, w.isl))


def test_length_only_file_needs_an_arrival_process():
    with pytest.raises(WorkloadError, match="has no timestamps: set workload.arrivals.process"):
        build(trace="sharegpt_8k_filtered_stats_llama2_tokenizer.csv.gz")
    w = build(trace="sharegpt_8k_filtered_stats_llama2_tokenizer.csv.gz",
              arrivals={"process": "batch"}, num_requests=256)
    assert_valid(w, 256)
    assert not w.arrival_s.any()


# ------------------------------------------------------------------ synthetic arrivals
def cv_standard_error(cv: float, n: int) -> float:
    """An upper bound on the standard error of a sample CV of n gamma gaps (delta method).

    Var(CV_hat) ~ CV^2 [(kurtosis - 1) / (4n) + CV^2 / n - CV * skewness / n]; gamma has
    kurtosis 3 + 6 CV^2 and skewness 2 CV > 0, so dropping the last term bounds it from above.
    """
    return cv * math.sqrt((2 + 6 * cv ** 2) / (4 * n) + cv ** 2 / n)


@pytest.mark.parametrize("process, cv", [("poisson", 1.0), ("gamma", 0.5), ("gamma", 2.0), ("gamma", 4.0)])
def test_synthetic_arrivals_have_the_configured_rate_and_cv(process, cv):
    n, rate = 40_000, 7.0
    w = build(seed=11, lengths={"isl": 8, "osl": 8}, num_requests=n,
              arrivals={"process": process, "rate": rate, "cv": cv})
    assert_valid(w, n)
    assert w.arrival_s[0] == 0.0
    stats = describe_arrivals(w.arrival_s)
    # mean gap = 1/rate; its relative standard error is cv / sqrt(n); 5 of them (< 1e-6 false failures)
    assert stats["mean_gap_s"] * rate == pytest.approx(1.0, abs=5 * cv / math.sqrt(n))
    assert stats["cv"] == pytest.approx(cv, abs=5 * cv_standard_error(cv, n))


def describe_arrivals(arrival_s):
    gaps = np.diff(arrival_s)
    return {"mean_gap_s": gaps.mean(), "cv": gaps.std() / gaps.mean()}


def test_poisson_over_a_duration_arrives_at_the_rate():
    rate, duration_s = 20.0, 1000.0
    w = build(seed=3, lengths={"isl": 8, "osl": 8}, duration_s=duration_s,
              arrivals={"process": "poisson", "rate": rate})
    assert w.arrival_s[-1] < duration_s
    # a Poisson count over T has sd sqrt(rate T) ~ 141; allow 5 sd
    assert abs(len(w) - rate * duration_s) < 5 * math.sqrt(rate * duration_s)


def test_batch_puts_everything_at_zero():
    w = build(lengths={"isl": 2048, "osl": 128}, arrivals={"process": "batch"}, num_requests=64)
    assert_valid(w, 64)
    assert not w.arrival_s.any() and set(w.isl) == {2048}


@pytest.mark.parametrize("bad, message", [
    ({"arrivals": {"process": "poisson", "rate": 0}}, "rate must be a positive number"),
    ({"arrivals": {"process": "gamma", "rate": -2, "cv": 2}}, "rate must be a positive number"),
    ({"arrivals": {"process": "poisson"}}, "needs a rate"),
    ({"lengths": {"isl": -3, "osl": 10}}, "isl must be a positive number of tokens"),
    ({"lengths": {"profile": "nope"}}, "unknown length profile 'nope'; known: .*longalpaca"),
    ({"lengths": {"isl": 10}}, "needs both isl and osl, or a profile"),
    ({"rate": 5}, "rate"),
    ({"arrivals": {"process": "batch", "jitter_s": 1.0}}, "apply to process trace"),
])
def test_bad_workload_config_is_one_clear_config_error(bad, message):
    raw = {"lengths": {"isl": 10, "osl": 10}, "arrivals": {"process": "batch"}, **bad}
    with pytest.raises(ConfigError, match=message) as info:
        load_config({"workload": raw})
    assert "\n" not in str(info.value)


def test_lengths_without_trace_need_a_synthetic_process():
    with pytest.raises(ConfigError, match="arrivals.process trace needs a workload.trace"):
        load_config({"workload": {"lengths": {"isl": 10, "osl": 10}}})


# ------------------------------------------------------------------ lengths
def test_profile_with_an_override_keeps_the_other_side():
    w = build(lengths={"profile": "sharegpt", "osl": 128}, arrivals={"process": "batch"}, num_requests=5000)
    assert set(w.osl) == {128}
    assert abs(w.isl.mean() / 2340.0 - 1) < 0.03      # sharegpt ISL average (SOURCES.md); deck sampling


@pytest.mark.parametrize("dist", ["lognormal", "gamma", "uniform"])
def test_length_distributions_have_their_mean(dist):
    n, mean, cv = 20_000, 500.0, 0.5
    w = build(lengths={"isl": {"dist": dist, "mean": mean, "cv": cv}, "osl": 10},
              arrivals={"process": "batch"}, num_requests=n)
    # relative standard error cv / sqrt(n) = 0.35%; 5 of them. Rounding to integers moves the mean < 0.01%.
    assert w.isl.mean() == pytest.approx(mean, rel=5 * cv / math.sqrt(n))


# ------------------------------------------------------------------ context
def test_context_overflow_truncates_with_a_warning():
    with pytest.warns(WorkloadWarning, match=r"request\(s\) truncated to the model's context of 2048"):
        w = build(max_context=2048)
    assert_valid(w, 19366)
    assert (w.isl + w.osl).max() <= 2048
    full = build()
    fits = full.isl + full.osl <= 2048
    assert np.array_equal(w.isl[fits], full.isl[fits])     # requests that fit are untouched
    assert np.array_equal(w.osl, full.osl)                  # the conv trace's OSL <= 1000 always fits


def test_context_overflow_reject_names_the_count_and_first_request():
    with pytest.raises(WorkloadError, match=r"^\d+ request\(s\) exceed the model's context of 2048 tokens, "
                                            r"the first \(request \d+\) with ISL \d+ \+ OSL \d+"):
        build(max_context=2048, context_overflow="reject")


# ------------------------------------------------------------------ determinism and invariants
@pytest.mark.parametrize("cfg", [
    {},
    {"lengths": {"profile": "longalpaca"}, "arrivals": {"process": "gamma", "rate": 3, "cv": 2}, "num_requests": 500},
    {"lengths": {"profile": "azure-code"}, "arrivals": {"process": "poisson", "rate": 3}, "duration_s": 100},
    {"trace": "conversation_trace.jsonl.gz", "arrivals": {"process": "trace", "jitter_s": 3.0}},
])
def test_same_seed_same_arrays_other_seed_other_arrays(cfg):
    a, b, c = build(seed=5, **cfg), build(seed=5, **cfg), build(seed=6, **cfg)
    for field in ("arrival_s", "isl", "osl"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert a.prefix_hashes == b.prefix_hashes and a.source == b.source
    if cfg:     # the default replays the trace as is: nothing random
        assert any(not np.array_equal(getattr(a, f), getattr(c, f)) for f in ("arrival_s", "isl"))


@settings(max_examples=40, deadline=None)
@given(process=st.sampled_from(["poisson", "gamma", "batch"]),
       rate=st.floats(0.01, 1e4), cv=st.floats(0.1, 5.0),
       n=st.integers(1, 300), max_context=st.integers(2, 200_000),
       lengths=st.sampled_from([{"isl": 1, "osl": 1}, {"profile": "mooncake-conversation"},
                                {"profile": "bbh-gsm8k-humaneval-405b"},
                                {"isl": {"dist": "lognormal", "mean": 3000, "cv": 2.0}, "osl": 700}]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_any_synthetic_workload_is_well_formed(process, rate, cv, n, max_context, lengths, seed):
    arrivals = {"process": process} if process == "batch" else {"process": process, "rate": rate, "cv": cv}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WorkloadWarning)
        w = build(seed=seed, max_context=max_context, lengths=lengths, arrivals=arrivals, num_requests=n)
    assert_valid(w, n)
    assert (w.isl + w.osl).max() <= max_context
    assert w.arrival_s[0] == 0.0


def test_describe_a_profile_and_a_trace_share_keys():
    keys = {"requests", "duration_s", "rate_per_s", "interarrival_cv", "isl", "osl"}
    for source in ("sharegpt", "longalpaca", "AzureLLMInferenceTrace_code.csv.gz"):
        stats = describe(source)
        assert keys <= set(stats) and {"mean", "p50", "p99"} <= set(stats["isl"]) and {"mean", "p50", "p99"} <= set(stats["osl"])
