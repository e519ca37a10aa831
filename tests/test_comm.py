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


# nccl-tests all_reduce_perf -g 4 on 4x H100 80GB HBM3 SXM (NCCL 2.26.2, no CUDA graph), out of
# place, microseconds: a public benchmark log (also in experiments/validate_comm.py, held out)
H100_X4_NCCL_TESTS_US = {64 * KiB: 24.56, 128 * KiB: 24.62, 256 * KiB: 26.80, 512 * KiB: 26.67}


def test_latency_bound_below_1MB_bandwidth_bound_above_256MB():
    # The shape of nccl-tests curves: small messages cost about the call's latency (the ring runs
    # on fewer channels there, so their time hardly grows with size: NCCL enqueue.cc
    # topoGetAlgoInfo), large ones reach the busbw plateau. Small sizes against the measured 4x
    # H100 sweep within 25% (the band for small messages); the plateau starts near
    # 256 MB: below it the Simple protocol's 14 x 3.4 us step latencies (NCCL tuning.cc, comm.md
    # 1.3) still cost >10% (NCCL's own model gives 86% at 64 MiB).
    eager = build_topology("h100-sxm", launch="eager", kernels="none")
    for size, measured_us in H100_X4_NCCL_TESTS_US.items():
        t, _ = collective_time(eager, "allreduce", "auto", range(4), size)
        assert t * 1e6 == pytest.approx(measured_us, rel=0.25), size
    ranks = range(8)
    big = busbw_GBps(DGX_H100, "allreduce", "ring", ranks, GiB)
    assert busbw_GBps(DGX_H100, "allreduce", "ring", ranks, 256 * MiB) > 0.9 * big
    assert busbw_GBps(DGX_H100, "allreduce", "ring", ranks, 64 * MiB) < 0.9 * big


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


def test_recursive_doubling_beats_ring_small_loses_large():
    # alpha-beta: log2 n steps against 2(n-1), but the full vector every step (comm.md 1.2); both
    # priced in the same protocols (LL / LL128 / Simple, NCCL tuning.cc), so the crossover sits where
    # the bandwidth term overtakes 2(n-1) - log2 n step latencies: MBs on NVLink, sooner on A100.
    x8 = crossover_bytes(DGX_H100, range(8))
    assert 1 * MiB < x8 < 32 * MiB
    assert crossover_bytes(build_topology("a100"), range(8)) < x8     # slower links: bandwidth matters sooner


def test_two_node_small_allreduce_pays_network_latency_only_on_inter_node_steps():
    # A lock-step ring paid the 3.7 us network step on all 30 steps (~120 us at 128 KB, issue 12);
    # pipelined, only the inter-node steps pay it, and NCCL's tree is quicker still.
    ring, _ = collective_time(TWO_DGX_H100, "allreduce", "ring", range(16), 128 * KiB)
    tree, _ = collective_time(TWO_DGX_H100, "allreduce", "tree", range(16), 128 * KiB)
    assert tree < ring < 60e-6


def test_auto_chooses_by_size_and_reports_its_choice():
    # NCCL picks NVLS from 2 MB up on H100x8 (comm.md 1.3, nccl-tests#309); small sizes go to a
    # latency-optimal algorithm (custom one-shot within vLLM's 256 KB cap at 8 GPUs, comm.md 1.4).
    _, big = collective_time(DGX_H100, "allreduce", "auto", range(8), GiB)
    _, small = collective_time(DGX_H100, "allreduce", "auto", range(8), 8)
    assert big == "nvls" and small == "one_shot"
    # across nodes auto chooses among what NCCL's tuner has (ring, tree, NVLS_TREE), not hierarchical / RD
    _, across = collective_time(TWO_DGX_H100, "allreduce", "auto", range(16), 16 * MiB)
    assert across in ("ring", "tree", "nvls_tree")
    _, mesh = collective_time(MI300X, "allreduce", "auto", range(8), GiB)
    assert mesh == "ring"


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


def test_fast_turns_a_replay_back_into_flows_when_a_collective_overlaps_it():
    # the first all-reduce starts on idle links and replays; the second finds them held and is
    # played, which turns the first back into flows at that instant: both then share the ports
    # exactly as in `exact` (before issue 12 part 6 the replay kept its idle-network time)
    def run(fidelity):
        env = simpy.Environment()
        comm = Communicator(env, Network(env, DGX_H100), fidelity)
        out = []

        def one():
            out.append((yield from comm.run("allreduce", range(8), 64 * MiB, algo="ring")))

        env.process(one())
        env.process(one())
        env.run()
        return out, comm

    fast, comm = run("fast")
    exact, _ = run("exact")
    assert comm.played == 2 and comm.replayed == 0
    assert [d for _, d in fast] == pytest.approx([d for _, d in exact], rel=1e-9)


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
    from simserve.comm.compile import compiled, idle_time
    from simserve.comm.player import played_idle_time

    for algo in candidates("allreduce", topo, tuple(ranks), nbytes):
        program = compiled(topo, "allreduce", algo, tuple(ranks), nbytes)
        assert idle_time(topo, program) == pytest.approx(played_idle_time(topo, program), rel=1e-9), algo
