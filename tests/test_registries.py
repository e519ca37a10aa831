"""Extension points: a policy, router or arrival process registered from outside simserve runs from a config."""
import numpy as np
import pytest

from simserve.config import load_config
from simserve.errors import ConfigError
from simserve.kvcache import blocks_for
from simserve.router import ROUTERS
from simserve.scheduler import POLICIES, Scheduler
from simserve.scheduler.batch import Batch
from simserve.simulation import simulate
from simserve.workload.processes import ARRIVAL_PROCESSES, Process


class OneAtATime(Scheduler):
    """Toy policy: serve one request to completion before admitting the next (its prompt whole)."""

    def admits_new_arrivals(self) -> bool:
        return False

    def schedule(self) -> Batch:
        batch = Batch()
        if not self.running and self.waiting:
            req = self.waiting[0]
            need = blocks_for(req.prefill_target, self.kv.block_size)
            if self.admission.can_admit(req, need, self.running):
                self._take(req, need)
                batch.prefills.append((req, req.remaining_prefill))
        elif self.running:
            self._add_decodes(batch)
        return batch


@pytest.fixture
def toy_extensions():
    POLICIES.register("one_at_a_time", OneAtATime)
    ROUTERS.register("always_last", lambda router, reps, req: reps[-1])
    ARRIVAL_PROCESSES.register("even", Process(draw=lambda a, n, rng: np.arange(n) / a.rate, needs_rate=True))
    yield
    POLICIES.unregister("one_at_a_time")
    ROUTERS.unregister("always_last")
    ARRIVAL_PROCESSES.unregister("even")


def config(**sections):
    cfg = {"workload": {"lengths": {"isl": 200, "osl": 8}, "arrivals": {"process": "even", "rate": 50.0},
                        "num_requests": 6}}
    cfg.update(sections)
    return cfg


def test_toy_policy_router_and_arrivals_run_end_to_end(toy_extensions):
    r = simulate(config(scheduler={"policy": "one_at_a_time", "max_batch_size": 8},
                        router={"policy": "always_last"}, parallelism={"dp": 2}))
    df = r.requests.sort_values("request_id")
    assert r.summary["num_completed"] == 6
    assert (df.replica == 1).all()                               # the toy router's choice
    assert np.allclose(df.arrival_s, np.arange(6) / 50.0)        # the toy process's even spacing
    # one request at a time: each one is admitted only after the previous one finished
    assert (df.scheduled_s.values[1:] >= df.finish_s.values[:-1]).all()


def test_built_in_policy_batches_what_the_toy_serialises(toy_extensions):
    """Control for the test above: sarathi on the same load overlaps requests, so the check can fail."""
    df = simulate(config(router={"policy": "always_last"}, parallelism={"dp": 2})).requests.sort_values("request_id")
    assert not (df.scheduled_s.values[1:] >= df.finish_s.values[:-1]).all()


def test_unregistered_names_are_refused_with_the_registered_choices(toy_extensions):
    with pytest.raises(ConfigError, match=r"scheduler.policy: unknown scheduler policy 'fifo'.*one_at_a_time"):
        load_config({"scheduler": {"policy": "fifo"}})
    with pytest.raises(ConfigError, match=r"router.policy: .*always_last"):
        load_config({"router": {"policy": "nearest"}})
    with pytest.raises(ConfigError, match=r"unknown arrival process 'weibull'.*even"):
        load_config(config(workload={"lengths": {"isl": 1, "osl": 1}, "arrivals": {"process": "weibull"}}))


def test_extension_points_listed_by_the_cli(toy_extensions):
    from simserve.cli import extension_points
    points = extension_points()
    assert "one_at_a_time" in points["scheduler.policy"] and "always_last" in points["router.policy"]
    assert "even" in points["workload.arrivals.process"]
