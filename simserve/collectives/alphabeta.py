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


class _Case:
    """What the one-node closed forms need about a group on a symmetric topology."""

    def __init__(self, topology, op, ranks, S):
        self.topology, self.op, self.S = topology, op, S
        self.n = len(ranks)
        self.pair = (ranks[0], ranks[1])
        self.alpha = topology.path_latency_s(*self.pair)
        self.link = _port_bw(topology, *self.pair)
        self.mesh = topology.fabric == "mesh"
        self.fan_bw = self.link * (self.n - 1) if self.mesh else self.link  # talks to every peer at once
        self.ring_bw = self.fan_bw          # packed mesh rings load all n-1 member links
        self.gamma = topology.reduce_s_per_B
        self.launch = topology.launch_latency_s + topology.comm.launch_s
        self.reduce = op == "reducescatter"

    def protocols(self, time_fn) -> float:
        return _in_protocols(self.topology, self.pair, time_fn)


def _doubling_gather(c: _Case) -> float:
    if c.mesh:
        raise ConfigError("recursive doubling on a mesh sends different amounts per step over one link; "
                          "no single-bandwidth closed form")
    return c.protocols(lambda al, f, la: doubling_gather_s(c.n, c.S, al, c.link * f, c.gamma, la, c.reduce))


_CLOSED_FORMS = {
    ("allreduce", "ring"): lambda c: pipelined_ring_s(c.topology, c.op, c.n, c.S, c.ring_bw, c.pair),
    ("allreduce", "recursive_doubling"): lambda c: c.protocols(
        lambda al, f, la: recursive_doubling_allreduce_s(c.n, c.S, al, c.link * f, c.gamma, la)),
    ("allreduce", "halving_doubling"): lambda c: c.protocols(
        lambda al, f, la: halving_doubling_allreduce_s(c.n, c.S, al, c.link * f, c.gamma, la)),
    ("allreduce", "one_shot"): lambda c: one_shot_allreduce_s(c.n, c.S, c.alpha, c.fan_bw, c.gamma, c.launch),
    ("allreduce", "two_shot"): lambda c: two_shot_allreduce_s(c.n, c.S, c.alpha, c.fan_bw, c.gamma, c.launch),
    ("allreduce", "nvls"): lambda c: nvls_allreduce_s(c.n, c.S, c.alpha, c.link, c.topology.nvls_efficiency,
                                                      c.topology.nvls_latency_s, c.launch),
    ("alltoall", "direct"): lambda c: direct_alltoall_s(c.n, c.S, c.alpha, c.fan_bw, c.launch),
    ("alltoall", "pairwise"): lambda c: pairwise_alltoall_s(c.n, c.S, c.alpha, c.link, c.launch),
}
for _op in ("allgather", "reducescatter"):
    _CLOSED_FORMS[(_op, "ring")] = _CLOSED_FORMS[("allreduce", "ring")]
    _CLOSED_FORMS[(_op, "recursive_doubling")] = _CLOSED_FORMS[(_op, "halving_doubling")] = _doubling_gather
    _CLOSED_FORMS[(_op, "direct")] = lambda c: c.protocols(
        lambda al, f, la: direct_gather_s(c.n, c.S, al, c.fan_bw * f, c.gamma, la, c.reduce))


def alpha_beta_time(topology, op: str, algo: str, ranks, S: float) -> float:
    """Closed-form time of a concrete algorithm on a symmetric topology (see module doc)."""
    ranks = tuple(ranks)
    nodes = sorted({topology.node_of(r) for r in ranks})
    if len(ranks) == 1:
        return topology.launch_latency_s + topology.comm.launch_s
    if topology.fabric not in ("nvswitch", "mesh"):
        raise ConfigError(f"no closed form on a {topology.fabric} fabric (its paths differ by pair)")
    if len(nodes) > 1:
        raise ConfigError("closed forms cover one node (or hierarchical across nodes)")
    case = _Case(topology, op, ranks, S)
    if op == "sendrecv":
        return sendrecv_s(S, case.alpha, case.link, case.launch)
    form = _CLOSED_FORMS.get((op, algo))
    if form is None:
        raise ConfigError(f"no closed form for {algo} {op} (its transfers contend; play it on the network)")
    return form(case)


def hierarchical_sequential_s(topology, ranks, S) -> float:
    """Hierarchical all-reduce with its three phases one after another (intra RS, inter RD on 1/G,
    intra AG) in the best protocol: an upper bound on the streamed (overlapped) version simserve
    plays, whose phases overlap."""
    ranks = tuple(ranks)
    nodes = sorted({topology.node_of(r) for r in ranks})
    G = len(ranks) // len(nodes)
    local = [r for r in ranks if topology.node_of(r) == nodes[0]]
    intra_bw = _port_bw(topology, local[0], local[1]) * (len(local) - 1 if topology.fabric == "mesh" else 1)
    other = next(r for r in ranks if topology.node_of(r) != nodes[0])
    intra_kinds = topology.kinds_of(topology.path(local[0], local[1]))
    inter_kinds = topology.kinds_of(topology.path(local[0], other))
    model = topology.comm
    return min(hierarchical_allreduce_s(
        len(nodes), G, S, model.hop_latency_s("ring", p, intra_kinds, True),
        intra_bw * model.bandwidth_factor("ring", p, len(nodes)), model.hop_latency_s("ring", p, inter_kinds, True),
        topology.path_bw_Bps(local[0], other) * model.bandwidth_factor("ring", p, len(nodes)),
        topology.reduce_s_per_B, model.base_latency_s("ring", p) + model.launch_s) for p in model.protocols)


def _in_protocols(topology, pair, time_fn) -> float:
    """A phased algorithm priced in each of the library's protocols (step latency, bandwidth
    factor, base latency; collectives.protocols), the fastest taken, as the tuner would."""
    model = topology.comm
    kinds = topology.kinds_of(topology.path(*pair))
    return min(time_fn(model.hop_latency_s("ring", p, kinds, False), model.bandwidth_factor("ring", p, 1),
                       model.base_latency_s("ring", p) + model.launch_s) for p in model.protocols)


def pipelined_ring_s(topology, op, n, S, bw_Bps, pair) -> float:
    """One node's pipelined ring in the protocol the tuner picks: min over protocols of
    base + steps x hop latency + ring bytes / (bw x protocol factor at this size's channels)
    (NCCL tuning.cc, enqueue.cc; comm.md 1.3), plus the eager launch cost when there is one."""
    model = topology.comm
    kinds = topology.kinds_of(topology.path(*pair))
    steps = 2 * (n - 1) if op == "allreduce" else n - 1
    ring_bytes = steps / n * S
    share = {p: model.channel_fraction("ring", p, S, n, 1) for p in model.protocols}   # channels for this size
    return model.launch_s + min(model.base_latency_s("ring", p) + steps * model.hop_latency_s("ring", p, kinds, False)
                                + ring_bytes / (bw_Bps * model.bandwidth_factor("ring", p, 1, share[p]))
                                for p in model.protocols)


def _port_bw(topology, a, b) -> float:
    return topology.path_bw_Bps(a, b)
