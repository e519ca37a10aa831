"""Speculative decoding (scheduler.speculative): drafters, the verify step, the acceptance model."""
from __future__ import annotations

import math

import pytest

from simserve.cost.speculative import expected_tokens_per_step
from simserve.errors import CapacityError, ConfigError
from simserve.iteration.steps import Interleaved
from simserve.request import Request
from simserve.scheduler.batch import Batch
from simserve.simulation import simulate
from simserve.world import build_world


def _lone(osl, speculative=None, **sections):
    config = {"workload": {"lengths": {"isl": 512, "osl": osl}, "arrivals": {"process": "batch"}, "num_requests": 1}}
    config.update(sections)
    if speculative:
        config.setdefault("scheduler", {})["speculative"] = speculative
    return simulate(config).summary


def test_full_acceptance_with_a_free_drafter_takes_k_plus_one_times_fewer_target_steps():
    k, decodes = 4, 100                                  # OSL 101: 100 tokens after the first
    base = _lone(1 + decodes)
    spec = _lone(1 + decodes, {"method": "ideal", "tokens": k, "acceptance": 1.0})
    prefill_steps = base["iterations"] - decodes
    assert spec["iterations"] - prefill_steps == decodes / (k + 1)
    assert spec["speculative"]["tokens_per_step"] == k + 1
    assert spec["tpot"]["mean"] < base["tpot"]["mean"] / 2     # a verify step costs less than k + 1 decodes


@pytest.mark.parametrize("speculative", [{"method": "eagle", "tokens": 3, "acceptance": 0.0},
                                         {"method": "draft", "draft_model": "llama-3.1-8b", "tokens": 2,
                                          "acceptance": 0.0}])
def test_zero_acceptance_is_strictly_slower_than_no_speculation(speculative):
    """Every step still yields one token, but drafts and verifies k + 1 positions."""
    config = {"model": "llama-3.1-70b", "precision": {"weights": "fp8", "kv": "fp8"}, "parallelism": {"tp": 4},
              "cluster": {"topology": "dgx-h100"}}
    base = _lone(33, **config)
    spec = _lone(33, speculative, **config)
    assert spec["iterations"] == base["iterations"]
    assert spec["tpot"]["mean"] > base["tpot"]["mean"]
    assert spec["speculative"]["accepted_per_step"] == 0


def test_accepted_tokens_per_step_follow_leviathan_et_al():
    alpha, k = 0.6, 4
    s = simulate({"scheduler": {"speculative": {"method": "ideal", "tokens": k, "acceptance": alpha}},
                  "workload": {"lengths": {"isl": 64, "osl": 400}, "arrivals": {"process": "batch"},
                               "num_requests": 16}}).summary["speculative"]
    # tokens per step is 1 + a truncated geometric count: standard deviation ~1.4 at these values,
    # so 4 standard errors over the run's verify steps
    tolerance = 4 * 1.4 / math.sqrt(s["verify_steps"])
    assert s["tokens_per_step"] == pytest.approx(expected_tokens_per_step(alpha, k), abs=tolerance)
    assert s["expected_tokens_per_step"] == pytest.approx((1 - alpha ** 5) / (1 - alpha))


def _decode_time(n, speculative=None):
    config = {"workload": {"lengths": {"isl": 512, "osl": 65}, "arrivals": {"process": "batch"}, "num_requests": n},
              "scheduler": {"policy": "static", "batch_size": n, "max_batch_size": n, "max_batched_tokens": 65536}}
    if speculative:
        config["scheduler"]["speculative"] = speculative
    df = simulate(config).requests
    return float((df.finish_s - df.first_token_s.max()).mean())


def test_speculation_pays_at_low_load_and_costs_at_high_load():
    """Llama-3.1-8B on one H100, EAGLE k = 3 at alpha 0.7 (2.53 tokens a step): one sequence's
    decode is bound by reading the weights, so verifying 4 positions costs about one decode; 512
    sequences verify 2048 tokens a step, compute-bound, more than 2.53 decodes of 512."""
    eagle = {"method": "eagle", "tokens": 3, "acceptance": 0.7}
    assert _decode_time(1, eagle) < 0.6 * _decode_time(1)
    assert _decode_time(512, eagle) > _decode_time(512)


def test_a_draft_model_takes_memory_and_its_tp_allreduces_join_the_plan():
    config = {"model": "llama-3.1-70b", "precision": {"weights": "fp8", "kv": "fp8"}, "parallelism": {"tp": 4},
              "cluster": {"topology": "dgx-h100"},
              "workload": {"lengths": {"isl": 64, "osl": 4}, "arrivals": {"process": "batch"}, "num_requests": 2}}
    base = build_world(config)
    spec = build_world({**config, "scheduler": {"speculative": {"method": "draft", "draft_model": "llama-3.1-8b",
                                                                "tokens": 3}}})
    plain, drafted = base.plans[0], spec.plans[0]
    assert drafted.weights_bytes > plain.weights_bytes and drafted.kv_bytes_per_token > plain.kv_bytes_per_token
    assert drafted.kv_capacity_tokens < plain.kv_capacity_tokens
    planner = spec.replicas[0].stages[0].planner
    first = planner.draft_steps(_verify_stats())[0]
    # Llama-3.1-8B's 32 layers: two all-reduces each and one after the embedding, per draft pass
    assert isinstance(first, Interleaved) and first.collective.count == 2 * 32 + 1


def _verify_stats():
    req = Request(0, 0.0, 64, 4)
    req.prefilled, req.generated = 64, 1
    return Batch(decodes=[req], spec_tokens=3, accepted=[0]).stats()


@pytest.mark.parametrize("speculative,extra,message", [
    ({"method": "draft", "tokens": 3}, {}, "draft_model"),
    ({"method": "eagle", "draft_model": "llama-3.1-8b"}, {}, "draft_model"),
    ({"method": "eagle", "acceptance": 1.5}, {}, "acceptance"),
    ({"method": "eagle"}, {"parallelism": {"pp": 2}}, "parallelism.pp 1"),
    ({"method": "eagle"}, {"parallelism": {"cp": 2}}, "parallelism.cp > 1"),
    ({"method": "eagle"}, {"engine": {"overlap": "tp_comm"}, "parallelism": {"tp": 2}}, "overlap tp_comm"),
    ({"method": "mtp"}, {"model": "mixtral-8x7b", "parallelism": {"ep": 2}}, "MoE"),
    ({"method": "draft", "draft_model": {"name": "other-vocab", "num_layers": 2, "hidden": 512, "intermediate": 1024,
                                         "num_heads": 8, "num_kv_heads": 8, "head_dim": 64, "vocab": 32000,
                                         "max_context": 8192}}, {}, "vocabulary"),
])
def test_bad_speculative_settings_are_one_line_errors(speculative, extra, message):
    config = {"scheduler": {"speculative": speculative}, **extra}
    with pytest.raises((ConfigError, CapacityError), match=message) as err:
        build_world(config)
    assert "\n" not in str(err.value)
