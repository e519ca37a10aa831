"""Admission policies: when a waiting request may take KV blocks, and who is preempted when none are left.

- ``vllm``: a prompt is admitted when its blocks fit above the watermark (vLLM's
  `watermark_blocks`, 1% by default, kept free so running sequences can grow a while); when a
  decode cannot get a block the most recently admitted request is preempted by recompute
  (vLLM V1 `Scheduler.schedule`: `preempted_req = self.running.pop()`; V1 has no swap).
- ``guaranteed_no_evict``: TensorRT-LLM's default capacity policy
  (cpp/tensorrt_llm/batch_manager/capacityScheduler.cpp, `GuaranteedNoEvictScheduler`): the
  blocks every running request needs to reach its last token are reserved, and a new request is
  admitted only when its whole input plus output fits in what is left (first come first served:
  the first one that does not fit stops admission). Nothing is ever preempted.
- ``max_utilization``: TensorRT-LLM's `MaxUtilizationScheduler`: a request is admitted when the
  blocks of its next step fit after every running sequence's next step; when a started request
  cannot get its block, the last started ones are paused (their KV freed and recomputed later).

Blocks are counted as `kvcache.BlockManager` counts them; a policy is a small object registered in
ADMISSIONS, so a new one is one class and one registration.
"""
from __future__ import annotations

from simserve.kvcache import BlockManager, blocks_for
from simserve.registry import Registry
from simserve.request import Request

ADMISSIONS: Registry[type["Admission"]] = Registry("admission policy")


def blocks_to_finish(req: Request, block_size: int) -> int:
    """KV blocks a request holds at its last decode step: the prompt plus every output token but
    the last (whose KV is never written)."""
    return blocks_for(req.isl + req.osl - 1, block_size)


class Admission:
    """Base: admission with the watermark, preemption by recompute when blocks run out."""
    preempts = True

    def __init__(self, kv: BlockManager):
        self.kv = kv

    def can_admit(self, req: Request, need: int, running: list[Request]) -> bool:
        return self.kv.can_admit(need)

    def admitted(self, req: Request) -> None:
        """Called once the request holds its prompt's blocks."""

    def released(self, req: Request) -> None:
        """Called when the request leaves the running set (finished or preempted)."""


@ADMISSIONS.register("vllm")
class VllmAdmission(Admission):
    pass


@ADMISSIONS.register("guaranteed_no_evict")
class GuaranteedNoEvict(Admission):
    """Reservation without eviction: `kv.reserved` is the sum over running requests of the blocks
    each needs to finish. Every block in use belongs to one of them and none holds more than its
    reservation, so `num_blocks - reserved` blocks are free for good: a request fits when its own
    total does (no watermark: TensorRT-LLM's NoEvictScheduledBlocksManager has none)."""
    preempts = False

    def can_admit(self, req: Request, need: int, running: list[Request]) -> bool:
        return self.kv.num_blocks - self.kv.reserved >= blocks_to_finish(req, self.kv.block_size)

    def admitted(self, req: Request) -> None:
        self.kv.reserved += blocks_to_finish(req, self.kv.block_size)

    def released(self, req: Request) -> None:
        self.kv.reserved -= blocks_to_finish(req, self.kv.block_size)


@ADMISSIONS.register("max_utilization")
class MaxUtilization(Admission):
    """Admit into the blocks left after every running decode's next block (no watermark); running
    out later pauses the most recently started request (recompute)."""

    def can_admit(self, req: Request, need: int, running: list[Request]) -> bool:
        bs = self.kv.block_size
        next_step = sum(1 for r in running if r.in_decode and r.prefilled + 1 > r.blocks * bs)
        return need + next_step <= self.kv.free
