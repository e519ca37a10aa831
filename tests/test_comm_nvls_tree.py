"""NCCL's NVLS_TREE (multi-node NVLS) all-reduce: where `auto` offers it, what it costs, and the
measurements it is held to (issue 12 parts 1 and 5)."""
import json
import math

import pytest

from simserve.cli import main
from simserve.collectives.select import candidates
from simserve.comm import collective_time
from simserve.comm.cli import busbw_factor
from simserve.comm.compile import compiled
from simserve.comm.tuner import idle_s
from simserve.network import build_topology

GiB, MiB = 2**30, 2**20
TWO_H100 = build_topology("h100-sxm", nodes=2, launch="eager")
FOUR_H100 = build_topology("h100-sxm", nodes=4, launch="eager")


def busbw(topo, algo, ranks, nbytes):
    t, _ = collective_time(topo, "allreduce", algo, ranks, nbytes)
    return nbytes / t * busbw_factor("allreduce", len(ranks)) / 1e9


def test_cli_sweep_and_explain_list_nvls_tree_on_two_dgx_h100(capsys):
    argv = ["collective", "--op", "allreduce", "--gpus", "16", "--nodes", "2", "--topology", "dgx-h100"]
    assert main([*argv, "--sweep", "1MiB:8GiB", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[-1]["algorithm"] == "nvls_tree" and rows[-1]["protocol"] == "simple"
    assert main([*argv, "--bytes", "1GiB", "--explain"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert {"ring", "tree", "nvls_tree"} <= set(listed)


def test_nvls_tree_applies_only_across_nvls_nodes():
    assert "nvls_tree" in candidates("allreduce", TWO_H100, range(16), GiB)
    assert "nvls_tree" not in candidates("allreduce", build_topology("h100-sxm"), range(8), GiB)  # one node
    assert "nvls_tree" not in candidates("allreduce", build_topology("a100", nodes=2), range(16), GiB)  # no SHARP
    # one GPU per node: no NVLS on the node (NCCL's ncclNvlsInit needs 2 GPUs)
    assert "nvls_tree" not in candidates("allreduce", TWO_H100, [0, 8], GiB)


# nccl#1221: 2 nodes x 8 H100 with 8 x 400G NICs, NCCL 2.19.3, 4-8 GiB all-reduce: busbw 430 GB/s with
# NVLS enabled (NVLS_TREE on 2 nodes), 330 without. 10%: the tolerance for large messages;
# simserve gives NCCL's own per-channel cap (8 x 57.7 = 462 GB/s, tuning.cc perChMaxNVLSTreeBws) less
# its latency, +7%; the measured run was RoCE (the NICs do not bind on 2 nodes, see the next test).
def test_two_node_nvls_tree_busbw_within_10pct_of_nccl_1221():
    assert busbw(TWO_H100, "nvls_tree", range(16), 8 * GiB) == pytest.approx(430.0, rel=0.10)
    assert busbw(TWO_H100, "auto", range(16), 8 * GiB) > busbw(TWO_H100, "ring", range(16), 8 * GiB)


# nccl#1649 (NVIDIA's GTC 2024 figure quoted there): NVLS+Tree all-reduce busbw about 370-380 GB/s at
# scale; simserve's 4-node value sits at NCCL's >2-node cap, 8 x 45.5 = 364 GB/s. 10% as above.
def test_four_node_nvls_tree_busbw_near_nccl_at_scale():
    assert busbw(FOUR_H100, "nvls_tree", range(32), 8 * GiB) == pytest.approx(375.0, rel=0.10)


@pytest.mark.parametrize("topo, nodes", [(TWO_H100, 2), (FOUR_H100, 4)])
def test_nvls_tree_time_is_bounded_below_by_its_nic_bytes_and_nccl_latency(topo, nodes):
    """Physics: each rail's head moves S/G per NIC direction on 2 nodes (the two mirrored trees
    each send half the shard each way), 3 S/2G on 4 (three half-shards a node: an inner node of one
    tree, a leaf or inner node of the other); no faster than
    that at the NIC's effective rate, plus NCCL's NVLS_TREE latency (25 + 2 log2(n) x 20.9 us)."""
    nbytes, g = 1 * GiB, 8
    nic_Bps = min(link.bw_Bps for link in topo.links if link.kind == "network")   # a NIC (leaf uplinks carry more)
    per_nic = nbytes / g * (1.0 if nodes == 2 else 1.5)
    latency_s = (25.0 + 2 * math.log2(nodes) * 20.9) * 1e-6 + topo.comm.launch_s
    t = idle_s(topo, "allreduce", "nvls_tree", tuple(range(8 * nodes)), nbytes)
    assert t >= per_nic / nic_Bps + latency_s
    # and small messages pay exactly NCCL's latency model plus the eager launch
    tiny = idle_s(topo, "allreduce", "nvls_tree", tuple(range(8 * nodes)), 8.0)
    assert tiny == pytest.approx(latency_s, rel=1e-3)


def test_nvls_tree_loads_nics_and_nvlink_in_one_overlapped_phase():
    program = compiled(TWO_H100, "allreduce", "nvls_tree", range(16), GiB)
    assert len(program.phases) == 1 and program.protocol == "simple"
    assert set(program.bytes_by_kind) >= {"nvlink", "network"}
