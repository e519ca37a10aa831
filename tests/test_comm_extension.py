"""Extension points of the communication layer: a registered toy all-reduce runs end to end from a
config; topologies pickle and carry no memo tables; the run's cache is bounded."""
import pickle

import pytest

from simserve.collectives import check
from simserve.collectives.allreduce import ALLREDUCE, AllReduceAlgorithm, schedule
from simserve.collectives.schedule import transfer
from simserve.comm.cache import BoundedMemo, CollectiveCache, cache_for
from simserve.comm.tuner import collective_time
from simserve.errors import ConfigError
from simserve.network.topology import build_topology
from simserve.simulation import simulate


def _toy_build(ranks, nbytes, topo):
    """Everyone sends its whole vector to rank 0, which reduces and sends the sum back (a star)."""
    bb = (float(nbytes),)
    root, others = ranks[0], ranks[1:]
    return schedule("toy_star", ranks, nbytes, [[transfer(r, root, (0,), bb, reduce=True) for r in others],
                                                 [transfer(root, r, (0,), bb) for r in others]], bb)


@pytest.fixture
def toy_star():
    ALLREDUCE.register("toy_star", AllReduceAlgorithm(_toy_build, description="test: star"))
    yield "toy_star"
    ALLREDUCE.unregister("toy_star")


def test_a_registered_toy_allreduce_runs_from_a_config(toy_star):
    check.verify(_toy_build((0, 1, 2, 3), 1024.0, None))
    cfg = {"model": "llama-3.1-8b", "cluster": {"hardware": "h100-sxm"}, "parallelism": {"tp": 4},
           "collectives": {"allreduce": toy_star},
           "workload": {"lengths": {"isl": 64, "osl": 4}, "arrivals": {"process": "batch"}, "num_requests": 2}}
    summary = simulate(cfg).summary
    assert summary["collectives"]["allreduce"].get(toy_star, 0) > 0
    # a star moves (N-1) full vectors through rank 0's port each way: slower than the ring
    topo = build_topology("h100-sxm")
    star_s, _ = collective_time(topo, "allreduce", toy_star, range(4), 64e6)
    ring_s, _ = collective_time(topo, "allreduce", "ring", range(4), 64e6)
    assert star_s > 1.5 * ring_s


def test_an_unregistered_algorithm_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="collectives.*toy_star.*ring"):
        simulate({"collectives": {"allreduce": "toy_star"}, "workload": {"num_requests": 1}})


@pytest.mark.parametrize("nodes,name", [(1, "dgx-h100"), (2, "dgx-h100"), (1, "mi300x-mesh"), (1, "pcie")])
def test_topology_pickles_and_routes_the_same_after(nodes, name):
    hw = {"mi300x-mesh": "mi300x"}.get(name, "h100-sxm")
    topo = build_topology(hw, nodes=nodes, name=name)
    collective_time(topo, "allreduce", "auto", range(topo.num_gpus), 1e6)   # fills the run's cache
    back = pickle.loads(pickle.dumps(topo))
    assert not any(isinstance(v, dict) and "compiled" in v for v in vars(back).values())
    assert all(back.path(a, b) == topo.path(a, b) for a in range(topo.num_gpus) for b in range(topo.num_gpus))
    assert collective_time(back, "allreduce", "ring", range(topo.num_gpus), 1e6) == \
        collective_time(topo, "allreduce", "ring", range(topo.num_gpus), 1e6)


def test_memo_tables_are_bounded_and_live_outside_the_topology():
    memo = BoundedMemo(max_entries=3)
    for k in range(5):
        memo[k] = k
    assert len(memo) == 3 and 0 not in memo and memo.get(4) == 4
    topo = build_topology("h100-sxm")
    cache = CollectiveCache(max_entries=2)
    for size in (1e3, 1e4, 1e5, 1e6):
        collective_time(topo, "allreduce", "ring", range(8), size, cache=cache)
    assert len(cache.table("idle_time")) == 2
    assert cache_for(topo) is not cache        # an explicit cache is not bound implicitly


_USER_NODE = """
pcie-4x:
  description: "4 GPUs under one PCIe switch (a user's workstation)"
  hardware: h100-sxm
  gpus_per_node: 4
  fabric: pcie
  gpus_per_pcie_switch: 4
  scale_up: {efficiency: 0.80, step_latency_us: 1.0}
  scale_out: {efficiency: 0.94, step_latency_us: 3.7}
"""


def test_a_users_topology_file_is_wired_by_its_registered_fabric(tmp_path):
    path = tmp_path / "pcie-4x.yaml"
    path.write_text(_USER_NODE)
    topo = build_topology("h100-sxm", name=str(path))
    assert topo.name == "pcie-4x" and topo.num_gpus == 4
    # one switch: every pair is GPU -> switch -> GPU, never through the host bridge
    assert all(len(topo.path(a, b)) == 2 for a in range(4) for b in range(4) if a != b)
    cfg = {"model": "llama-3.1-8b", "cluster": {"hardware": "h100-sxm", "topology": str(path)},
           "parallelism": {"tp": 4},
           "workload": {"lengths": {"isl": 64, "osl": 2}, "arrivals": {"process": "batch"}, "num_requests": 1}}
    assert simulate(cfg).summary["topology"] == "pcie-4x"


def test_a_malformed_topology_file_fails_naming_it(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(_USER_NODE.replace("fabric: pcie", "fabric: hypercube"))
    with pytest.raises(Exception, match="hypercube.*nvswitch, mesh, pcie"):
        build_topology("h100-sxm", name=str(path))
