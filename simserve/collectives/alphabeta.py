"""Closed-form (alpha-beta) cost of each algorithm, the textbook formulas of comm.md 1.2.

alpha_s: latency of one step (one GPU-to-GPU path); bw_Bps: the per-GPU bandwidth the algorithm's
pattern gets (its links in one direction together); gamma_s_per_B: local reduction cost per byte;
launch_s: fixed cost per call. S follows nccl-tests: the full vector for all-reduce, the total
for all-gather and reduce-scatter, each rank's send buffer for all-to-all.

`alpha_beta_time` derives alpha and the bandwidths from a Topology for the symmetric cases (one
NVSwitch or mesh node; hierarchical over rail-aligned nodes); rings are pipelined and take the
protocol NCCL's tuner would (`pipelined_ring_s`). On an idle network a played schedule
whose transfers do not contend takes exactly this long; tests check that to float precision.
"""
from __future__ import annotations

import math

from simserve.errors import ConfigError


def _fold(n: int) -> tuple[int, int]:
    """(log2 of the power-of-two core, 1 if ranks are folded in/out first else 0)."""
    p2 = 1 << (n.bit_length() - 1)
    return p2.bit_length() - 1, int(p2 != n)


def ring_allreduce_s(n, S, alpha_s, bw_Bps, gamma_s_per_B=0.0, launch_s=0.0):
    return launch_s + 2 * (n - 1) * alpha_s + 2 * (n - 1) / n * S / bw_Bps + (n - 1) / n * S * gamma_s_per_B


def recursive_doubling_allreduce_s(n, S, alpha_s, bw_Bps, gamma_s_per_B=0.0, launch_s=0.0):
    log_p2, folded = _fold(n)
    return launch_s + (log_p2 + 2 * folded) * (alpha_s + S / bw_Bps) + (log_p2 + folded) * S * gamma_s_per_B


def halving_doubling_allreduce_s(n, S, alpha_s, bw_Bps, gamma_s_per_B=0.0, launch_s=0.0):
    log_p2, folded = _fold(n)
    p2 = 1 << log_p2
    return (launch_s + 2 * log_p2 * alpha_s + 2 * (p2 - 1) / p2 * S / bw_Bps + (p2 - 1) / p2 * S * gamma_s_per_B
            + folded * (2 * (alpha_s + S / bw_Bps) + S * gamma_s_per_B))


def one_shot_allreduce_s(n, S, alpha_s, bw_Bps, gamma_s_per_B=0.0, launch_s=0.0):
    return launch_s + alpha_s + (n - 1) * S / bw_Bps + (n - 1) * S * gamma_s_per_B


def two_shot_allreduce_s(n, S, alpha_s, bw_Bps, gamma_s_per_B=0.0, launch_s=0.0):
    return launch_s + 2 * alpha_s + 2 * (n - 1) / n * S / bw_Bps + (n - 1) / n * S * gamma_s_per_B


def nvls_allreduce_s(n, S, alpha_s, bw_Bps, nvls_efficiency, nvls_latency_s, launch_s=0.0):
    return launch_s + alpha_s + nvls_latency_s + S / (bw_Bps * nvls_efficiency)


def ring_gather_s(n, S, alpha_s, bw_Bps, gamma_s_per_B=0.0, launch_s=0.0, reduce=False):
    """Ring all-gather (reduce=False) or reduce-scatter (reduce=True)."""
    return launch_s + (n - 1) * (alpha_s + S / (n * bw_Bps)) + reduce * (n - 1) / n * S * gamma_s_per_B


def doubling_gather_s(n, S, alpha_s, bw_Bps, gamma_s_per_B=0.0, launch_s=0.0, reduce=False):
    """Recursive-doubling all-gather or recursive-halving reduce-scatter (n a power of two)."""
    return launch_s + math.log2(n) * alpha_s + (n - 1) / n * S / bw_Bps + reduce * (n - 1) / n * S * gamma_s_per_B


def direct_gather_s(n, S, alpha_s, bw_Bps, gamma_s_per_B=0.0, launch_s=0.0, reduce=False):
    return launch_s + alpha_s + (n - 1) / n * S / bw_Bps + reduce * (n - 1) / n * S * gamma_s_per_B


def direct_alltoall_s(n, S, alpha_s, bw_Bps, launch_s=0.0):
    return launch_s + alpha_s + (n - 1) / n * S / bw_Bps


def pairwise_alltoall_s(n, S, alpha_s, bw_Bps, launch_s=0.0):
    return launch_s + (n - 1) * (alpha_s + S / (n * bw_Bps))


def sendrecv_s(S, alpha_s, bw_Bps, launch_s=0.0):
    return launch_s + alpha_s + S / bw_Bps


def hierarchical_allreduce_s(nodes, gpus_per_node, S, alpha_intra_s, bw_intra_Bps, alpha_inter_s,
                             bw_inter_Bps, gamma_s_per_B=0.0, launch_s=0.0):
    """Intra ring RS + inter recursive-doubling AR of S/G per rail + intra ring AG (comm.md 1.2)."""
    G = gpus_per_node
    shard = S / G
    return (launch_s + 2 * (G - 1) * alpha_intra_s + 2 * (G - 1) / G * S / bw_intra_Bps
            + (G - 1) / G * S * gamma_s_per_B
            + recursive_doubling_allreduce_s(nodes, shard, alpha_inter_s, bw_inter_Bps, gamma_s_per_B))


