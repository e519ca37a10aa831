"""`fast` equals `exact` for every step kind a played plan has (issue 12 part 6), where two replicas'
stages share links: a dense stage's all-reduces interleaved with its compute slices, an MoE
stage's all-to-alls, a two-batch overlap step (TwoBatch) and a ring-attention prefill (RingPass).
Two TP2 / EP2 / CP2 groups, (0, 8) and (1, 9), cross two nodes through the same pair of NICs (two
GPUs per NIC), started at offsets that land the second group's traffic in the first one's compute
slices, in its collectives, and after it. Tolerance 1e-9 relative: the two fidelities play the same
model and differ only in float summation order (DESIGN.md 2)."""
import numpy as np
import pytest
import simpy

from simserve.catalog import get_hardware, get_model
from simserve.comm import Communicator
from simserve.cost import BatchStats, Precision, Shard
from simserve.cost.moe import ExpertRouter, MoeLayout, place_experts
from simserve.engine.executor import Executor
from simserve.iteration.build import DensePlanner, MoePlanner
from simserve.iteration.context import ContextParallelPlanner
from simserve.iteration.overlap import OverlapPlanner
from simserve.network.flows import Network
from simserve.network.topology import build_topology

H100 = get_hardware("h100-sxm")
SHARED_NIC = build_topology(H100, nodes=2, gpus_per_nic=2)
GROUPS = ((0, 8), (1, 9))


def _dense_plans(tokens):
    model = get_model("llama-3.1-8b")
    shard = Shard(tp=2, num_layers=3, first_stage=True, last_stage=True)
    return [DensePlanner(model, shard, Precision(), H100, g, "auto").plan(BatchStats.of([(tokens, 0)]))
            for g in GROUPS]


def _overlap_plans(tokens):
    """engine.overlap=tp_comm: a TwoBatch step (two half-batches, one's all-reduce beside the other's
    compute) of a chunk and 16 decodes."""
    model = get_model("llama-3.1-8b")
    shard = Shard(tp=2, num_layers=3, first_stage=True, last_stage=True)
    batch = BatchStats.of([(tokens, 0)], [1024] * 16)
    return [OverlapPlanner(model, shard, Precision(), H100, g, "auto").plan(batch) for g in GROUPS]


def _ring_plans(tokens):
    """parallelism.cp=2: a prefill's ring attention (RingPass: each K/V pass beside its block)."""
    model = get_model("llama-3.1-8b")
    shard = Shard(tp=1, num_layers=3, first_stage=True, last_stage=True)
    return [ContextParallelPlanner(model, shard, Precision(), H100, g, 2, "auto").plan(BatchStats.of([(tokens, 0)]))
            for g in GROUPS]


def _moe_plans(tokens, seed):
    model = get_model("mixtral-8x7b")
    plans = []
    for k, group in enumerate(GROUPS):
        router = ExpertRouter("zipf", 8, 2, 2, np.random.default_rng(seed + k), np.random.default_rng(seed + 7))
        share = place_experts("round_robin", router.expected_popularity(), 2)
        planner = MoePlanner(model, Shard(tp=1), Precision(), H100, group, MoeLayout(ep=2, tp=1), router, share,
                             allreduce="auto", alltoall="auto", dense_layers=0, moe_layers=2)
        plans.append(planner.plan(BatchStats.of([(tokens, 0)])))
    return plans


def _play(fidelity, plans, offsets_s, repeats=2):
    env = simpy.Environment()
    comm = Communicator(env, Network(env, SHARED_NIC), fidelity)
    out = []

    def replica(k, plan, start_s):
        executor = Executor(env, comm, fidelity)
        yield env.timeout(start_s)
        for rep in range(repeats):
            split = yield env.process(executor.play(plan))
            out.append((k, rep, env.now) + tuple(split))

    for k, (plan, start_s) in enumerate(zip(plans, offsets_s)):
        env.process(replica(k, plan, start_s))
    env.run()
    return sorted(out), comm


def _assert_same(plans, offsets_s):
    exact, comm_exact = _play("exact", plans, offsets_s)
    fast, comm_fast = _play("fast", plans, offsets_s)
    assert [r[:2] for r in fast] == [r[:2] for r in exact]
    for f, e in zip(fast, exact):
        assert f[2:] == pytest.approx(e[2:], rel=1e-9, abs=1e-15)
    assert dict(comm_fast.bytes_by_kind) == pytest.approx(dict(comm_exact.bytes_by_kind), rel=1e-9)
    return fast, comm_fast


@pytest.mark.parametrize("tokens", [64, 4096])
@pytest.mark.parametrize("offset_s", [0.0, 13e-6, 170e-6, 2e-3])
def test_interleaved_all_reduces_fast_equals_exact_on_a_shared_nic(tokens, offset_s):
    _assert_same(_dense_plans(tokens), (0.0, offset_s))


@pytest.mark.parametrize("tokens", [64, 4096])
@pytest.mark.parametrize("offset_s", [0.0, 13e-6, 170e-6, 2e-3])
def test_two_batch_overlap_fast_equals_exact_on_a_shared_nic(tokens, offset_s):
    _assert_same(_overlap_plans(tokens), (0.0, offset_s))


@pytest.mark.parametrize("tokens", [2048, 16384])
@pytest.mark.parametrize("offset_s", [0.0, 13e-6, 170e-6, 2e-3])
def test_ring_attention_fast_equals_exact_on_a_shared_nic(tokens, offset_s):
    _assert_same(_ring_plans(tokens), (0.0, offset_s))


@pytest.mark.parametrize("tokens,seed", [(64, 1), (2048, 5)])
@pytest.mark.parametrize("offset_s", [0.0, 9e-6, 95e-6, 1e-3])
def test_moe_all_to_alls_fast_equals_exact_on_a_shared_nic(tokens, seed, offset_s):
    _assert_same(_moe_plans(tokens, seed), (0.0, offset_s))


def test_shared_nic_slows_the_interleaved_stage():
    """The equality is not two lone runs: sharing the NIC makes the stage slower than alone."""
    plans = _dense_plans(4096)
    together, _ = _assert_same(plans, (0.0, 0.0))
    alone, _ = _play("exact", plans[:1], (0.0,))
    assert together[0][2] > alone[0][2] * 1.01


@pytest.mark.parametrize("make", [lambda: _dense_plans(4096), lambda: _moe_plans(2048, 5), lambda: _overlap_plans(4096)],
                         ids=["dense", "moe", "two-batch"])
def test_the_shared_case_replays_and_plays(make):
    """Where the second group starts inside the first one's iteration, `fast` both replays (its
    lone stretches) and plays (where the two meet): the equality above is not fast playing
    everything."""
    _, comm = _assert_same(make(), (0.0, 95e-6))
    assert comm.replayed > 0 and comm.played > 0
