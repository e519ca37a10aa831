"""Coalesced pipelined decode (engine/pipeline_run) equals stepping every micro-batch, bit for bit."""
import pytest

from simserve.simulation import simulate

LAYOUTS = {   # closed-form pipelines (fast, the pipeline's links its own): on NVSwitch and on a mesh
    "pp2-dgx": ["cluster.topology=dgx-h100", "parallelism.pp=2"],
    "pp4-dgx": ["cluster.topology=dgx-h100", "parallelism.pp=4"],
    "tp2pp2-mi325x": ["model=llama-3.1-70b", "cluster.hardware=mi325x", "cluster.topology=mi325x-mesh",
                      "parallelism.tp=2", "parallelism.pp=2"],
    "pp4-mi325x": ["model=llama-3.1-70b", "cluster.hardware=mi325x", "cluster.topology=mi325x-mesh",
                   "parallelism.pp=4"],
}


def _config(policy: str, runtime: str, arrivals: str) -> dict:
    # closed loop: a completion sends the next request at once, so no launch may be coalesced past it
    process = {"process": "poisson", "rate": 8.0} if arrivals == "poisson" else {"process": "closed", "concurrency": 24}
    return {"model": "llama-3.1-8b", "cluster": {"hardware": "h100-sxm"},
            "scheduler": {"policy": policy, "chunk_size": 512},
            "engine": {"runtime": runtime},
            "workload": {"lengths": {"isl": {"dist": "lognormal", "mean": 600, "cv": 0.8, "max": 4000},
                                     "osl": {"dist": "lognormal", "mean": 120, "cv": 0.8, "max": 600}},
                         "arrivals": process, "num_requests": 120}}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("policy,runtime,arrivals", [("sarathi", "vllm-v1", "poisson"), ("vllm", "ideal", "poisson"),
                                                     ("sarathi", "vllm-v1", "closed")])
def test_coalesced_pipeline_equals_stepping(layout, policy, runtime, arrivals):
    cfg = _config(policy, runtime, arrivals)
    fast = simulate(cfg, overrides=LAYOUTS[layout])
    stepped = simulate(cfg, overrides=[*LAYOUTS[layout], "engine.coalesce_decode=false"])
    assert fast.requests.to_csv(float_format="%.17g") == stepped.requests.to_csv(float_format="%.17g")
    same = {k: v for k, v in fast.summary.items() if k not in ("wall_time_s", "events")}
    assert same == {k: v for k, v in stepped.summary.items() if k not in ("wall_time_s", "events")}
    assert fast.timeline.to_csv(float_format="%.17g") == stepped.timeline.to_csv(float_format="%.17g")
    assert fast.summary["events"] < stepped.summary["events"] / 2     # runs were coalesced


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_coalesced_pipeline_without_timeline_equals_stepping(layout):
    """Without a timeline a run books its stages' busy time, charges and send bytes in bulk
    (pipeline_run.Books.close): the results still equal stepping's, bit for bit."""
    cfg = _config("sarathi", "vllm-v1", "poisson")
    overrides = [*LAYOUTS[layout], "engine.timeline=false"]
    fast = simulate(cfg, overrides=overrides)
    stepped = simulate(cfg, overrides=[*overrides, "engine.coalesce_decode=false"])
    assert fast.timeline is None and stepped.timeline is None
    assert fast.requests.to_csv(float_format="%.17g") == stepped.requests.to_csv(float_format="%.17g")
    same = {k: v for k, v in fast.summary.items() if k not in ("wall_time_s", "events")}
    assert same == {k: v for k, v in stepped.summary.items() if k not in ("wall_time_s", "events")}
    assert fast.summary["events"] < stepped.summary["events"] / 2
