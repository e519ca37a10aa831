"""Collectives on the modelled network against measured references, and the engine-facing API."""
import json
import math

import pytest
import simpy

from simserve.comm import Communicator, collective_time
from simserve.comm.cli import busbw_factor, parse_size, sweep_sizes
from simserve.errors import ConfigError
from simserve.network import Network, build_topology

GiB, MiB, KiB = 2**30, 2**20, 2**10
DGX_H100 = build_topology("h100-sxm")
TWO_DGX_H100 = build_topology("h100-sxm", nodes=2)
MI300X = build_topology("mi300x")


def busbw_GBps(topo, op, algo, ranks, nbytes):
    time_s, _ = collective_time(topo, op, algo, ranks, nbytes)
    return nbytes / time_s * busbw_factor(op, len(ranks)) / 1e9


@pytest.mark.parametrize("n, measured_GBps", [(8, 361.0), (4, 355.0), (2, 329.0)])
def test_h100_nvswitch_ring_allreduce_1GiB_busbw_matches_nccl(n, measured_GBps):
    # Measured on a real 8x H100 node with NCCL, NVLS off, 1 GiB all-reduce (comm.md section 2).
    # 15%: the tolerance; the model has one effective NVLink rate (370.8 GB/s, NCCL topo.h)
    # for every group size, while NCCL loses a little more on 2 GPUs (fewer channels).
    assert busbw_GBps(DGX_H100, "allreduce", "ring", range(n), GiB) == pytest.approx(measured_GBps, rel=0.15)


def test_h100_nvls_allreduce_reaches_measured_480_GBps():
    # comm.md 2: NVLS raises 8-GPU all-reduce busbw to about 480 GB/s above 256 MB; 15% as above.
    assert busbw_GBps(DGX_H100, "allreduce", "nvls", range(8), GiB) == pytest.approx(480.0, rel=0.15)


def test_mi300x_ring_allreduce_uses_all_seven_links_at_tp8_and_one_at_tp2():
    # comm.md 5: MI300X AR busbw 317 GB/s (8 GPUs, 7 links of ~48 GB/s usable); TP2 has one link.
    assert busbw_GBps(MI300X, "allreduce", "ring", range(8), GiB) == pytest.approx(317.0, rel=0.15)
    assert busbw_GBps(MI300X, "allreduce", "ring", (0, 1), GiB) == pytest.approx(48.0, rel=0.01)


def test_small_allreduce_latency_matches_ncclss_model():
    # comm.md 1.3 worked example: H100x8 ring LL = 6.6 + 14 x 0.6 = 15.0 us.
    time_s, _ = collective_time(DGX_H100, "allreduce", "ring", range(8), 8)
    assert time_s == pytest.approx(15.0e-6, rel=0.01)


def test_latency_bound_below_64KB_bandwidth_bound_above_64MB():
    # The shape of nccl-tests curves (issue 3): flat time for small messages, flat busbw for large.
    ranks = range(8)
    t_8B, _ = collective_time(DGX_H100, "allreduce", "ring", ranks, 8)
    t_64K, _ = collective_time(DGX_H100, "allreduce", "ring", ranks, 64 * KiB)
    assert t_64K < 1.1 * t_8B
    big = busbw_GBps(DGX_H100, "allreduce", "ring", ranks, GiB)
    assert busbw_GBps(DGX_H100, "allreduce", "ring", ranks, 64 * MiB) > 0.9 * big


def crossover_bytes(topo, ranks):
    """Smallest size where ring beats recursive doubling (bisection on log size)."""
    def rd_wins(size):
        return (collective_time(topo, "allreduce", "recursive_doubling", ranks, size)[0]
                < collective_time(topo, "allreduce", "ring", ranks, size)[0])
    lo, hi = 8.0, 4.0 * GiB
    assert rd_wins(lo) and not rd_wins(hi)
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if rd_wins(mid) else (lo, mid)
    return hi


def test_recursive_doubling_beats_ring_small_loses_large_and_crossover_moves_with_gpus():
    # alpha-beta: crossover where (2(n-1) - log2 n) alpha = (log2 n - 2(n-1)/n) S/B, i.e. 8 alpha B
    # at n=4 and 8.8 alpha B at n=8 (comm.md 1.2); both near 2 MB with NCCL's alpha and B.
    x4 = crossover_bytes(DGX_H100, range(4))
    x8 = crossover_bytes(DGX_H100, range(8))
    assert 256 * KiB < x4 < x8 < 16 * MiB
    assert x8 / x4 == pytest.approx(8.8 / 8, rel=0.02)
    x8_a100 = crossover_bytes(build_topology("a100"), range(8))
    assert x8_a100 < x8              # slower links: bandwidth matters sooner


