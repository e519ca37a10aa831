"""Iteration plans: the closed-form price equals the executor's played duration on an idle network,
for random small layouts of dense and MoE stages (DESIGN.md section 7)."""
from __future__ import annotations

import simpy
from hypothesis import given, settings, strategies as st

from simserve.catalog import get_hardware, get_model
from simserve.comm import Communicator
from simserve.cost import BatchStats, Precision, Shard
from simserve.cost.moe import ExpertRouter, MoeLayout, place_experts
from simserve.engine.executor import Executor
from simserve.iteration import IdleNetwork, price
from simserve.iteration.build import DensePlanner, MoePlanner
from simserve.network.flows import Network
from simserve.network.topology import build_topology

import numpy as np

H100 = get_hardware("h100-sxm")


def _played(topology, plan, fidelity="exact"):
    env = simpy.Environment()
    comm = Communicator(env, Network(env, topology), fidelity)
    proc = env.process(Executor(env, comm, fidelity).play(plan))
    env.run()
    return env.now, proc.value


batches = st.builds(lambda chunks, decodes: BatchStats.of(chunks, decodes),
                    st.lists(st.tuples(st.integers(1, 3000), st.integers(0, 4000)), max_size=3),
                    st.lists(st.integers(1, 8000), max_size=40)).filter(lambda b: b.tokens > 0)


@settings(max_examples=25, deadline=None)
@given(tp=st.sampled_from([1, 2, 4, 8]), layers=st.integers(1, 4), first=st.booleans(), last=st.booleans(),
       batch=batches, system=st.sampled_from([("h100-sxm", "dgx-h100"), ("mi300x", "mi300x-mesh")]))
def test_dense_price_equals_played_duration(tp, layers, first, last, batch, system):
    model = get_model("llama-3.1-8b")
    gpu = get_hardware(system[0])
    topo = build_topology(gpu, nodes=1, name=system[1])
    shard = Shard(tp=tp, num_layers=layers, first_stage=first, last_stage=last)
    plan = DensePlanner(model, shard, Precision(), gpu, tuple(range(tp)), "auto").plan(batch)
    played, split = _played(topo, plan)
    priced = price(plan, IdleNetwork(topo))
    assert abs(played - priced.total) <= 1e-9 * priced.total
    assert abs(sum(split) - played) <= 1e-9 * played


@settings(max_examples=20, deadline=None)
@given(ep=st.sampled_from([2, 4, 8]), tp=st.sampled_from([1, 2]), dense=st.integers(0, 1), moe=st.integers(1, 3),
       tokens=st.integers(1, 2000), seed=st.integers(0, 2**16), routing=st.sampled_from(["uniform", "zipf"]))
def test_moe_price_equals_played_duration(ep, tp, dense, moe, tokens, seed, routing):
    model = get_model("mixtral-8x7b")
    topo = build_topology(H100, nodes=1, name="dgx-h100")
    layout = MoeLayout(ep=ep, tp=tp)
    router = ExpertRouter(routing, 8, 2, min(moe, 2), np.random.default_rng(seed), np.random.default_rng(seed + 1))
    share = place_experts("round_robin", router.expected_popularity(), ep)
    planner = MoePlanner(model, Shard(tp=tp), Precision(), H100, tuple(range(ep)), layout, router, share,
                         allreduce="auto", alltoall="auto", dense_layers=dense, moe_layers=moe)
    plan = planner.plan(BatchStats.of([(tokens, 0)]))
    played, split = _played(topo, plan)
    priced = price(plan, IdleNetwork(topo))
    assert abs(played - priced.total) <= 1e-9 * priced.total
    # the played split books the same straggler wait as the price
    assert abs(split[3] - priced.seconds["alltoall"] - priced.seconds["straggler"]) <= 1e-9 * played


def test_a_plan_prints_as_steps():
    model = get_model("llama-3.1-8b")
    plan = DensePlanner(model, Shard(tp=2), Precision(), H100, (0, 1), "ring").plan(BatchStats.of([(512, 0)]))
    text = plan.describe()
    assert "allreduce x65" in text and "allgather" in text     # 2 per layer x 32 layers + embedding
