"""Topology builder and the max-min flow network, against hand-computed cases."""
import pytest
import simpy

from simserve.errors import CatalogError, ConfigError
from simserve.network import Link, Network, Topology, build_topology, topology_catalog
from simserve.network.graph import Router
from simserve.catalog import get_hardware


def _toy_topology(capacities_Bps, routes, latency_s=0.0):
    """A Topology with hand-made links: routes maps (src, dst) -> link ids."""
    links = tuple(Link(i, 0, 1, bw, latency_s, "network") for i, bw in enumerate(capacities_Bps))
    return Topology(name="toy", description="", gpu=get_hardware("h100-sxm"), fabric="nvswitch", nodes=1,
                    gpus_per_node=4, vertex_names=("a", "b", "c", "d"), links=links, launch_latency_s=0.0,
                    router=Router(4, {k: tuple(v) for k, v in routes.items()}))


def _run(topology, transfers):
    """Start every (src, dst, bytes) at t=0; return each one's completion time."""
    env = simpy.Environment()
    net = Network(env, topology)
    done = {}
    for k, (src, dst, nbytes) in enumerate(transfers):
        net.transfer(src, dst, nbytes).callbacks.append(lambda _e, k=k: done.__setitem__(k, env.now))
    env.run()
    return [done[k] for k in range(len(transfers))], net


def test_one_flow_takes_latency_plus_bytes_over_bandwidth():
    topo = _toy_topology([10.0], {(0, 1): (0,)}, latency_s=0.5)
    (t,), _ = _run(topo, [(0, 1, 100.0)])
    assert t == pytest.approx(0.5 + 100.0 / 10.0, rel=1e-12)


def test_two_flows_sharing_a_link_each_get_half():
    topo = _toy_topology([10.0], {(0, 1): (0,), (2, 1): (0,)})
    times, _ = _run(topo, [(0, 1, 50.0), (2, 1, 50.0)])
    assert times == pytest.approx([10.0, 10.0], rel=1e-12)   # 50 B at 5 B/s each


def test_flow_bottlenecked_elsewhere_leaves_the_rest_to_the_other():
    # Link 0 (10 B/s) carries A and B; B also crosses link 1 (4 B/s). Max-min: B = 4, A = 6.
    # B (20 B) ends at 5 s; A then has 60 - 30 = 30 B left at the full 10 B/s: ends at 8 s.
    topo = _toy_topology([10.0, 4.0], {(0, 1): (0,), (0, 2): (0, 1)})
    (t_a, t_b), _ = _run(topo, [(0, 1, 60.0), (0, 2, 20.0)])
    assert t_b == pytest.approx(5.0, rel=1e-12)
    assert t_a == pytest.approx(8.0, rel=1e-12)


def test_a_flow_starting_later_slows_the_running_one():
    topo = _toy_topology([10.0], {(0, 1): (0,)})
    env = simpy.Environment()
    net = Network(env, topo)
    first = net.transfer(0, 1, 100.0)

    def late():
        yield env.timeout(5.0)                 # 50 B of the first flow are through
        yield net.transfer(0, 1, 25.0)         # both at 5 B/s: the late one needs 5 s
        assert env.now == pytest.approx(10.0)

    env.process(late())
    env.run()
    assert first.ok
    # first: 50 B left at t=5, 25 B at 5 B/s until 10, then 25 B at 10 B/s -> 12.5 s
    assert env.now == pytest.approx(12.5, rel=1e-12)


def test_events_per_transfer_do_not_grow_with_size():
    topo = build_topology("h100-sxm")
    counts = []
    for nbytes in (1e3, 1e12):
        env = simpy.Environment()
        scheduled = [0]
        original = env.schedule
        env.schedule = lambda *a, **k: (scheduled.__setitem__(0, scheduled[0] + 1), original(*a, **k))[1]
        net = Network(env, topo)
        for dst in range(1, 8):
            net.transfer(0, dst, nbytes)
        env.run()
        counts.append(scheduled[0])
    assert counts[0] == counts[1]


def test_bytes_by_kind_counts_each_transfer_once_per_link_kind():
    topo = build_topology("h100-sxm", nodes=2)
    _, net = _run(topo, [(0, 1, 1e6), (0, 8, 2e6)])
    assert net.bytes_by_kind["nvlink"] == 1e6          # GPU -> NVSwitch -> GPU is one NVLink transfer
    assert net.bytes_by_kind["network"] == 2e6


# ---- topologies --------------------------------------------------------------------------------

def test_catalog_lists_every_required_topology():
    assert {"dgx-h100", "dgx-h200", "dgx-b200", "dgx-a100", "mi300x-mesh", "mi325x-mesh", "mi355x-mesh",
            "pcie"} <= set(topology_catalog())


