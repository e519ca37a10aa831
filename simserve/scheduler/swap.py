"""Swap preemption (vLLM V0 `--preemption-mode swap`): the host blocks a replica's swapped-out KV holds.

vLLM V0 gives every GPU `--swap-space` GiB of pinned host memory and cuts it into as many CPU blocks
as fit (vllm/worker/worker.py: num_cpu_blocks = swap_space_bytes // cache_block_size, the block's
bytes on that GPU); every GPU of a TP group holds the same block ids, so one count serves the
group. The scheduler (scheduler/base.py) uses it so:

- preempting a running sequence swaps its blocks out when the host blocks can hold them
  (`BlockSpaceManager.can_swap_out`, no watermark on the CPU side). vLLM aborts the engine when
  they cannot ("Aborted due to the lack of CPU swap space", Scheduler._swap_out); simserve instead
  preempts that sequence by recompute, as with `preemption: recompute`, and counts it in
  `recompute_fallbacks`;
- a swapped sequence keeps its computed tokens; it comes back (its blocks copied in) before any new
  admission, first swapped first back, when its blocks plus this step's growth fit above the GPU
  watermark and the batch has room (Scheduler._schedule_swapped), and never in a step that
  preempted (no room for it: `_schedule_default` / `_schedule_chunked_prefill`);
- the prefill-first policy admits no new prompt while any sequence is swapped out
  (`_schedule_default`: "If any requests are swapped, prioritized swapped requests").

simserve allocates a prompt's blocks whole at admission, so a victim caught mid-prefill (chunked
policies) swaps its whole allocation; vLLM would hold only the chunks scheduled so far.
"""
from __future__ import annotations

import math


class SwapSpace:
    """Host KV blocks of one replica, and what moved through them."""

    def __init__(self, num_blocks: int):
        if num_blocks < 0:
            raise ValueError("a swap space holds a non-negative number of blocks")
        self.num_blocks = num_blocks
        self.used = 0
        self.peak_used = 0
        self.swapped_out = 0          # sequences swapped out (and, below, their blocks)
        self.swapped_in = 0
        self.blocks_out = 0
        self.blocks_in = 0
        self.recompute_fallbacks = 0  # preemptions by recompute because the host blocks were full

    @classmethod
    def of(cls, swap_space_GiB: float, block_bytes_per_gpu: float) -> "SwapSpace":
        """vLLM's num_cpu_blocks: the whole blocks of one GPU's KV that fit in its swap space."""
        return cls(int(math.floor(swap_space_GiB * 2**30 / block_bytes_per_gpu)) if block_bytes_per_gpu > 0 else 0)

    def fits(self, blocks: int) -> bool:
        return blocks <= self.num_blocks - self.used

    def take(self, blocks: int) -> None:
        """A sequence's blocks are copied out to the host."""
        if not self.fits(blocks):
            raise RuntimeError(f"swapping out {blocks} blocks with {self.num_blocks - self.used} host blocks free")
        self.used += blocks
        self.peak_used = max(self.peak_used, self.used)
        self.swapped_out += 1
        self.blocks_out += blocks

    def give(self, blocks: int) -> None:
        """A sequence's blocks are copied back in to the GPU: its host blocks are free again."""
        if blocks > self.used:
            raise RuntimeError(f"swapping in {blocks} blocks with {self.used} on the host")
        self.used -= blocks
        self.swapped_in += 1
        self.blocks_in += blocks
