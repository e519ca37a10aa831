"""Topologies (pure: catalog + builder, and the fluid model of an idle network) and the SimPy
flow-level network that plays transfers on them (`Network`, loaded on first use so the pure parts
import without SimPy)."""
from simserve.network.topology import (LINK_KINDS, Link, Topology, TopologySpec, build_topology,
                                       get_topology_spec, topology_catalog, topology_for_cluster)

__all__ = ["LINK_KINDS", "Link", "Network", "Topology", "TopologySpec", "build_topology",
           "get_topology_spec", "topology_catalog", "topology_for_cluster"]


def __getattr__(name):
    if name == "Network":
        from simserve.network.flows import Network
        return Network
    raise AttributeError(f"module 'simserve.network' has no attribute {name!r}")
