"""Topologies (pure: catalog + builder) and the SimPy flow-level network that plays transfers on them."""
from simserve.network.flows import Network
from simserve.network.topology import (LINK_KINDS, Link, Topology, TopologySpec, build_topology,
                                       get_topology_spec, topology_catalog, topology_for_cluster)

__all__ = ["LINK_KINDS", "Link", "Network", "Topology", "TopologySpec", "build_topology",
           "get_topology_spec", "topology_catalog", "topology_for_cluster"]
