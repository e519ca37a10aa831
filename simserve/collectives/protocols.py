"""Protocols (LL, LL128, Simple) and launch cost as the libraries' tuners model them. Pure.

NCCL and RCCL run a pipelined ring or tree in one of three protocols; each has a fixed cost per
call (base latency), a latency per pipeline step that depends on the link the step crosses, and a
fraction of the link bandwidth it achieves (LL spends half of every 8-byte word on flags, LL128
8 of 128 bytes). The tables are catalog data (catalog/comm_libraries.yaml, with their sources);
the tuner picks, per size, the protocol with the least modelled time (comm.compiled does that by
costing each on the idle network).

Launch: `graph` (CUDA graphs, as serving engines replay decode steps: only the library's base
latency) or `eager` (nccl-tests' default, a host launch per call on top: the topology's
`eager_launch_us`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping

from simserve.catalog import CATALOG_DIR, load_catalog_file
from simserve.errors import CatalogError, ConfigError

LAUNCH_MODES = ("graph", "eager")
FAMILIES = ("ring", "tree")


@dataclass(frozen=True)
class CommModel:
    """One topology's library tables, launch mode and reference bandwidths (picklable data)."""
    library: str
    table: Mapping
    arch: str = ""
    launch: str = "graph"
    eager_launch_s: float = 0.0
    ref_busbw_Bps: tuple[float, float] = (0.0, 0.0)    # Simple ring busbw: one node, several nodes
    channels: tuple[int, int] = (0, 0)                 # the communicator's nChannels: one node, several (0: not modelled)
    extra: Mapping = field(default_factory=dict)

    @property
    def launch_s(self) -> float:
        """Host cost per call added to every collective in eager mode."""
        return self.eager_launch_s if self.launch == "eager" else 0.0

    @property
    def protocols(self) -> tuple[str, ...]:
        return tuple(self.table["protocols"])

    def base_latency_s(self, family: str, proto: str) -> float:
        return self.table[family]["base_latency_us"][proto] * 1e-6

    def hop_latency_s(self, family: str, proto: str, kinds, multinode: bool) -> float:
        """Latency of one step over a path with these link kinds (its slowest kind)."""
        rows = self.table[family]["hop_latency_us"]
        if "network" in kinds:
            return rows["network"][proto] * 1e-6
        intra = max(rows[k][proto] for k in kinds) * 1e-6 if kinds else 0.0
        if multinode and family == "ring":
            # tuning.cc: inter-node rings still launch nsteps x net overhead (x3 for Simple)
            overhead = self.table["net_overhead_us"] * (3 if proto == "simple" else 1) * 1e-6
            intra = max(intra, overhead)
        return intra

    def bandwidth_factor(self, family: str, proto: str, nodes: int, channels: float = 1.0) -> float:
        """Fraction of link bandwidth with `channels` of the communicator's channels x threads at
        work (channel_fraction); LL on a ring is then capped at llMaxBw (bus bandwidth), as NCCL's
        busBw = min(llMaxBw, nChannels x bw x 0.5) (tuning.cc)."""
        factor = self.table[family]["bandwidth_factor"][proto] * channels
        caps = self.table.get("ll_max_busbw_GBps", {}).get(self.arch)
        if proto == "ll" and caps:
            cap_Bps = caps[0 if nodes == 1 else 1 if nodes == 2 else 2] * 1e9
            ref = self.ref_busbw_Bps[0 if nodes == 1 else 1]
            if ref > 0:
                factor = min(factor, cap_Bps / ref)
        return factor

    def channel_fraction(self, family: str, proto: str, nbytes: float, nranks: int, nodes: int) -> float:
        """Share of the communicator's channels x threads that a call of `nbytes` runs on (NCCL
        enqueue.cc topoGetAlgoInfo; comm_libraries.yaml header)."""
        full = self.channels[0 if nodes == 1 else 1]
        threads = self.table.get("threads", {}).get(proto)
        if not full or not threads:
            return 1.0
        nc, _ = self.channels_used(family, proto, nbytes, nranks, nodes)
        threshold = self._thread_threshold(family, proto, nranks)
        nt = threads
        while self.table.get("halve_threads") and nbytes < nc * nt * threshold and nt % 128 == 0:
            nt //= 2
        return (nc * max(nt, 96)) / (full * threads)      # at least 3 warps (enqueue.cc)

    def _thread_threshold(self, family: str, proto: str, nranks: int) -> float:
        return self.table["thread_threshold"][proto] * (nranks if family == "ring" and proto == "ll" else 1)

    def channels_used(self, family: str, proto: str, nbytes: float, nranks: int, nodes: int) -> tuple[int, int]:
        """(channels a call of `nbytes` runs on, the communicator's channels); (0, 0) unmodelled."""
        full = self.channels[0 if nodes == 1 else 1]
        threads = self.table.get("threads", {}).get(proto)
        if not full or not threads:
            return 0, 0
        return max(1, min(full, int(nbytes // (threads * self._thread_threshold(family, proto, nranks))))), full

    def latency_factor(self, family: str, proto: str, nodes: int, op: str) -> float:
        if family == "ring" and proto == "simple" and nodes > 1 and op == "allreduce":
            return self.table.get("ring_simple_multinode_latency_factor", 1.0)
        return 1.0


@lru_cache(maxsize=None)
def library_tables() -> dict:
    return load_catalog_file(CATALOG_DIR / "comm_libraries.yaml")


def comm_model(library: str, arch: str = "", launch: str = "graph", eager_launch_us: float = 0.0,
               ref_busbw_Bps: tuple[float, float] = (0.0, 0.0), channels: tuple[int, int] = (0, 0)) -> CommModel:
    tables = library_tables()
    if library not in tables:
        raise CatalogError(f"unknown communication library {library!r}; known: {', '.join(tables)}")
    if launch not in LAUNCH_MODES:
        raise ConfigError(f"collectives.launch: unknown launch mode {launch!r}; choose one of "
                          f"{', '.join(LAUNCH_MODES)}")
    return CommModel(library, tables[library], arch, launch, eager_launch_us * 1e-6, ref_busbw_Bps,
                     tuple(int(c) for c in channels))
