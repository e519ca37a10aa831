"""A collective as data: phases of concurrent transfers, with the blocks each transfer carries.

The data of a collective is cut into blocks (`Schedule.block_bytes`); a transfer names the blocks it
moves and whether the receiver reduces them into its own copy (`reduce=True`) or overwrites it.
That is enough to check correctness symbolically (`check.verify`), to cost it in closed form, and
for `comm` to play it on the network (which only needs src, dst and bytes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Union

OPS = ("allreduce", "allgather", "reducescatter", "alltoall", "sendrecv")


@dataclass(frozen=True)
class Transfer:
    """src sends `blocks` (nbytes in all) to dst, which reduces them in or stores them."""
    src: int
    dst: int
    nbytes: float
    blocks: tuple[int, ...] = ()
    reduce: bool = False


@dataclass(frozen=True)
class SwitchReduce:
    """In-switch reduction and multicast (NVLS): the switch sums the sources' `blocks` and delivers
    the sum to every sink. Each source port carries nbytes up, each sink port nbytes down."""
    srcs: tuple[int, ...]
    dsts: tuple[int, ...]
    nbytes: float
    blocks: tuple[int, ...] = ()


Move = Union[Transfer, SwitchReduce]


@dataclass(frozen=True)
class Phase:
    """Moves that run concurrently; the next phase starts when all are done and reduced."""
    moves: tuple[Move, ...]
    reduce_bytes: float = 0.0     # the most bytes any one rank reduces locally after this phase

    @property
    def uses_switch(self) -> bool:
        return any(isinstance(m, SwitchReduce) for m in self.moves)


@dataclass(frozen=True)
class Schedule:
    op: str
    algorithm: str
    ranks: tuple[int, ...]
    nbytes: float                          # nccl-tests convention: the full vector (AR), the total (AG/RS/A2A)
    phases: tuple[Phase, ...]
    block_bytes: tuple[float, ...]
    block_owner: tuple[int, ...] = ()      # AG: who contributes a block; RS: who ends with it; A2A: sender
    block_dest: tuple[int, ...] = ()       # A2A and send/recv: who must receive a block
    notes: str = field(default="", compare=False)

    @property
    def num_phases(self) -> int:
        return len(self.phases)

    def describe(self) -> str:
        """Human-readable listing (one line per phase)."""
        lines = [f"{self.algorithm} {self.op} of {self.nbytes:g} B over ranks {list(self.ranks)}: "
                 f"{self.num_phases} phases, {len(self.block_bytes)} blocks"]
        for k, phase in enumerate(self.phases):
            parts = []
            for m in phase.moves:
                if isinstance(m, Transfer):
                    parts.append(f"{m.src}{'=>' if m.reduce else '->'}{m.dst}:{m.nbytes:g}")
                else:
                    parts.append(f"switch{list(m.srcs)}=>{list(m.dsts)}:{m.nbytes:g}")
            red = f" reduce {phase.reduce_bytes:g} B" if phase.reduce_bytes else ""
            lines.append(f"  phase {k}:{red} " + " ".join(parts))
        return "\n".join(lines)


def make_phase(moves: Sequence[Move], block_bytes: Sequence[float]) -> Phase:
    """A phase whose local reduction cost is the largest per-rank sum of reduced bytes."""
    reduced: dict[int, float] = {}
    for m in moves:
        if isinstance(m, Transfer) and m.reduce:
            reduced[m.dst] = reduced.get(m.dst, 0.0) + m.nbytes
    return Phase(tuple(moves), max(reduced.values(), default=0.0))


def transfer(src: int, dst: int, blocks: Sequence[int], block_bytes: Sequence[float],
             reduce: bool = False) -> Transfer:
    blocks = tuple(blocks)
    return Transfer(src, dst, float(sum(block_bytes[b] for b in blocks)), blocks, reduce)


def merge_parallel(phase_lists: Sequence[Sequence[Sequence[Move]]]) -> list[list[Move]]:
    """Run independent sub-schedules side by side: phase k of the result holds every list's phase k."""
    depth = max((len(p) for p in phase_lists), default=0)
    merged: list[list[Move]] = [[] for _ in range(depth)]
    for phases in phase_lists:
        for k, moves in enumerate(phases):
            merged[k].extend(moves)
    return merged
