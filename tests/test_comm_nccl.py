"""Collectives as NCCL and RCCL run them (issue 12): measured bus bandwidths and latencies, mesh
sub-groups on all their links, rails across nodes, and the shape of the curve over sizes."""
import pytest
from hypothesis import given, settings, strategies as st

from simserve.comm import collective_time
from simserve.comm.cli import busbw_factor
from simserve.comm.compile import compiled
from simserve.network import build_topology

GiB, MiB, KiB = 2**30, 2**20, 2**10
H100 = build_topology("h100-sxm")
H100_EAGER = build_topology("h100-sxm", launch="eager")
TWO_H100_EAGER = build_topology("h100-sxm", nodes=2, launch="eager")
FOUR_H100 = build_topology("h100-sxm", nodes=4)
A100 = build_topology("a100")
MI300X = build_topology("mi300x")


def busbw(topo, algo, ranks, nbytes):
    t, _ = collective_time(topo, "allreduce", algo, ranks, nbytes)
    return nbytes / t * busbw_factor("allreduce", len(ranks)) / 1e9


# 10%: the tolerance for large-message bus bandwidth. The references are single nccl-tests /
# rccl-tests runs (run-to-run spread a few %), the model has one effective rate per link type.
@pytest.mark.parametrize("topo, algo, ranks, measured", [
    (H100, "ring", range(8), 361.0),        # real 8x H100, NCCL, NVLS off, 1 GiB (comm.md 2)
    (H100, "nvls", range(8), 480.0),        # NVLS 8x H100 above 256 MB (comm.md 2, nccl-tests#309)
    (A100, "ring", range(8), 232.0),        # Azure 8x A100 AR busbw (comm.md 5)
    (MI300X, "ring", range(8), 317.0),      # 8x MI300X RCCL AR busbw (comm.md 5, ROCm blog)
    (FOUR_H100, "auto", range(32), 366.0),  # NCCL 4 nodes x 8 H100, 8 NDR NICs each (issue 12)
], ids=["h100-ring", "h100-nvls", "a100", "mi300x", "4x8-h100"])
def test_1GiB_allreduce_busbw_within_10pct_of_measured(topo, algo, ranks, measured):
    assert busbw(topo, algo, ranks, GiB) == pytest.approx(measured, rel=0.10)


def test_1MiB_on_8_h100_without_graphs_within_20pct_of_42us():
    # nccl-tests default (no CUDA graph) measures ~42 us (issue 12). 20%: the LL protocol's
    # bandwidth (halved, capped at llMaxBw 141 GB/s, NCCL tuning.cc) is NCCL's model, not a fit,
    # and the eager launch cost is fitted to the 8 B point only (topologies.yaml).
    t, algo = collective_time(H100_EAGER, "allreduce", "ring", range(8), MiB)
    assert t == pytest.approx(42e-6, rel=0.20)
    assert compiled(H100_EAGER, "allreduce", "ring", range(8), MiB).protocol == "ll"


def test_128KB_on_two_h100_nodes_within_25pct_of_45us():
    # ~45 us small all-reduce on 2 nodes, NCCL without graphs (comm.md 5, NVIDIA/nccl#1244); 25%:
    # the NET step latency depends on the host (1 or 2 us overhead per step, tuning.cc).
    t, algo = collective_time(TWO_H100_EAGER, "allreduce", "auto", range(16), 128 * KiB)
    assert t == pytest.approx(45e-6, rel=0.25)
    assert algo in ("ring", "tree")


def test_tp4_ring_on_an_8_gpu_mesh_uses_its_three_member_links():
    # K4* has no decomposition into 3 Hamiltonian cycles (Tillson 1980): edge-disjoint rings give
    # 2 links' worth; all six directed rings at half rate load all 3 member links per GPU.
    link_GBps = MI300X.links[MI300X.path(0, 1)[0]].bw_Bps / 1e9
    tp4 = busbw(MI300X, "ring", range(4), GiB)
    assert tp4 == pytest.approx(3 * link_GBps, rel=0.02)
    assert tp4 / (2 * link_GBps) == pytest.approx(1.5, rel=0.02)


def test_channels_cross_nodes_on_every_rail():
    # one channel per NIC: every NIC of a node carries inter-node traffic
    program = compiled(FOUR_H100, "allreduce", "ring", range(32), GiB)
    nics = {i for i in program.links if FOUR_H100.links[i].kind == "network"
            and FOUR_H100.links[i].src < FOUR_H100.num_gpus}
    assert len(nics) == 32


@settings(max_examples=25, deadline=None)
@given(topo=st.sampled_from([H100, A100, MI300X, TWO_H100_EAGER, FOUR_H100]),
       exps=st.lists(st.integers(3, 33), min_size=2, max_size=12, unique=True))
def test_ring_time_grows_and_busbw_rises_to_its_plateau(topo, exps):
    # the latency, protocol-switch and bandwidth regimes in NCCL's order: the tuner takes the
    # fastest protocol at each size, a minimum of increasing functions, so time never falls and
    # busbw = max over protocols of S / t_p never falls either
    ranks = range(topo.num_gpus)
    sizes = sorted(2.0**e for e in exps)
    times = [collective_time(topo, "allreduce", "ring", ranks, s)[0] for s in sizes]
    bws = [s / t for s, t in zip(sizes, times)]
    assert all(b >= a * (1 - 1e-12) for a, b in zip(times, times[1:]))
    assert all(b >= a * (1 - 1e-12) for a, b in zip(bws, bws[1:]))


def test_gb200_nvl72_is_one_72_gpu_nvlink_domain():
    nvl72 = build_topology("b200", name="gb200-nvl72")
    assert nvl72.nodes == 1 and nvl72.num_gpus == 72
    # ring busbw below NCCL's 721.8 GB/s effective NVLink 5 rate (topo.h SM100, comm.md 1.3): at
    # 1 GiB the Simple protocol's 142 steps x 3.4 us still cost ~13%
    ring = busbw(nvl72, "ring", range(72), GiB)
    assert 0.8 * 721.8 < ring < 721.8
    assert busbw(nvl72, "auto", range(72), GiB) > ring     # NVLS on the NVLink Switch


def test_cli_explain_lists_candidates_in_every_protocol(capsys):
    from simserve.cli import main
    assert main(["collective", "--gpus", "8", "--bytes", "1MiB", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "auto -> ring" in out               # NCCL picks ring/LL at 1 MB on H100x8 (nccl-tests#309)
    rows = [line.split() for line in out.splitlines()[2:]]
    assert {(r[0], r[1]) for r in rows} >= {("ring", "ll"), ("ring", "ll128"), ("ring", "simple"), ("nvls", "-")}
    ring = {r[1]: float(r[2]) for r in rows if r[0] == "ring"}
    assert min(ring, key=ring.get) == "ll"
