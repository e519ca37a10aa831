"""Swap preemption in the SimPy world: a batch's swapped-out and swapped-in KV as copies over each
GPU's PCIe link to its node's host memory (scheduler/swap.py decides what swaps when).

vLLM V0 runs the copies in the step's cache operations, before the forward and on the same CUDA
stream (Worker.execute_worker: cache_engine swap_in, then swap_out, then model execution), so a step
that swaps takes its host work, then its copies, then its forward. Each GPU of the stage copies its
own shard of the blocks (its layers, its KV heads) over its own link (Topology.host_down in,
host_up out), the GPUs in parallel: `cost.swap.swap_copies` cudaMemcpyAsync calls of one block's
K or V each, and blocks x the block's bytes on that GPU.

Timing follows the fidelity rule of docs/architecture.md: in `fast`, copies whose links are idle are
priced in closed form (`cost.swap.swap_s`: the copies' issue overhead, then the bytes at the measured
share of the link's line rate); in `exact`, or when a link carries other traffic, they are flows on
the network whose latency is the copies' issue overhead and whose bytes move at the link's rate,
which on an idle link is the same time (tests/test_swap_engine.py).
"""
from __future__ import annotations

from simserve.cost.swap import host_copy_fit, swap_copies, swap_s
from simserve.runtime import get_runtime
from simserve.scheduler.swap import SwapSpace


def swap_settings(cfg) -> tuple[str, float]:
    """(preemption, swap space GiB per GPU): the config's, else the runtime's."""
    rt = get_runtime(cfg.engine.runtime)
    gib = rt.swap_space_GiB if cfg.engine.swap_space_GiB is None else cfg.engine.swap_space_GiB
    return cfg.scheduler.preemption or rt.preemption, float(gib)


class KvSwapper:
    """One replica's KV copies to and from host memory, and their totals."""

    def __init__(self, env, network, gpus, layers: int, tensors: int, block_bytes: float, fidelity: str,
                 timeline, replica):
        topo = network.topology
        self.env, self.network, self.timeline, self.replica = env, network, timeline, replica
        self.links = {"in": tuple(topo.host_down[g] for g in gpus), "out": tuple(topo.host_up[g] for g in gpus)}
        self.line_Bps = topo.links[self.links["out"][0]].line_bw_Bps
        self.layers, self.tensors = layers, tensors
        self.block_bytes = block_bytes       # one block's KV on one GPU (its layers and heads)
        self.played = fidelity == "exact"
        self.fit = host_copy_fit()
        self.seconds = 0.0                   # the GPUs waited for swaps this long (per GPU)
        self.bytes = {"in": 0.0, "out": 0.0}     # all the replica's GPUs together

    def copy(self, batch, at: float):
        """SimPy process body: the batch's swap-in, then its swap-out, from `at` (after the host
        work); returns their seconds. Priced without an event when that is exact (module doc)."""
        total = 0.0
        for way, moves in (("in", batch.swap_in), ("out", batch.swap_out)):
            blocks = sum(b for _, b in moves)
            if not blocks:
                continue
            links, nbytes = self.links[way], blocks * self.block_bytes
            copies = swap_copies(blocks, self.layers, self.tensors)
            start = at + total
            if self.played or self.network.busy(links):
                if start > self.env.now:
                    yield self.env.at(start)
                yield self.network.transfer_batch([((i,), nbytes, copies * self.fit.overhead_s) for i in links],
                                                  "kv_swap")
                seconds = self.env.now - start
            else:
                seconds = swap_s(nbytes, copies, self.line_Bps, self.fit)
                for i in links:
                    self.network.account((i,), nbytes, "kv_swap")
            self.bytes[way] += nbytes * len(links)
            self.timeline.transfer(self.replica, 0, start, start + seconds, nbytes * len(links), kind="kv_swap")
            total += seconds
        self.seconds += total
        return total


def attach_swap(world, cfg) -> None:
    """Give every replica its swap space and swapper when the config preempts by swap."""
    preemption, gib = swap_settings(cfg)
    if preemption != "swap":
        return
    model, plan = world.model, world.plans[0]
    block_bytes = plan.kv_bytes_per_token * cfg.engine.block_size
    for rep in world.replicas:
        space = SwapSpace.of(gib, block_bytes)
        for sched in rep.schedulers:
            sched.swap = space
        rep.swapper = KvSwapper(world.env, world.network, rep.stages[0].gpus, rep.stages[0].layers,
                                1 if model.mla is not None else 2, block_bytes, cfg.fidelity, world.timeline, rep)


def swap_summary(cfg, replicas) -> dict:
    """The summary's `swap` key (absent unless preemption swaps): what moved, and the time it took."""
    preemption, gib = swap_settings(cfg)
    if preemption != "swap":
        return {}
    spaces = [s.swap for r in replicas for s in r.schedulers[:1]]
    swappers = [r.swapper for r in replicas]
    return {"swap": {
        "swap_space_GiB": gib, "host_blocks": sum(s.num_blocks for s in spaces),
        "peak_host_blocks_used": max(s.peak_used for s in spaces),
        "swapped_out": sum(s.swapped_out for s in spaces), "swapped_in": sum(s.swapped_in for s in spaces),
        "recompute_fallbacks": sum(s.recompute_fallbacks for s in spaces),
        "blocks_out": sum(s.blocks_out for s in spaces), "blocks_in": sum(s.blocks_in for s in spaces),
        "bytes_out": sum(w.bytes["out"] for w in swappers), "bytes_in": sum(w.bytes["in"] for w in swappers),
        # seconds the GPUs of a replica waited for swaps, summed over replicas
        "seconds": sum(w.seconds for w in swappers)}}