@pytest.mark.parametrize("nbytes", [128 * KiB, 512 * KiB, 2 * MiB])
def test_two_nodes_hierarchical_and_recursive_doubling_beat_flat_ring_well_over_1_5x(nbytes):
    # Seed 001 (NVRAR, arXiv 2511.09557): 1.9-3.6x lower latency than NCCL at 128 KB-2 MB across nodes.
    # Our flat ring waits on the inter-node step in every one of its 30 phase-synchronous steps, so
    # the gap here is larger than against NCCL's pipelined multi-channel rings; we assert the claim.
    ranks = range(16)
    ring, _ = collective_time(TWO_DGX_H100, "allreduce", "ring", ranks, nbytes)
    hier, _ = collective_time(TWO_DGX_H100, "allreduce", "hierarchical", ranks, nbytes)
    rd, _ = collective_time(TWO_DGX_H100, "allreduce", "recursive_doubling", ranks, nbytes)
    assert ring / hier > 1.5 and ring / rd > 1.5


def test_auto_chooses_by_size_and_reports_its_choice():
    # NCCL picks NVLS from 2 MB up on H100x8 (comm.md 1.3, nccl-tests#309); small sizes go to a
    # latency-optimal algorithm (custom one-shot within vLLM's 256 KB cap at 8 GPUs, comm.md 1.4).
    _, big = collective_time(DGX_H100, "allreduce", "auto", range(8), GiB)
    _, small = collective_time(DGX_H100, "allreduce", "auto", range(8), 8)
    assert big == "nvls" and small == "one_shot"
    _, across = collective_time(TWO_DGX_H100, "allreduce", "auto", range(16), 16 * MiB)
    assert across == "hierarchical"
    _, mesh = collective_time(MI300X, "allreduce", "auto", range(8), GiB)
    assert mesh in ("ring", "halving_doubling")


def test_doubling_link_bandwidth_shortens_a_large_allreduce():
    fast_links = build_topology("h100-sxm", scale_up_GBps=900)
    slow, _ = collective_time(DGX_H100, "allreduce", "ring", range(8), 64 * MiB)
    fast, _ = collective_time(fast_links, "allreduce", "ring", range(8), 64 * MiB)
    assert fast < 0.6 * slow


# ---- Communicator: exact vs fast, contention, accounting -----------------------------------------

def _run_engine(fidelity, concurrent_groups):
    env = simpy.Environment()
    net = Network(env, TWO_DGX_H100)
    comm = Communicator(env, net, fidelity)
    results = []

    def replica(ranks, nbytes):
        for _ in range(3):
            results.append((yield from comm.run("allreduce", ranks, nbytes, algo="auto", count=2)))
            yield env.timeout(1e-4)

    for ranks, nbytes in concurrent_groups:
        env.process(replica(ranks, nbytes))
    env.run()
    return results, comm, env.now


def test_fast_replays_the_exact_time_and_bytes_when_links_are_free():
    groups = [(tuple(range(8)), 4 * MiB), (tuple(range(8, 16)), 256 * KiB)]   # disjoint nodes
    exact, comm_exact, end_exact = _run_engine("exact", groups)
    fast, comm_fast, end_fast = _run_engine("fast", groups)
    assert [a for a, _ in exact] == [a for a, _ in fast]
    assert [d for _, d in fast] == pytest.approx([d for _, d in exact], rel=1e-9)
    assert end_fast == pytest.approx(end_exact, rel=1e-12)
    assert comm_fast.bytes_by_kind == pytest.approx(comm_exact.bytes_by_kind, rel=1e-12)
    assert comm_fast.replayed == 12 and comm_fast.played == 0
    assert comm_fast.time_by_op["allreduce"] == pytest.approx(comm_exact.time_by_op["allreduce"], rel=1e-9)


@pytest.mark.parametrize("fidelity", ["exact", "fast"])
def test_traffic_sharing_a_groups_links_slows_it_and_fast_plays_it(fidelity):
    # A 64 MiB point-to-point transfer 0 -> 8 holds GPU 0's NIC while a 2-node TP16 all-reduce starts:
    # the all-reduce must be played (not replayed) and take longer than alone.
    alone, _ = collective_time(TWO_DGX_H100, "allreduce", "ring", range(16), 64 * MiB)
    env = simpy.Environment()
    net = Network(env, TWO_DGX_H100)
    comm = Communicator(env, net, fidelity)
    out = []

    def tp16():
        out.append((yield from comm.run("allreduce", range(16), 64 * MiB, algo="ring")))

    net.transfer(0, 8, 64 * MiB)
    env.process(tp16())
    env.run()
    assert comm.played == 1 and comm.replayed == 0
    assert out[0][1] > 1.05 * alone