def test_dgx_h100_port_is_450_line_370_effective():
    # comm.md 1.3: 18 NVLink4 links x 25 GB/s = 450 GB/s line; NCCL topo.h 20.6 x 18 = 370.8 effective
    topo = build_topology("h100-sxm")
    up = topo.links[topo.path(0, 1)[0]]
    assert up.kind == "nvlink" and up.line_bw_Bps == 450e9
    assert topo.path_bw_Bps(0, 1) == pytest.approx(370.8e9)
    assert topo.path_latency_s(0, 1) == pytest.approx(0.6e-6)    # NCCL NVLink LL step


@pytest.mark.parametrize("hw, per_link_GBps", [("mi300x", 64.0), ("mi325x", 64.0), ("mi355x", 76.8)])
def test_amd_mesh_has_seven_direct_links_per_gpu(hw, per_link_GBps):
    topo = build_topology(hw)
    out_links = [l for l in topo.links if l.src == 0 and l.id not in topo.host_up]
    assert len(out_links) == 7 and all(l.kind == "xgmi" for l in out_links)
    assert all(l.line_bw_Bps == per_link_GBps * 1e9 for l in out_links)
    assert all(len(topo.path(0, d)) == 1 for d in range(1, 8))


def test_pcie_paths_cross_the_host_bridge_between_switches():
    topo = build_topology("h100-sxm", name="pcie")
    assert len(topo.path(0, 1)) == 2 and len(topo.path(0, 2)) == 4
    assert {topo.links[i].kind for i in topo.path(0, 7)} == {"pcie"}


def test_multi_node_rail_optimised_same_rail_stays_on_one_leaf():
    topo = build_topology("h100-sxm", nodes=2)
    assert len(topo.path(0, 8)) == 2                  # NIC -> rail leaf -> NIC
    assert len(topo.path(0, 9)) == 4                  # cross rail: up to the spine layer and down
    assert topo.path_bw_Bps(0, 8) == pytest.approx(50e9 * 0.94)   # NDR 46-48 of 50 GB/s (comm.md 2)


def test_oversubscription_divides_the_leaf_uplinks():
    topo = build_topology("h100-sxm", nodes=2, rail_optimized=False, leaf_down_ports=8, oversubscription=4)
    uplink = topo.links[topo.path(0, 8)[1]]
    assert uplink.bw_Bps == pytest.approx(8 * 50e9 / 4 * 0.94)     # 8 NICs share 1/4 of their bandwidth
    times, _ = _run(topo, [(g, 8 + g, 1e9) for g in range(8)])   # all 8 GPUs of node 0 to node 1 at once
    assert max(times) == pytest.approx(8 * 1e9 / uplink.bw_Bps + topo.path_latency_s(0, 8), rel=1e-9)


def test_overrides_set_per_gpu_bandwidth_and_latency():
    topo = build_topology("h100-sxm", scale_up_GBps=900, latency_us=2.0)
    assert topo.path_bw_Bps(0, 1) == pytest.approx(900e9 * 0.824)
    assert topo.path_latency_s(0, 1) == pytest.approx(2e-6)
    mesh = build_topology("mi300x", scale_up_GBps=700)
    assert mesh.links[mesh.path(0, 1)[0]].line_bw_Bps == pytest.approx(100e9)


def test_bad_topologies_fail_with_one_clear_line():
    with pytest.raises(CatalogError, match="unknown topology"):
        build_topology("h100-sxm", name="dgx-h900")
    with pytest.raises(ConfigError, match="8 GPUs per node"):
        build_topology("h100-sxm", gpus_per_node=16)
    with pytest.raises(ConfigError, match="needs xgmi"):
        build_topology("h100-sxm", name="mi300x-mesh")
    with pytest.raises(ConfigError, match="scale-out option"):
        build_topology("h100-sxm", nodes=2, spine_count=3)


@pytest.mark.parametrize("name, nodes", [("dgx-h100", 2), ("mi325x-mesh", 1), ("pcie", 1)])
def test_every_gpu_has_its_own_pcie_link_to_host_memory(name, nodes):
    """KV swap runs over each GPU's PCIe x16 to its node's pinned host memory: one duplex link per
    GPU at the line rate (hardware.yaml pcie_bw_Bps) times the efficiency measured for host copies
    (cost.swap, 55 GB/s of 64 on an H200, simserve/catalog/profiles/h200/host_copies.csv)."""
    from simserve.cost.swap import host_copy_fit
    hw = "mi325x" if name.startswith("mi325x") else "h100-sxm"
    topo = build_topology(hw, nodes=nodes, name=name)
    assert len(topo.host_up) == len(topo.host_down) == topo.num_gpus
    eff = host_copy_fit().efficiency
    assert 0.8 < eff < 0.9                               # 55.2 / 64 measured
    for g in range(topo.num_gpus):
        up, down = topo.links[topo.host_up[g]], topo.links[topo.host_down[g]]
        assert up.src == down.dst == g and up.kind == down.kind == "pcie"
        assert topo.vertex_names[up.dst] == f"hostmem{topo.node_of(g)}"
        assert up.bw_Bps == pytest.approx(topo.gpu.pcie_bw_Bps * eff)
