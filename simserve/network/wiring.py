"""How one node's GPUs are wired (scale-up fabrics) and how nodes are joined (scale-out), as a
registry: a catalog topology names its `fabric` and the builder calls the registered wiring.

Adding a fabric is one function registered here (`FABRICS.register("name")`) plus catalog entries
that name it; the wirings shipped:
  nvswitch  every GPU one duplex port into a switch plane at its whole NVLink bandwidth
  mesh      one point-to-point link from each GPU to every other GPU of the node (xGMI)
  pcie      GPUs under PCIe switches (gpus_per_pcie_switch each) below one host bridge
A wiring adds vertices and links to the graph and returns the node's intra-node routes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from simserve.network.graph import Link
from simserve.registry import Registry


class Graph:
    """Vertices and directed links under construction."""

    def __init__(self):
        self.names: list[str] = []
        self.links: list[Link] = []

    def vertex(self, name: str) -> int:
        self.names.append(name)
        return len(self.names) - 1

    def link(self, src, dst, line_bw_Bps, efficiency, latency_s, kind) -> int:
        self.links.append(Link(len(self.links), src, dst, line_bw_Bps * efficiency, latency_s, kind,
                               line_bw_Bps))
        return len(self.links) - 1

    def duplex(self, a, b, line_bw_Bps, efficiency, latency_s, kind) -> tuple[int, int]:
        return (self.link(a, b, line_bw_Bps, efficiency, latency_s, kind),
                self.link(b, a, line_bw_Bps, efficiency, latency_s, kind))


@dataclass
class NodeWiring:
    """What a wiring hands back for one node."""
    routes: dict = field(default_factory=dict)        # (src GPU, dst GPU) -> link ids
    adjacent: dict = field(default_factory=dict)      # (a, b) -> link id of a direct GPU-GPU link
    up_port: dict = field(default_factory=dict)       # GPU -> its switch port up (in-switch reduction)
    down_port: dict = field(default_factory=dict)


@dataclass(frozen=True)
class NodeContext:
    """Inputs of a wiring: the node's GPUs, the GPU card, and the scale-up link parameters."""
    node: int
    members: tuple[int, ...]
    gpu: object
    efficiency: float
    step_latency_s: float
    scale_up_GBps: float | None      # override: per GPU, per direction, all links together
    options: dict


FABRICS: Registry = Registry("fabric")
# Which scale-up link kind a GPU card must declare for each fabric (pcie works with any card).
FABRIC_LINK_KIND = {"nvswitch": "nvlink", "mesh": "xgmi"}


@FABRICS.register("nvswitch")
def wire_nvswitch(graph: Graph, ctx: NodeContext) -> NodeWiring:
    total_Bps = ctx.scale_up_GBps * 1e9 if ctx.scale_up_GBps else ctx.gpu.scale_up.total_bw_Bps
    switch = graph.vertex(f"nvswitch{ctx.node}")
    out = NodeWiring()
    for g in ctx.members:   # GPU -> switch -> GPU is one step: half the alpha per hop
        out.up_port[g], out.down_port[g] = graph.duplex(g, switch, total_Bps, ctx.efficiency,
                                                        ctx.step_latency_s / 2, "nvlink")
    out.routes = {(a, b): (out.up_port[a], out.down_port[b]) for a in ctx.members for b in ctx.members if a != b}
    return out


@FABRICS.register("mesh")
def wire_mesh(graph: Graph, ctx: NodeContext) -> NodeWiring:
    su = ctx.gpu.scale_up
    per_link_Bps = ctx.scale_up_GBps * 1e9 / su.links if ctx.scale_up_GBps else su.link_bw_Bps
    out = NodeWiring()
    for a in ctx.members:
        for b in ctx.members:
            if a != b:
                out.adjacent[(a, b)] = graph.link(a, b, per_link_Bps, ctx.efficiency, ctx.step_latency_s, "xgmi")
                out.routes[(a, b)] = (out.adjacent[(a, b)],)
    return out


