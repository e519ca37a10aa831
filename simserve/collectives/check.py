"""Symbolic correctness of a schedule: follow which ranks' contributions every copy of a block holds.

Within a phase all moves read the state as it was when the phase began (they are concurrent) and
are applied together at its end. A reduction must add contributions the receiver does not hold yet
(else something is counted twice); a plain transfer overwrites the receiver's copy.
"""
from __future__ import annotations

from simserve.collectives.schedule import Schedule, SwitchReduce


class ScheduleError(AssertionError):
    """The schedule does not compute what its op promises."""


def _initial(s: Schedule) -> dict[int, dict[int, frozenset]]:
    ranks, nblocks = s.ranks, len(s.block_bytes)
    if s.op in ("allreduce", "reducescatter"):
        return {r: {b: frozenset((r,)) for b in range(nblocks)} for r in ranks}
    state: dict[int, dict[int, frozenset]] = {r: {} for r in ranks}
    for b, owner in enumerate(s.block_owner):
        state[owner][b] = frozenset((owner,))
    return state


def _expected(s: Schedule):
    everyone = frozenset(s.ranks)
    nblocks = len(s.block_bytes)
    if s.op == "allreduce":
        return [(r, b, everyone) for r in s.ranks for b in range(nblocks)]
    if s.op == "reducescatter":
        return [(s.block_owner[b], b, everyone) for b in range(nblocks)]
    if s.op == "allgather":
        return [(r, b, frozenset((s.block_owner[b],))) for r in s.ranks for b in range(nblocks)]
    # all-to-all and send/recv: a pair with nothing to send needs no transfer
    return [(s.block_dest[b], b, frozenset((s.block_owner[b],))) for b in range(nblocks) if s.block_bytes[b] > 0]


def verify(s: Schedule) -> None:
    """Raise ScheduleError unless every rank ends with what the op promises; check byte counts."""
    state = _initial(s)
    for k, phase in enumerate(s.phases):
        updates = []     # (dst, block, contributions, reduce)
        for m in phase.moves:
            expected_bytes = sum(s.block_bytes[b] for b in m.blocks)
            if abs(expected_bytes - m.nbytes) > 1e-9 * max(1.0, m.nbytes):
                raise ScheduleError(f"phase {k}: {m} carries {m.nbytes} B but its blocks hold {expected_bytes} B")
            if isinstance(m, SwitchReduce):
                for b in m.blocks:
                    total = frozenset()
                    for src in m.srcs:
                        held = state[src].get(b)
                        if held is None:
                            raise ScheduleError(f"phase {k}: rank {src} sends block {b} it does not hold")
                        if total & held:
                            raise ScheduleError(f"phase {k}: switch reduction counts {sorted(total & held)} twice")
                        total |= held
                    updates += [(d, b, total, False) for d in m.dsts]
                continue
            for b in m.blocks:
                held = state[m.src].get(b)
                if held is None:
                    raise ScheduleError(f"phase {k}: rank {m.src} sends block {b} it does not hold")
                updates.append((m.dst, b, held, m.reduce))
        new = {r: dict(blocks) for r, blocks in state.items()}
        reduced_into: dict[tuple[int, int], frozenset] = {}
        for dst, b, contrib, reduce in updates:
            if reduce:
                base = reduced_into.get((dst, b), state[dst].get(b, frozenset()))
                if base & contrib:
                    raise ScheduleError(f"phase {k}: rank {dst} reduces contributions {sorted(base & contrib)} "
                                        f"of block {b} twice")
                reduced_into[(dst, b)] = base | contrib
                new[dst][b] = base | contrib
            else:
                new.setdefault(dst, {})[b] = contrib
        state = new
    for rank, b, want in _expected(s):
        got = state.get(rank, {}).get(b)
        if got != want:
            have = sorted(got) if got is not None else None
            raise ScheduleError(f"{s.algorithm} {s.op}: rank {rank} ends with block {b} = {have}, "
                                f"expected contributions of {sorted(want)}")
