"""A planner probe ends once its SLO verdict is decided (simserve.plan.stop): the decision rule puts
the summary's own percentile over the limit, a stopped probe fails exactly when the full run does,
and a meeting probe is the full run."""
import numpy as np
import pytest

from simserve.metrics import distribution
from simserve.plan import load_plan
from simserve.plan.run import prepare
from simserve.plan.search import slo_violations, stopped
from simserve.plan.stop import decisive, measure
from simserve.sweep import METRICS, run_point

LIMIT = 2.0


@pytest.mark.parametrize("q,stat", [(50, "p50"), (99, "p99")])
def test_decisive_values_over_a_limit_put_the_summary_percentile_over_it(q, stat):
    rng = np.random.default_rng(1)
    previous = 1
    for n in [*range(1, 1500), 19_366, 200_001]:
        need = decisive(n, q)
        assert previous <= need <= n        # never decreasing in n: the stop rule's premise
        previous = need
        # the tightest case: `need` values one ulp over the limit, the rest exactly at it
        just = np.r_[np.full(need, np.nextafter(LIMIT, np.inf)), np.full(n - need, LIMIT)]
        assert distribution(rng.permutation(just))[stat] > LIMIT, n
        mixed = np.r_[rng.uniform(LIMIT, 10, need) + 1e-9, rng.uniform(0, LIMIT, n - need)]
        assert distribution(rng.permutation(mixed))[stat] > LIMIT, n
        if need >= 2 and n - need + 2 <= n:     # two fewer and the rest far below: not decided
            low = np.r_[np.full(need - 2, 10.0), np.zeros(n - need + 2)]
            assert distribution(low)[stat] <= LIMIT, n
    # the bundled hour (19,366 requests): 195 requests over a p99 limit decide it, 1.0% of the trace
    assert decisive(19_366, 99) == 195


def _searches():
    # the test_plan 8B workload on one H100 (tp1, 8 replicas), 200 requests
    from tests.test_plan import SMALL
    spec = load_plan({**SMALL["llama-3.1-8b"], "requests": 200, "space": {"tp": [1], "pp": [1]}})
    _, searches, grid = prepare(spec)
    return spec, searches[0], grid


def test_a_stopped_probe_fails_as_its_full_run_does_and_a_meeting_probe_is_the_full_run():
    spec, s, grid = _searches()
    cfg = s.probe_config(grid.top)            # 400 req/s: far over this layout's capacity
    full, part = run_point(cfg, {}), run_point(cfg, {}, measure(spec.slo))
    over_full, over_part = slo_violations(full, spec.slo), slo_violations(part, spec.slo)
    assert over_full and over_part and stopped(part) and not stopped({"stopped_s": full.get("stopped_s")})
    assert part["stopped_s"] < full["sim_time_s"] and part["num_completed"] < full["num_completed"]
    for metric, (bound, _) in over_part.items():      # the stopped value is a lower bound
        assert metric in over_full and bound <= over_full[metric][0]
    cfg = s.probe_config(0)                   # 20 req/s: meets the SLO
    full, part = run_point(cfg, {}), run_point(cfg, {}, measure(spec.slo))
    assert not slo_violations(full, spec.slo) and not stopped(part)
    assert {k: part[k] for k in METRICS if k != "wall_time_s"} == {k: full[k] for k in METRICS if k != "wall_time_s"}
