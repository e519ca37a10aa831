"""A built topology as plain, picklable data: GPUs, switch vertices, directed links, routes.

GPU ids are 0..N-1, node-major (GPU g sits on node g // gpus_per_node); further vertices are
switches. `Router` holds the routing tables as data (no closures), so a `Topology` pickles (the
sweep runner sends them to worker processes) and carries no hidden memo tables: the derived results
the communication layer computes live in a cache the run owns (`simserve.comm.cache`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from simserve.catalog import Gpu
from simserve.collectives.kernels import engine_kernels
from simserve.collectives.protocols import comm_model
from simserve.errors import ConfigError

LINK_KINDS = ("nvlink", "xgmi", "pcie", "network")


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
class Router:
    """Routes as tables: inside a node an explicit (src, dst) -> links map from the node's wiring;
    between nodes src's NIC up, the leaves' spine links when the leaves differ, dst's NIC down."""
    gpus_per_node: int
    intra: Mapping[tuple[int, int], tuple[int, ...]]
    nic_up: tuple[int, ...] = ()        # per GPU: the link from its NIC into its leaf
    nic_down: tuple[int, ...] = ()
    leaf_of: tuple[int, ...] = ()       # per GPU: its leaf switch vertex
    leaf_up: Mapping[int, int] = field(default_factory=dict)     # leaf vertex -> link to the spine
    leaf_down: Mapping[int, int] = field(default_factory=dict)

    def route(self, src: int, dst: int) -> tuple[int, ...]:
        if src // self.gpus_per_node == dst // self.gpus_per_node:
            return self.intra[(src, dst)]
        hops = (self.nic_up[src],)
        if self.leaf_of[src] != self.leaf_of[dst]:
            hops += (self.leaf_up[self.leaf_of[src]], self.leaf_down[self.leaf_of[dst]])
        return hops + (self.nic_down[dst],)


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
    router: Router = field(default=None, repr=False, compare=False)   # type: ignore[assignment]
    nvls: bool = False
    nvls_efficiency: float = 1.0
    nvls_latency_s: float = 0.0
    reduce_s_per_B: float = 0.0            # gamma; ~0: NCCL fuses the reduction into the copy (comm.md 1.2)
    up_port: tuple[int, ...] = ()          # GPU -> its NVSwitch port link id (nvswitch fabric)
    down_port: tuple[int, ...] = ()        # NVSwitch -> GPU port link id
    host_up: tuple[int, ...] = ()          # GPU -> its node's pinned host memory over PCIe (KV swap)
    host_down: tuple[int, ...] = ()        # host memory -> GPU
    _adjacent: Mapping[tuple[int, int], int] = field(default_factory=dict, repr=False, compare=False)
    # the library's protocol tables and the launch mode (collectives.protocols.CommModel)
    comm: object = field(default_factory=lambda: comm_model("nccl"), repr=False, compare=False)
    # the engine's own all-reduce kernels and their size limits (collectives.kernels.EngineKernels)
    kernels: object = field(default_factory=lambda: engine_kernels("vllm-cuda-sm90"), repr=False, compare=False)

    @property
    def num_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def nics_per_node(self) -> int:
        """NICs of one node (0 on a single node)."""
        if self.nodes == 1 or not self.router.nic_up:
            return 0
        return len(set(self.router.nic_up[:self.gpus_per_node]))

    def node_of(self, gpu_id: int) -> int:
        return gpu_id // self.gpus_per_node

    def path(self, src: int, dst: int) -> tuple[int, ...]:
        """Link ids from src to dst (GPU ids)."""
        if src == dst:
            return ()
        if not (0 <= src < self.num_gpus and 0 <= dst < self.num_gpus):
            raise ConfigError(f"topology {self.name}: GPU ids must lie in 0..{self.num_gpus - 1}, "
                              f"got {src} -> {dst}")
        return self.router.route(src, dst)

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
