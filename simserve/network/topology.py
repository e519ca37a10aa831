"""Topology catalog and builder: which directed links join which GPUs, at what bandwidth and latency.

A `Topology` is frozen data (pure layer): GPU ids 0..N-1 (node-major: GPU g sits on node
g // gpus_per_node), further vertices for switches, directed `Link`s and a route between any two
vertices. Link bandwidths are *effective* (line rate x protocol efficiency), because that is what a
collective achieves on a large message; the line rate is kept beside it for reports.

Catalog entries (``catalog/topologies.yaml``, or a user's YAML file / inline dict given as
`cluster.topology`) say how a node is wired (`fabric`: a wiring registered in `network.wiring`)
and hold the efficiency and step latency per fabric with their sources; the bandwidths come from
the GPU's hardware entry, so a user's own GPU card works with any fabric its links allow.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from simserve.catalog import CATALOG_DIR, Gpu, get_hardware, load_catalog_file
from simserve.collectives.kernels import engine_kernels, kernel_tables
from simserve.collectives.protocols import comm_model
from simserve.errors import CatalogError, ConfigError
from simserve.network.graph import LINK_KINDS, Link, Router, Topology
from simserve.network.wiring import FABRIC_LINK_KIND, FABRICS, Graph, NodeContext, ScaleOut, wire_leaf_spine

__all__ = ["LINK_KINDS", "Link", "Topology", "TopologySpec", "build_topology", "get_topology_spec",
           "topology_catalog", "topology_for_cluster"]


@dataclass(frozen=True)
class FabricParams:
    efficiency: float
    step_latency_us: float


ScaleOutParams = ScaleOut


@dataclass(frozen=True)
class TopologySpec:
    """A catalog entry: how one node is wired (`fabric`, a registered wiring), plus defaults for
    its links."""
    name: str
    description: str
    hardware: str
    gpus_per_node: int
    fabric: str
    scale_up: FabricParams
    scale_out: ScaleOut
    launch_latency_us: float = 0.0
    nvls: bool = False
    nvls_efficiency: float = 1.0
    nvls_latency_us: float = 0.0
    gpus_per_pcie_switch: int = 2
    library: str = "nccl"           # comm_libraries.yaml entry: protocol latencies and bandwidths
    arch: str = ""                  # GPU generation key of the library's per-arch caps (sm80, sm90, ...)
    eager_launch_us: float = 0.0    # host launch cost per call without CUDA graphs
    kernels: str = ""               # engine_kernels.yaml platform; "": vllm-rocm on RCCL, vllm-cuda-<arch> on NCCL
    channels: tuple = (0, 0)        # the library communicator's nChannels on one node, on several (0: all, always)


# ------------------------------------------------------------------------------------------------
# catalog

def _spec_from_dict(name: str, raw: Mapping[str, Any]) -> TopologySpec:
    if not isinstance(raw, Mapping):
        raise CatalogError(f"topology {name!r}: expected a mapping of fields, got {type(raw).__name__}")
    raw = dict(raw)
    try:
        raw["scale_up"] = FabricParams(**raw["scale_up"])
        raw["scale_out"] = ScaleOut(**raw["scale_out"])
        spec = TopologySpec(name=name, **raw)
    except (KeyError, TypeError) as exc:
        raise CatalogError(f"topology {name!r}: malformed entry ({exc})") from None
    if spec.fabric not in FABRICS:
        raise CatalogError(f"topology {name!r}: fabric {spec.fabric!r} is not one of {', '.join(FABRICS)}")
    return spec


@lru_cache(maxsize=None)
def topology_catalog() -> dict[str, TopologySpec]:
    return {name: _spec_from_dict(name, raw)
            for name, raw in load_catalog_file(CATALOG_DIR / "topologies.yaml").items()}


def get_topology_spec(spec: str | Mapping[str, Any]) -> TopologySpec:
    """A catalog name, a YAML file holding one topology entry, or an inline dict (with `name`)."""
    if isinstance(spec, Mapping):
        raw = dict(spec)
        return _spec_from_dict(str(raw.pop("name", "custom-topology")), raw)
    catalog = topology_catalog()
    key = str(spec).lower()
    if key in catalog:
        return catalog[key]
    path = Path(str(spec))
    if path.suffix in (".yaml", ".yml"):
        data = load_catalog_file(path)
        if "fabric" in data:                      # the file is one entry
            return _spec_from_dict(str(data.pop("name", path.stem)), data)
        if len(data) != 1:
            raise CatalogError(f"{path}: holds {len(data)} topologies; keep one entry per file")
        (name, raw), = data.items()
        return _spec_from_dict(name, raw)
    raise CatalogError(f"unknown topology {spec!r}; known: {', '.join(sorted(catalog))} "
                       f"(or give a YAML file or an inline dict)")


# ------------------------------------------------------------------------------------------------
# builder

def build_topology(gpu: Gpu | str, nodes: int = 1, gpus_per_node: int | None = None,
                   name: str | Mapping[str, Any] | None = None, scale_up_GBps: float | None = None,
                   scale_out_GBps: float | None = None, latency_us: float | None = None,
                   launch: str = "graph", kernels: str | None = None, quick_reduce: str = "none",
                   **scale_out_options) -> Topology:
    """Wire `nodes` copies of the catalog node `name` (a catalog name, a YAML file or an inline
    dict; default: the GPU's standard node) with its registered fabric, joined by leaf/spine.

    Overrides (per GPU, per direction, all its links of that kind together, line rate):
    `scale_up_GBps`, `scale_out_GBps`; `latency_us` replaces the scale-up step latency.
    `launch`: graph | eager (CUDA graphs or a host launch per collective, `collectives.launch`).
    `kernels`: the engine-kernel platform (engine_kernels.yaml; default the topology's), and
    `quick_reduce` its QuickReduce codec (`collectives.kernels`, `collectives.quick_reduce`).
    `scale_out_options`: leaf_down_ports, oversubscription, rail_optimized, gpus_per_nic,
    efficiency, step_latency_us.
    """
    if isinstance(gpu, str):
        gpu = get_hardware(gpu)
    spec = get_topology_spec(name or gpu.default_topology)
    gpn = spec.gpus_per_node if gpus_per_node is None else int(gpus_per_node)
    _check_request(spec, gpu, int(nodes), gpn)
    so = _scale_out(spec, scale_out_options, gpn)
    graph = Graph()
    num_gpus = int(nodes) * gpn
    for g in range(num_gpus):
        graph.vertex(f"gpu{g}")
    step_up_s = (spec.scale_up.step_latency_us if latency_us is None else latency_us) * 1e-6
    wire = FABRICS.get(spec.fabric, "fabric")
    routes, adjacent, up_port, down_port = {}, {}, {}, {}
    for node in range(int(nodes)):
        ctx = NodeContext(node, tuple(range(node * gpn, (node + 1) * gpn)), gpu, spec.scale_up.efficiency,
                          step_up_s, scale_up_GBps, {"gpus_per_pcie_switch": spec.gpus_per_pcie_switch})
        wired = wire(graph, ctx)
        routes.update(wired.routes)
        adjacent.update(wired.adjacent)
        up_port.update(wired.up_port)
        down_port.update(wired.down_port)
    scale_out = ()
    if int(nodes) > 1:
        nic_Bps = scale_out_GBps * 1e9 if scale_out_GBps else gpu.nic_bw_Bps
        scale_out = wire_leaf_spine(graph, num_gpus, gpn, nic_Bps, so)
    host_up, host_down = _wire_host_memory(graph, gpu, int(nodes), gpn)
    router = Router(gpn, routes, *scale_out)
    has_ports = len(up_port) == num_gpus
    links = graph.links
    scale_up_Bps = max(sum(links[i].bw_Bps for i in {r[0] for (a, _b), r in routes.items() if a == 0}), 0.0) \
        if routes else 0.0
    nic_Bps = (scale_out_GBps * 1e9 if scale_out_GBps else gpu.nic_bw_Bps) * so.efficiency
    ref = (scale_up_Bps, min(scale_up_Bps, nic_Bps * gpn / so.gpus_per_nic) if scale_up_Bps else nic_Bps)
    model = comm_model(spec.library, spec.arch, launch, spec.eager_launch_us, ref, tuple(spec.channels))
    return Topology(
        name=spec.name, description=spec.description, gpu=gpu, fabric=spec.fabric, nodes=int(nodes),
        gpus_per_node=gpn, vertex_names=tuple(graph.names), links=tuple(graph.links),
        launch_latency_s=spec.launch_latency_us * 1e-6, router=router,
        nvls=spec.nvls and has_ports, nvls_efficiency=spec.nvls_efficiency,
        nvls_latency_s=spec.nvls_latency_us * 1e-6,
        up_port=tuple(up_port[g] for g in range(num_gpus)) if has_ports else (),
        down_port=tuple(down_port[g] for g in range(num_gpus)) if has_ports else (),
        host_up=host_up, host_down=host_down,
        _adjacent=adjacent, comm=model, kernels=engine_kernels(platform_of(spec, kernels), quick_reduce))


def platform_of(spec: TopologySpec, asked: str | None = None) -> str:
    """The engine-kernel platform asked for, else the one the topology names, else vLLM's for its
    library and GPU generation (ROCm; CUDA with a per-capability cap table, else CUDA's default)."""
    if asked or spec.kernels:
        return asked or spec.kernels
    if spec.library == "rccl":
        return "vllm-rocm"
    return f"vllm-cuda-{spec.arch}" if f"vllm-cuda-{spec.arch}" in kernel_tables() else "vllm-cuda"


def _wire_host_memory(graph, gpu: Gpu, nodes: int, gpn: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Each GPU's own PCIe x16 link to its node's pinned host memory, at the line rate times the
    efficiency measured for host copies (simserve.cost.swap), for KV swapped out and in. Wired last,
    so the links of the fabric and the network keep their ids. Simplification: a PCIe switch that
    two GPUs share on the way to the CPU (DGX) is not modelled; each GPU gets its full x16."""
    from simserve.cost.swap import host_copy_fit
    eff = host_copy_fit().efficiency
    up, down = [], []
    for node in range(nodes):
        host = graph.vertex(f"hostmem{node}")
        for g in range(node * gpn, (node + 1) * gpn):
            a, b = graph.duplex(g, host, gpu.pcie_bw_Bps, eff, 0.0, "pcie")
            up.append(a)
            down.append(b)
    return tuple(up), tuple(down)


def _check_request(spec: TopologySpec, gpu: Gpu, nodes: int, gpn: int) -> None:
    if nodes < 1 or gpn < 1:
        raise ConfigError(f"topology {spec.name}: nodes and gpus_per_node must be >= 1, got {nodes}, {gpn}")
    if gpn > spec.gpus_per_node:
        raise ConfigError(f"topology {spec.name} has {spec.gpus_per_node} GPUs per node; "
                          f"asked for {gpn} (use more nodes)")
    need_kind = FABRIC_LINK_KIND.get(spec.fabric)
    if need_kind and gpu.scale_up.kind != need_kind:
        raise ConfigError(f"topology {spec.name} needs {need_kind} GPUs; {gpu.name} has {gpu.scale_up.kind}")


def _scale_out(spec: TopologySpec, options: Mapping[str, Any], gpn: int) -> ScaleOut:
    unknown = set(options) - set(ScaleOut.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown scale-out option(s) {sorted(unknown)}; allowed: "
                          f"{sorted(ScaleOut.__dataclass_fields__)}")
    so = ScaleOut(**{**spec.scale_out.__dict__, **options})
    if so.oversubscription < 1 or so.leaf_down_ports < 1:
        raise ConfigError("scale_out: oversubscription must be >= 1 and leaf_down_ports >= 1")
    if so.gpus_per_nic < 1 or gpn % so.gpus_per_nic:
        raise ConfigError(f"scale_out.gpus_per_nic must divide the {gpn} GPUs of a node; got {so.gpus_per_nic}")
    return so


def topology_for_cluster(cluster, launch: str = "graph", kernels: str | None = None,
                         quick_reduce: str = "none") -> Topology:
    """Build from a config's `cluster` section (attributes hardware, nodes, gpus_per_node, topology,
    links {scale_up_GBps, scale_out_GBps, latency_us}, scale_out {options}); `launch`, `kernels`
    and `quick_reduce` are the config's `collectives` fields."""
    links = getattr(cluster, "links", None)
    return build_topology(
        get_hardware(cluster.hardware), nodes=cluster.nodes, gpus_per_node=cluster.gpus_per_node,
        name=getattr(cluster, "topology", None),
        scale_up_GBps=getattr(links, "scale_up_GBps", None),
        scale_out_GBps=getattr(links, "scale_out_GBps", None),
        latency_us=getattr(links, "latency_us", None), launch=launch, kernels=kernels,
        quick_reduce=quick_reduce, **dict(getattr(cluster, "scale_out", None) or {}))