def test_exact_collectives_on_the_same_links_share_bandwidth():
    alone, _ = collective_time(DGX_H100, "allreduce", "ring", range(8), 64 * MiB)
    env = simpy.Environment()
    comm = Communicator(env, Network(env, DGX_H100), "exact")
    out = []

    def one():
        out.append((yield from comm.run("allreduce", range(8), 64 * MiB, algo="ring")))

    env.process(one())
    env.process(one())
    env.run()
    assert min(d for _, d in out) > 1.8 * alone       # two equal rings on the same ports: ~2x


def test_fast_plays_a_collective_that_overlaps_a_replay():
    env = simpy.Environment()
    comm = Communicator(env, Network(env, DGX_H100), "fast")

    def one():
        yield from comm.run("allreduce", range(8), 64 * MiB, algo="ring")

    env.process(one())
    env.process(one())
    env.run()
    assert comm.replayed == 1 and comm.played == 1


def test_communicator_rejects_unknown_fidelity_and_algorithm():
    env = simpy.Environment()
    with pytest.raises(ConfigError, match="fidelity"):
        Communicator(env, Network(env, DGX_H100), "approximate")
    with pytest.raises(ConfigError, match="unknown allreduce algorithm"):
        collective_time(DGX_H100, "allreduce", "bogus", range(8), 1e6)


# ---- CLI -------------------------------------------------------------------------------------

def test_sizes_parse_binary_and_decimal_units():
    assert [parse_size(s) for s in ("8B", "1KiB", "1MiB", "1GiB", "1KB", "4096")] == \
        [8, 1024, 2**20, 2**30, 1000, 4096]
    assert len(sweep_sizes("8B:1GiB")) == 28
    with pytest.raises(ConfigError):
        parse_size("1XB")


def _cli(argv):
    from simserve.cli import main
    return main(["collective", *argv])


def test_cli_prints_nccl_tests_fields(capsys):
    assert _cli(["--op", "allreduce", "--algo", "ring", "--bytes", "1GiB", "--gpus", "8",
                 "--topology", "dgx-h100"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["algorithm"] == "ring"
    assert row["busbw_GBps"] == pytest.approx(row["algbw_GBps"] * 2 * 7 / 8)
    assert row["time_s"] == pytest.approx(2**30 / row["algbw_GBps"] / 1e9)


def test_cli_sweep_json_and_plot(capsys, tmp_path):
    assert _cli(["--sweep", "1KiB:1MiB", "--json", "--gpus", "16", "--nodes", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 11 and all(r["algorithm"] != "auto" for r in rows)
    png = tmp_path / "busbw.png"
    assert _cli(["--sweep", "1KiB:64KiB", "--plot", str(png), "--gpus", "4"]) == 0
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("argv", [["--topology", "dgx-h900"], ["--bytes", "lots"], ["--gpus", "16"],
                                  ["--gpus", "6", "--nodes", "4"], ["--algo", "nvls", "--topology", "mi300x-mesh"]])
def test_cli_bad_input_exits_2_with_one_line(argv, capsys):
    assert _cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("simserve: error:") and "\n" not in err


@pytest.mark.parametrize("topo, ranks", [(DGX_H100, range(8)), (MI300X, range(6)), (TWO_DGX_H100, range(16)),
                                         (build_topology("h100-sxm", name="pcie"), range(8))])
@pytest.mark.parametrize("nbytes", [8, 3 * MiB])
def test_pure_fluid_idle_time_equals_the_simpy_network(topo, ranks, nbytes):
    # fast mode memoises the pure evaluation; it must be the SimPy network's answer, contention
    # (tree, one-shot on a switch, flat rings across nodes) included. Tolerance: float rounding.
    from simserve.collectives.select import candidates
    from simserve.comm.player import compiled, idle_time, played_idle_time

    for algo in candidates("allreduce", topo, tuple(ranks), nbytes):
        program = compiled(topo, "allreduce", algo, tuple(ranks), nbytes)
        assert idle_time(topo, program) == pytest.approx(played_idle_time(topo, program), rel=1e-9), algo