def alpha_beta_time(topology, op: str, algo: str, ranks, S: float) -> float:
    """Closed-form time of a concrete algorithm on a symmetric topology (see module doc)."""
    ranks = tuple(ranks)
    n = len(ranks)
    nodes = sorted({topology.node_of(r) for r in ranks})
    launch = topology.launch_latency_s + topology.comm.launch_s
    gamma = topology.reduce_s_per_B
    if n == 1:
        return launch
    if topology.fabric not in ("nvswitch", "mesh"):
        raise ConfigError(f"no closed form on a {topology.fabric} fabric (its paths differ by pair)")
    a, b = ranks[0], ranks[1]
    if algo == "hierarchical" and len(nodes) > 1:
        G = n // len(nodes)
        local = [r for r in ranks if topology.node_of(r) == nodes[0]]
        intra_bw = _port_bw(topology, local[0], local[1]) * (len(local) - 1 if topology.fabric == "mesh" else 1)
        other = next(r for r in ranks if topology.node_of(r) != nodes[0])
        intra_kinds = topology.kinds_of(topology.path(local[0], local[1]))
        inter_kinds = topology.kinds_of(topology.path(local[0], other))
        model = topology.comm
        return min(hierarchical_allreduce_s(
            len(nodes), G, S, model.hop_latency_s("ring", p, intra_kinds, True),
            intra_bw * model.bandwidth_factor("ring", p, len(nodes)), model.hop_latency_s("ring", p, inter_kinds, True),
            topology.path_bw_Bps(local[0], other) * model.bandwidth_factor("ring", p, len(nodes)), gamma,
            model.base_latency_s("ring", p) + model.launch_s) for p in model.protocols)
    if len(nodes) > 1:
        raise ConfigError("closed forms cover one node (or hierarchical across nodes)")
    alpha = topology.path_latency_s(a, b)
    link = _port_bw(topology, a, b)
    mesh = topology.fabric == "mesh"
    fan_bw = link * (n - 1) if mesh else link          # a pattern that talks to every peer at once
    ring_bw = link * (n - 1) if mesh else link      # packed mesh rings load all n-1 member links
    if op == "allreduce":
        if algo == "ring":
            return pipelined_ring_s(topology, op, n, S, ring_bw, (a, b))
        if algo == "recursive_doubling":
            return _in_protocols(topology, (a, b), lambda al, f, la: recursive_doubling_allreduce_s(
                n, S, al, link * f, gamma, la))
        if algo == "halving_doubling":
            return _in_protocols(topology, (a, b), lambda al, f, la: halving_doubling_allreduce_s(
                n, S, al, link * f, gamma, la))
        if algo == "one_shot":
            return one_shot_allreduce_s(n, S, alpha, fan_bw, gamma, launch)
        if algo == "two_shot":
            return two_shot_allreduce_s(n, S, alpha, fan_bw, gamma, launch)
        if algo == "nvls":
            return nvls_allreduce_s(n, S, alpha, link, topology.nvls_efficiency, topology.nvls_latency_s, launch)
    elif op in ("allgather", "reducescatter"):
        reduce = op == "reducescatter"
        if algo == "ring":
            return pipelined_ring_s(topology, op, n, S, ring_bw, (a, b))
        if algo in ("recursive_doubling", "halving_doubling"):
            if mesh:
                raise ConfigError("recursive doubling on a mesh sends different amounts per step over one link; "
                                  "no single-bandwidth closed form")
            return _in_protocols(topology, (a, b), lambda al, f, la: doubling_gather_s(
                n, S, al, link * f, gamma, la, reduce))
        if algo == "direct":
            return _in_protocols(topology, (a, b), lambda al, f, la: direct_gather_s(
                n, S, al, fan_bw * f, gamma, la, reduce))
    elif op == "alltoall":
        if algo == "direct":
            return direct_alltoall_s(n, S, alpha, fan_bw, launch)
        if algo == "pairwise":
            return pairwise_alltoall_s(n, S, alpha, link, launch)
    elif op == "sendrecv":
        return sendrecv_s(S, alpha, link, launch)
    raise ConfigError(f"no closed form for {algo} {op} (its transfers contend; play it on the network)")


def _in_protocols(topology, pair, time_fn) -> float:
    """A phased algorithm priced in each of the library's protocols (step latency, bandwidth
    factor, base latency; collectives.protocols), the fastest taken, as the tuner would."""
    model = topology.comm
    kinds = topology.kinds_of(topology.path(*pair))
    return min(time_fn(model.hop_latency_s("ring", p, kinds, False), model.bandwidth_factor("ring", p, 1),
                       model.base_latency_s("ring", p) + model.launch_s) for p in model.protocols)


def pipelined_ring_s(topology, op, n, S, bw_Bps, pair) -> float:
    """One node's pipelined ring in the protocol the tuner picks: min over protocols of
    base + steps x hop latency + ring bytes / (bw x protocol factor) (NCCL tuning.cc, comm.md 1.3),
    plus the eager launch cost when there is one."""
    model = topology.comm
    kinds = topology.kinds_of(topology.path(*pair))
    steps = 2 * (n - 1) if op == "allreduce" else n - 1
    ring_bytes = steps / n * S
    return model.launch_s + min(model.base_latency_s("ring", p) + steps * model.hop_latency_s("ring", p, kinds, False)
                                + ring_bytes / (bw_Bps * model.bandwidth_factor("ring", p, 1))
                                for p in model.protocols)


def _port_bw(topology, a, b) -> float:
    return topology.path_bw_Bps(a, b)
