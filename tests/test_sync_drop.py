"""Sync-point drop (collectives.sync_point_drop): the attention-output all-reduce skipped in a
fraction of layers, dense and MoE stages, fast and exact."""
from __future__ import annotations

import pytest

from simserve.iteration import IdleNetwork, price
from simserve.iteration.steps import Collective, IterationPlan
from simserve.simulation import simulate
from simserve.world import build_world


def _config(model, parallelism, fraction, osl=1):
    return {"model": model, "precision": {"weights": "fp8", "kv": "fp8"}, "engine": {"runtime": "ideal"},
            "cluster": {"hardware": "h100-sxm", "topology": "dgx-h100"}, "parallelism": parallelism,
            "scheduler": {"chunk_size": 2048}, "collectives": {"sync_point_drop": fraction},
            "workload": {"lengths": {"isl": 2048, "osl": osl}, "arrivals": {"process": "batch"}, "num_requests": 1}}


def test_a_lone_prefill_saves_exactly_the_dropped_allreduces():
    """Llama-3.1-70B on tp4: 80 layers, half of them drop their attention all-reduce: 40 fewer
    all-reduces of the prefill's 2048 x 8192 bf16 activations, each priced on the idle network."""
    base = build_world(_config("llama-3.1-70b", {"tp": 4}, 0.0)).run()
    half = build_world(_config("llama-3.1-70b", {"tp": 4}, 0.5)).run()
    planner = half.replicas[0].stages[0].planner
    assert planner.sync_points_dropped == 40 and planner.allreduces == 2 * 80 - 40 + 1
    one = Collective("allreduce", (planner.gpus,), 2048 * planner.allreduce_bytes_per_token, planner.algorithm, 40)
    saved = price(IterationPlan((one,)), IdleNetwork(half.topology)).total
    ttft = [w.requests.first_token_s[0] - w.requests.arrival_s[0] for w in (base, half)]
    assert ttft[0] - ttft[1] == pytest.approx(saved, rel=1e-9)
    assert saved > 0


@pytest.mark.parametrize("fidelity", ["fast", "exact"])
def test_moe_layers_drop_the_attention_allreduce_only(fidelity):
    """Mixtral-8x7B, tp2 x ep4: 32 MoE layers each all-reduce their attention output inside the TP
    group (the experts' output is all-gathered), plus the embedding's: 33 a step in each of the two
    attention groups, 17 at half."""
    calls = {}
    for fraction in (0.0, 0.5):
        r = simulate(_config("mixtral-8x7b", {"tp": 2, "ep": 4}, fraction, osl=8), overrides=[f"fidelity={fidelity}"])
        calls[fraction] = sum(r.summary["collectives"]["allreduce"].values()) / r.summary["iterations"] / 2
        if fraction:
            assert r.summary["sync_point_drop"] == {"fraction": 0.5, "allreduces_dropped_per_iteration": 16}
        else:
            assert "sync_point_drop" not in r.summary
    assert calls == {0.0: 33, 0.5: 17}


def test_sync_drop_is_refused_where_its_planners_do_not_drop():
    from simserve.errors import ConfigError
    for extra in ({"parallelism": {"tp": 2, "cp": 2}}, {"parallelism": {"tp": 2}, "engine": {"overlap": "tp_comm"}}):
        with pytest.raises(ConfigError, match="sync_point_drop with parallelism.cp > 1 or engine.overlap"):
            build_world({"collectives": {"sync_point_drop": 0.5}, **extra})
