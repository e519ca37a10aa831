"""A played pipeline's sends in `fast` (engine/pipeline.PipelineLoop._send): a send whose links
carry nothing until it ends takes its idle-network time, also where a replayed all-reduce holds a
link and is in a compute slice that lasts beyond the send (Network.quiet); `fast` still equals
`exact`, which plays every collective and send as flows."""
import numpy as np

from simserve.simulation import simulate

# tp2 x pp2 on one DGX H100: stage sends share the GPUs' NVSwitch ports with the TP all-reduces, so
# the stages are played, not priced; short requests keep `exact` (every all-reduce as flows) quick
CONFIG = {"model": "llama-3.1-8b", "cluster": {"hardware": "h100-sxm", "topology": "dgx-h100"},
          "parallelism": {"tp": 2, "pp": 2},
          "workload": {"lengths": {"isl": {"dist": "lognormal", "mean": 300, "cv": 0.8, "max": 2000},
                                   "osl": {"dist": "lognormal", "mean": 40, "cv": 0.8, "max": 200}},
                       "arrivals": {"process": "poisson", "rate": 8.0}, "num_requests": 30}}


def test_played_pipeline_fast_equals_exact():
    fast = simulate(CONFIG, overrides=["fidelity=fast"])
    exact = simulate(CONFIG, overrides=["fidelity=exact"])
    assert fast.summary["events"] < exact.summary["events"] / 10      # fast replays and prices sends
    for col in ("first_token_s", "finish_s"):
        f, e = fast.requests[col].to_numpy(float), exact.requests[col].to_numpy(float)
        # the same times by different float operations (one timeout vs the flow events that play
        # it): measured 6e-13 relative; a send timed past an all-reduce it shares a port with
        # (quiet_until ignoring collectives) moves them by 4e-8
        np.testing.assert_allclose(f, e, rtol=1e-9, atol=0)
    assert fast.summary["bytes_moved"] == exact.summary["bytes_moved"]
