"""A collective compiled against a topology: what the network plays (or a replay accounts)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CompiledPhase:
    items: tuple          # (link ids, flow bytes, latency_s, payload bytes) per move
    extra_s: float        # after the transfers: local reduction + fixed switch latency


@dataclass(frozen=True)
class CompiledSchedule:
    op: str
    algorithm: str
    launch_s: float                # before the first phase: launch, and a pipeline's latency
    phases: tuple[CompiledPhase, ...]
    links: frozenset               # every link the collective touches
    bytes_by_kind: dict            # payload bytes per link kind, once per transfer
    payload_bytes: float = 0.0     # bytes of all its transfers together
    protocol: str = ""             # ll | ll128 | simple for pipelined rings and trees
    notes: str = ""

    def account(self, network, times: float = 1.0) -> None:
        """Add the bytes this collective moves, `times` over, without playing it (a replay)."""
        network.add_bytes(self.bytes_by_kind, times, self.op, self.payload_bytes)

    @property
    def schedule(self) -> "CompiledSchedule":
        """Compatibility: callers read `program.schedule.op`; op and algorithm now sit on the program."""
        return self