@FABRICS.register("pcie")
def wire_pcie(graph: Graph, ctx: NodeContext) -> NodeWiring:
    """GPU -> PCIe switch -> host bridge -> PCIe switch -> GPU: a step spans up to 4 hops."""
    lane_Bps = ctx.scale_up_GBps * 1e9 if ctx.scale_up_GBps else ctx.gpu.pcie_bw_Bps
    per_switch = int(ctx.options.get("gpus_per_pcie_switch", 2))
    hop_s = ctx.step_latency_s / 4
    host = graph.vertex(f"host{ctx.node}")
    up, down, switch_of, host_links = {}, {}, {}, {}
    members = list(ctx.members)
    for first in range(0, len(members), per_switch):
        psw = graph.vertex(f"pcie{ctx.node}.{first // per_switch}")
        host_links[psw] = graph.duplex(psw, host, lane_Bps, ctx.efficiency, hop_s, "pcie")
        for g in members[first:first + per_switch]:
            up[g], down[g] = graph.duplex(g, psw, lane_Bps, ctx.efficiency, hop_s, "pcie")
            switch_of[g] = psw
    out = NodeWiring()
    for a in members:
        for b in members:
            if a == b:
                continue
            if switch_of[a] == switch_of[b]:
                out.routes[(a, b)] = (up[a], down[b])
            else:
                out.routes[(a, b)] = (up[a], host_links[switch_of[a]][0], host_links[switch_of[b]][1], down[b])
    return out


@dataclass(frozen=True)
class ScaleOut:
    """Scale-out parameters (catalog `scale_out`, overridable per config)."""
    efficiency: float
    step_latency_us: float
    leaf_down_ports: int = 32
    oversubscription: float = 1.0
    rail_optimized: bool = True
    gpus_per_nic: int = 1            # GPUs sharing one NIC (1: a NIC per GPU, as DGX H100)


def wire_leaf_spine(graph: Graph, num_gpus: int, gpn: int, nic_Bps: float, so: ScaleOut):
    """One NIC per `gpus_per_nic` GPUs into a leaf; leaves joined by one non-blocking spine (the
    fluid idealisation of ECMP over the spine layer), leaf uplinks = down ports / oversubscription.
    Rail-optimised: the NICs of the same local index on every node share a leaf (a rail)."""
    nic_up, nic_down, leaf_of = [0] * num_gpus, [0] * num_gpus, [0] * num_gpus
    leaf_ids: dict[tuple, int] = {}
    nic_links: dict[tuple[int, int], tuple[int, int]] = {}
    ports_on_leaf: dict[int, int] = {}
    step_out_s = so.step_latency_us * 1e-6
    for g in range(num_gpus):
        node, local = divmod(g, gpn)
        nic = local // so.gpus_per_nic
        key = (nic, node // so.leaf_down_ports) if so.rail_optimized else \
            ((node * gpn + nic * so.gpus_per_nic) // (so.leaf_down_ports * so.gpus_per_nic),)
        if key not in leaf_ids:
            leaf_ids[key] = graph.vertex("leaf" + ".".join(map(str, key)))
        leaf = leaf_ids[key]
        if (node, nic) not in nic_links:
            # the NIC hops carry the whole per-step alpha (NCCL's NET latency is end to end)
            nic_links[(node, nic)] = graph.duplex(g, leaf, nic_Bps, so.efficiency, step_out_s / 2, "network")
            ports_on_leaf[leaf] = ports_on_leaf.get(leaf, 0) + 1
        nic_up[g], nic_down[g] = nic_links[(node, nic)]
        leaf_of[g] = leaf
    leaf_up, leaf_down = {}, {}
    if len(ports_on_leaf) > 1:
        core = graph.vertex("spine")
        for leaf, ports in ports_on_leaf.items():
            # switch traversal time is inside NCCL's measured end-to-end step latency
            leaf_up[leaf], leaf_down[leaf] = graph.duplex(leaf, core, ports * nic_Bps / so.oversubscription,
                                                          so.efficiency, 0.0, "network")
    return tuple(nic_up), tuple(nic_down), tuple(leaf_of), leaf_up, leaf_down
