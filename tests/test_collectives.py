"""Schedules compute what their op promises (symbolically), and play in their closed-form time."""
import pytest
from hypothesis import given, settings, strategies as st

from simserve.collectives import ALGORITHMS, ScheduleError, TopologyFacts, build, verify
from simserve.collectives.alphabeta import alpha_beta_time, hierarchical_sequential_s
from simserve.collectives.rings import ring_channels
from simserve.collectives.schedule import Phase, Schedule, Transfer
from simserve.comm import collective_time
from simserve.errors import ConfigError
from simserve.network import build_topology

SWITCH = TopologyFacts(node_of=lambda r: 0, nvls=True)
MESH = TopologyFacts(direct=lambda a, b: a != b)
NODES_OF_4 = TopologyFacts(node_of=lambda r: r // 4)
NVLS_NODES_OF_4 = TopologyFacts(node_of=lambda r: r // 4, nvls=True)

DGX_H100 = build_topology("h100-sxm")
MI300X = build_topology("mi300x")
TWO_DGX = build_topology("h100-sxm", nodes=2)

sizes = st.floats(min_value=1.0, max_value=2.0**31, allow_nan=False)


def _pow2_only(algo, op):
    return (op, algo) in {("allgather", "recursive_doubling"), ("reducescatter", "halving_doubling")}


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 16), nbytes=sizes, data=st.data())
def test_every_schedule_delivers_every_contribution(n, nbytes, data):
    op = data.draw(st.sampled_from([o for o in ALGORITHMS if o != "sendrecv"]))
    algo = data.draw(st.sampled_from(ALGORITHMS[op]))
    facts = data.draw(st.sampled_from([SWITCH, MESH, NODES_OF_4, NVLS_NODES_OF_4]))
    ranks = list(range(n))
    if _pow2_only(algo, op) and n & (n - 1):
        with pytest.raises(ConfigError, match="power-of-two"):
            build(op, algo, ranks, nbytes, facts)
        return
    if algo == "hierarchical" and facts in (NODES_OF_4, NVLS_NODES_OF_4) and n > 4 and n % 4:
        with pytest.raises(ConfigError, match="same number of GPUs"):
            build(op, algo, ranks, nbytes, facts)
        return
    one_switch = facts is SWITCH or (facts is NVLS_NODES_OF_4 and n <= 4)
    if algo == "nvls" and not one_switch and n > 1:    # one rank: nothing to reduce anywhere
        with pytest.raises(ConfigError, match="nvls"):
            build(op, algo, ranks, nbytes, facts)
        return
    # NVLS_TREE: NVLS in every node of 2 or more equal nodes (the 4-GPU nodes here: n = 8, 12, 16)
    if algo == "nvls_tree" and n > 1 and not (facts is NVLS_NODES_OF_4 and n > 4 and n % 4 == 0):
        with pytest.raises(ConfigError, match="nvls_tree"):
            build(op, algo, ranks, nbytes, facts)
        return
    verify(build(op, algo, ranks, nbytes, facts))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 12), data=st.data())
def test_alltoall_with_a_skewed_matrix_delivers_every_pair(n, data):
    matrix = [[data.draw(st.floats(0, 1e6)) for _ in range(n)] for _ in range(n)]
    for algo in ALGORITHMS["alltoall"]:
        verify(build("alltoall", algo, list(range(n)), None, SWITCH, matrix=matrix))


def test_checker_catches_double_counting_and_missing_blocks():
    bb = (1.0,)
    twice = Schedule("allreduce", "bad", (0, 1), 1.0, (
        Phase((Transfer(0, 1, 1.0, (0,), True), Transfer(1, 0, 1.0, (0,), True))),
        Phase((Transfer(0, 1, 1.0, (0,), True),))), bb)
    with pytest.raises(ScheduleError, match="twice"):
        verify(twice)
    short = Schedule("allreduce", "bad", (0, 1, 2), 1.0, (Phase((Transfer(0, 1, 1.0, (0,), True),)),), bb)
    with pytest.raises(ScheduleError, match="expected"):
        verify(short)


def test_ring_channels_use_disjoint_links_on_a_mesh():
    # RCCL on an 8-GPU xGMI mesh: a TP8 group runs rings on all 7 links of every GPU; a TP2 group only
    # has the one link between its pair (comm.md 2; seed 003's TP2-vs-TP1 effect).
    rings = ring_channels(range(8), MI300X.direct)
    edges = [(r[i], r[(i + 1) % 8]) for r in rings for i in range(8)]
    assert len(rings) == 7 and len(set(edges)) == len(edges) == 56
    assert ring_channels((2, 5), MI300X.direct) == ((2, 5),)
    assert len(ring_channels(range(8), DGX_H100.direct)) == 1      # a switch port: one ring suffices


def test_non_power_of_two_is_refused_clearly_where_required():
    with pytest.raises(ConfigError, match="power-of-two group; got 6 ranks"):
        build("allgather", "recursive_doubling", range(6), 1e6)
    with pytest.raises(ConfigError, match="unknown all-reduce algorithm"):
        build("allreduce", "butterfly", range(4), 1e6)


# ---- closed form = played time on an idle network ----------------------------------------------

CONTENTION_FREE = [("allreduce", a) for a in ("ring", "recursive_doubling", "halving_doubling", "one_shot",
                                               "two_shot", "nvls")] + \
    [("allgather", a) for a in ("ring", "recursive_doubling", "direct")] + \
    [("reducescatter", a) for a in ("ring", "halving_doubling", "direct")] + \
    [("alltoall", "direct"), ("alltoall", "pairwise"), ("sendrecv", "direct")]


@settings(max_examples=120, deadline=None)
@given(n=st.integers(2, 8), nbytes=sizes, case=st.sampled_from(CONTENTION_FREE),
       topo=st.sampled_from([DGX_H100, MI300X]))
def test_played_time_equals_alpha_beta_closed_form(n, nbytes, case, topo):
    op, algo = case
    ranks = [0, n - 1] if op == "sendrecv" else list(range(n))
    if algo == "nvls" and not topo.nvls or _pow2_only(algo, op) and (n & (n - 1) or topo.fabric == "mesh"):
        return
    played, used = collective_time(topo, op, algo, ranks, nbytes)
    assert used == algo
    # float precision: both sum the same few terms in a different order
    assert played == pytest.approx(alpha_beta_time(topo, op, algo, ranks, nbytes), rel=1e-9)


@settings(max_examples=20, deadline=None)
@given(nbytes=sizes, per_node=st.sampled_from([2, 4, 8]), nodes=st.sampled_from([2, 3]))
def test_hierarchical_overlaps_its_phases(nbytes, per_node, nodes):
    # streamed (NVRAR overlaps its phases): never slower than the three phases one after another,
    # never faster than its intra-node reduce-scatter + all-gather bytes alone on the NVLink ports
    topo = build_topology("h100-sxm", nodes=nodes)
    ranks = [m * 8 + i for m in range(nodes) for i in range(per_node)]
    played, used = collective_time(topo, "allreduce", "hierarchical", ranks, nbytes)
    assert used == "hierarchical"
    assert played <= hierarchical_sequential_s(topo, ranks, nbytes) * (1 + 1e-9)
    port_Bps = topo.links[topo.up_port[0]].bw_Bps
    assert played >= 2 * (per_node - 1) / per_node * nbytes / port_Bps
