"""Topology catalog and builder: which directed links join which GPUs, at what bandwidth and latency.

A `Topology` is frozen data (pure layer): GPU ids 0..N-1 (node-major: GPU g sits on node
g // gpus_per_node), further vertices for switches, directed `Link`s and a route between any two
vertices. Link bandwidths are *effective* (line rate x protocol efficiency), because that is what a
collective achieves on a large message; the line rate is kept beside it for reports.

Catalog entries (``catalog/topologies.yaml``) say how a node is wired (`fabric`) and hold the
efficiency and step latency per fabric with their sources; the bandwidths come from the GPU's
hardware entry, so a user's own GPU card works with any fabric its links allow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

from simserve.catalog import CATALOG_DIR, Gpu, _load_yaml, get_hardware
from simserve.errors import CatalogError, ConfigError

LINK_KINDS = ("nvlink", "xgmi", "pcie", "network")
FABRICS = ("nvswitch", "mesh", "pcie")
# Which scale-up link kind a GPU card must declare for each fabric (pcie works with any card).
_FABRIC_LINK_KIND = {"nvswitch": "nvlink", "mesh": "xgmi"}


@dataclass(frozen=True)
class Link:
    """One direction of a physical link (or of a switch port)."""
    id: int
    src: int
    dst: int
    bw_Bps: float        # effective: line rate x efficiency
    latency_s: float     # this hop's share of a step's alpha
    kind: str            # nvlink | xgmi | pcie | network
    line_bw_Bps: float = 0.0


@dataclass(frozen=True)
class FabricParams:
    efficiency: float
    step_latency_us: float


@dataclass(frozen=True)
class ScaleOutParams:
    efficiency: float
    step_latency_us: float
    leaf_down_ports: int = 32
    oversubscription: float = 1.0
    rail_optimized: bool = True


@dataclass(frozen=True)
class TopologySpec:
    """A catalog entry: how one node is wired, plus defaults for its links."""
    name: str
    description: str
    hardware: str
    gpus_per_node: int
    fabric: str
    scale_up: FabricParams
    scale_out: ScaleOutParams
    launch_latency_us: float = 0.0
    nvls: bool = False
    nvls_efficiency: float = 1.0
    nvls_latency_us: float = 0.0
    gpus_per_pcie_switch: int = 2


@dataclass(frozen=True)
class Topology:
    name: str
    description: str
    gpu: Gpu
    fabric: str
    nodes: int
    gpus_per_node: int
    vertex_names: tuple[str, ...]          # index = vertex id; GPUs first
    links: tuple[Link, ...]
    launch_latency_s: float                # fixed cost per collective call
    nvls: bool = False
    nvls_efficiency: float = 1.0
    nvls_latency_s: float = 0.0
    reduce_s_per_B: float = 0.0            # gamma; ~0: NCCL fuses the reduction into the copy (comm.md 1.2)
    up_port: tuple[int, ...] = ()          # GPU -> its NVSwitch port link id (nvswitch fabric)
    down_port: tuple[int, ...] = ()        # NVSwitch -> GPU port link id
    _adjacent: Mapping[tuple[int, int], int] = field(default_factory=dict, repr=False, compare=False)
    _routing: Any = field(default=None, repr=False, compare=False)
    _routes: dict = field(default_factory=dict, repr=False, compare=False)
    # memo of derived results keyed by their users (e.g. comm's idle-network collective times);
    # a Topology is immutable, so anything computed from it alone stays valid
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def node_of(self, gpu_id: int) -> int:
        return gpu_id // self.gpus_per_node

    def path(self, src: int, dst: int) -> tuple[int, ...]:
        """Link ids from src to dst (vertex ids), computed once per pair."""
        key = (src, dst)
        route = self._routes.get(key)
        if route is None:
            if not (0 <= src < self.num_gpus and 0 <= dst < self.num_gpus):
                raise ConfigError(f"topology {self.name}: GPU ids must lie in 0..{self.num_gpus - 1}, "
                                  f"got {src} -> {dst}")
            route = () if src == dst else tuple(self._routing(src, dst))
            self._routes[key] = route
        return route

    def path_latency_s(self, src: int, dst: int) -> float:
        return sum(self.links[i].latency_s for i in self.path(src, dst))

    def path_bw_Bps(self, src: int, dst: int) -> float:
        return min(self.links[i].bw_Bps for i in self.path(src, dst))

    def direct(self, src: int, dst: int) -> bool:
        """True when src and dst share a point-to-point link (full mesh)."""
        return (src, dst) in self._adjacent

    def switch_reduce_links(self, srcs, dsts) -> tuple[int, ...]:
        """Links of an in-switch reduction (NVLS): every source's up port and every sink's down port."""
        if not self.nvls:
            raise ConfigError(f"topology {self.name} has no in-switch reduction (NVLS needs NVSwitch 3+)")
        nodes = {self.node_of(r) for r in (*srcs, *dsts)}
        if len(nodes) != 1:
            raise ConfigError("nvls reduces inside one NVSwitch node; the group spans nodes "
                              f"{sorted(nodes)} (use hierarchical)")
        return tuple(self.up_port[s] for s in srcs) + tuple(self.down_port[d] for d in dsts)

    def kinds_of(self, link_ids) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.links[i].kind for i in link_ids))


# ------------------------------------------------------------------------------------------------
# catalog

def _spec_from_dict(name: str, raw: Mapping[str, Any]) -> TopologySpec:
    raw = dict(raw)
    try:
        raw["scale_up"] = FabricParams(**raw["scale_up"])
        raw["scale_out"] = ScaleOutParams(**raw["scale_out"])
        spec = TopologySpec(name=name, **raw)
    except (KeyError, TypeError) as exc:
        raise CatalogError(f"topology {name!r}: malformed entry ({exc})") from None
    if spec.fabric not in FABRICS:
        raise CatalogError(f"topology {name!r}: fabric {spec.fabric!r} is not one of {', '.join(FABRICS)}")
    return spec


@lru_cache(maxsize=None)
def topology_catalog() -> dict[str, TopologySpec]:
    return {name: _spec_from_dict(name, raw)
            for name, raw in _load_yaml(CATALOG_DIR / "topologies.yaml").items()}


def get_topology_spec(name: str) -> TopologySpec:
    catalog = topology_catalog()
    key = str(name).lower()
    if key not in catalog:
        raise CatalogError(f"unknown topology {name!r}; known: {', '.join(sorted(catalog))}")
    return catalog[key]


# ------------------------------------------------------------------------------------------------
# builder

class _Graph:
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


def build_topology(gpu: Gpu | str, nodes: int = 1, gpus_per_node: int | None = None,
                   name: str | None = None, scale_up_GBps: float | None = None,
                   scale_out_GBps: float | None = None, latency_us: float | None = None,
                   **scale_out_options) -> Topology:
    """Wire `nodes` copies of the catalog node `name` (default: the GPU's standard node).

    Overrides (per GPU, per direction, all its links of that kind together, line rate):
    `scale_up_GBps`, `scale_out_GBps`; `latency_us` replaces the scale-up step latency.
    `scale_out_options`: leaf_down_ports, oversubscription, rail_optimized, efficiency,
    step_latency_us.
    """
    if isinstance(gpu, str):
        gpu = get_hardware(gpu)
    spec = get_topology_spec(name or gpu.default_topology)
    gpn = spec.gpus_per_node if gpus_per_node is None else int(gpus_per_node)
    if int(nodes) < 1 or gpn < 1:
        raise ConfigError(f"topology {spec.name}: nodes and gpus_per_node must be >= 1, got {nodes}, {gpn}")
    if gpn > spec.gpus_per_node:
        raise ConfigError(f"topology {spec.name} has {spec.gpus_per_node} GPUs per node; "
                          f"asked for {gpn} (use more nodes)")
    need_kind = _FABRIC_LINK_KIND.get(spec.fabric)
    if need_kind and gpu.scale_up.kind != need_kind:
        raise ConfigError(f"topology {spec.name} needs {need_kind} GPUs; {gpu.name} has {gpu.scale_up.kind}")
    unknown = set(scale_out_options) - set(ScaleOutParams.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown scale-out option(s) {sorted(unknown)}; allowed: "
                          f"{sorted(ScaleOutParams.__dataclass_fields__)}")
    so = ScaleOutParams(**{**spec.scale_out.__dict__, **scale_out_options})
    if so.oversubscription < 1 or so.leaf_down_ports < 1:
        raise ConfigError("scale_out: oversubscription must be >= 1 and leaf_down_ports >= 1")

    graph = _Graph()
    num_gpus = int(nodes) * gpn
    for g in range(num_gpus):
        graph.vertex(f"gpu{g}")
    step_up_s = (spec.scale_up.step_latency_us if latency_us is None else latency_us) * 1e-6
    eff_up = spec.scale_up.efficiency
    adjacent: dict[tuple[int, int], int] = {}
    up_port, down_port = [0] * num_gpus, [0] * num_gpus
    pcie_up: dict[int, tuple[int, int, int]] = {}    # gpu -> (gpu->psw, psw->host, switch vertex)
    pcie_down: dict[int, tuple[int, int]] = {}
    host_links: dict[int, tuple[int, int]] = {}       # switch vertex -> (up to host, down from host)

    for node in range(int(nodes)):
        members = range(node * gpn, (node + 1) * gpn)
        if spec.fabric == "nvswitch":
            total_Bps = scale_up_GBps * 1e9 if scale_up_GBps else gpu.scale_up.total_bw_Bps
            switch = graph.vertex(f"nvswitch{node}")
            for g in members:   # GPU -> switch -> GPU is one step: half the alpha per hop
                up_port[g], down_port[g] = graph.duplex(g, switch, total_Bps, eff_up, step_up_s / 2, "nvlink")
        elif spec.fabric == "mesh":
            per_link_Bps = (scale_up_GBps * 1e9 / gpu.scale_up.links if scale_up_GBps
                            else gpu.scale_up.link_bw_Bps)
            for a in members:
                for b in members:
                    if a != b:
                        adjacent[(a, b)] = graph.link(a, b, per_link_Bps, eff_up, step_up_s, "xgmi")
        else:   # pcie: GPU -> PCIe switch -> host bridge -> PCIe switch -> GPU, a step spans 4 hops
            lane_Bps = scale_up_GBps * 1e9 if scale_up_GBps else gpu.pcie_bw_Bps
            host = graph.vertex(f"host{node}")
            for first in range(0, gpn, spec.gpus_per_pcie_switch):
                psw = graph.vertex(f"pcie{node}.{first // spec.gpus_per_pcie_switch}")
                host_links[psw] = graph.duplex(psw, host, lane_Bps, eff_up, step_up_s / 4, "pcie")
                for g in list(members)[first:first + spec.gpus_per_pcie_switch]:
                    up, down = graph.duplex(g, psw, lane_Bps, eff_up, step_up_s / 4, "pcie")
                    pcie_up[g], pcie_down[g] = (up, psw), down

    # scale-out: one NIC per GPU into a leaf; leaves joined by spines
    nic_up, nic_down, leaf_of, leaf_links = {}, {}, {}, {}
    if int(nodes) > 1:
        nic_Bps = scale_out_GBps * 1e9 if scale_out_GBps else gpu.nic_bw_Bps
        step_out_s = so.step_latency_us * 1e-6
        leaf_ids: dict[tuple, int] = {}
        for g in range(num_gpus):
            node, local = divmod(g, gpn)
            key = (local, node // so.leaf_down_ports) if so.rail_optimized else (g // so.leaf_down_ports,)
            if key not in leaf_ids:
                leaf_ids[key] = graph.vertex("leaf" + ".".join(map(str, key)))
            leaf_of[g] = leaf_ids[key]
            # the NIC hops carry the whole per-step alpha (NCCL's NET latency is end to end)
            nic_up[g], nic_down[g] = graph.duplex(g, leaf_of[g], nic_Bps, so.efficiency, step_out_s / 2, "network")
        leaves = sorted(set(leaf_of.values()))
        if len(leaves) > 1:
            # The spine layer as one non-blocking core with perfect ECMP spreading (the fluid
            # idealisation): each leaf's uplinks together carry its down ports' bandwidth divided by
            # the oversubscription ratio.
            core = graph.vertex("spine")
            for leaf in leaves:
                down_ports = sum(1 for v in leaf_of.values() if v == leaf)
                # switch traversal time is inside NCCL's measured end-to-end step latency
                leaf_links[leaf] = graph.duplex(leaf, core, down_ports * nic_Bps / so.oversubscription,
                                                so.efficiency, 0.0, "network")

    def route(src: int, dst: int) -> list[int]:
        if src // gpn != dst // gpn:
            hops = [nic_up[src]]
            if leaf_of[src] != leaf_of[dst]:
                hops += [leaf_links[leaf_of[src]][0], leaf_links[leaf_of[dst]][1]]
            return hops + [nic_down[dst]]
        if spec.fabric == "nvswitch":
            return [up_port[src], down_port[dst]]
        if spec.fabric == "mesh":
            return [adjacent[(src, dst)]]
        (up, psw_src), down = pcie_up[src], pcie_down[dst]
        psw_dst = graph.links[down].src
        if psw_src == psw_dst:
            return [up, down]
        return [up, host_links[psw_src][0], host_links[psw_dst][1], down]

    return Topology(
        name=spec.name, description=spec.description, gpu=gpu, fabric=spec.fabric, nodes=int(nodes),
        gpus_per_node=gpn, vertex_names=tuple(graph.names), links=tuple(graph.links),
        launch_latency_s=spec.launch_latency_us * 1e-6, nvls=spec.nvls and spec.fabric == "nvswitch",
        nvls_efficiency=spec.nvls_efficiency, nvls_latency_s=spec.nvls_latency_us * 1e-6,
        up_port=tuple(up_port) if spec.fabric == "nvswitch" else (),
        down_port=tuple(down_port) if spec.fabric == "nvswitch" else (),
        _adjacent=adjacent, _routing=route)


def topology_for_cluster(cluster) -> Topology:
    """Build from a config's `cluster` section (attributes hardware, nodes, gpus_per_node, topology,
    links {scale_up_GBps, scale_out_GBps, latency_us}, scale_out {options})."""
    links = getattr(cluster, "links", None)
    return build_topology(
        get_hardware(cluster.hardware), nodes=cluster.nodes, gpus_per_node=cluster.gpus_per_node,
        name=getattr(cluster, "topology", None),
        scale_up_GBps=getattr(links, "scale_up_GBps", None),
        scale_out_GBps=getattr(links, "scale_out_GBps", None),
        latency_us=getattr(links, "latency_us", None),
        **dict(getattr(cluster, "scale_out", None) or {}))
