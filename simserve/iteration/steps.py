"""An iteration of one pipeline stage as data: an ordered list of steps (docs/architecture.md (contracts)).

A plan says what a stage's GPUs do in one iteration, not how long it takes: compute for so many
seconds (the cost model already priced the operators), collectives over TP groups, all-to-alls over
the EP group, routed experts whose slowest GPU holds the layer back, host work. Two consumers read
it: `iteration.price` (closed form on an idle network) and `engine.executor` (played on the shared
network). Dense layers, MoE layers and the model's head are different step lists of one vocabulary.

`Layers(count, bodies)` is `count` layers, layer i running `bodies[i % len(bodies)]`: an MoE stage
cycles through its distinct routing draws, a dense stage has one body.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

Group = tuple[int, ...]


@dataclass(frozen=True)
class Compute:
    """GPU kernels on every GPU of the stage for `seconds` (priced by cost.StepCost)."""
    seconds: float
    label: str = "compute"


@dataclass(frozen=True)
class Collective:
    """`count` back-to-back collectives `op` of `nbytes` in each group, the groups side by side.
    One Communicator call per group, so in `fast` the first collective that finds its links idle
    replays itself and the rest."""
    op: str
    groups: tuple[Group, ...]
    nbytes: float
    algorithm: str = "auto"
    count: int = 1


@dataclass(frozen=True)
class Interleaved:
    """`seconds` of compute with `collective.count` collectives spaced evenly through it (one at
    each layer boundary of a dense stage: the Megatron all-reduces after attention and FFN).
    Played, compute is cut into count + 1 equal slices around them, in both fidelities (`fast`
    replays the whole pattern as one timeout while its links are idle: Communicator.execute)."""
    seconds: float
    collective: Collective


@dataclass(frozen=True)
class AllToAll:
    """An all-to-all over `group` with per-pair bytes `matrix[i][j]`; `key` names which routing draw
    and direction it is (the same draw's dispatch is one priced unit however many layers use it)."""
    group: Group
    matrix: tuple[tuple[float, ...], ...]
    algorithm: str
    key: tuple


@dataclass(frozen=True)
class Experts:
    """Routed experts of one MoE layer: every GPU computes its own copies; the layer waits for the
    slowest (`slowest_s`). `mean_s` is compute; the rest is the straggler wait."""
    slowest_s: float
    mean_s: float
    key: tuple = ()


@dataclass(frozen=True)
class RingPass:
    """Ring attention, pass-KV (context parallelism), over `count` layers: each layer's attention
    runs `steps + 1` blocks of `compute_s` on every CP rank; while a rank computes on the K/V block
    it holds, it sends that block to the next rank (`transfer`, a neighbour permutation as an
    all-to-all matrix) and receives the next one. A layer therefore takes
    compute_s + steps * max(compute_s, transfer time): transfers hide under compute when a block's
    compute outlasts its transfer."""
    compute_s: float
    transfer: AllToAll
    steps: int
    count: int


@dataclass(frozen=True)
class TwoBatch:
    """Two-batch overlap (`engine.overlap: tp_comm`): two half-batches of `compute_s` of stage
    compute each, interleaved so that one half's collectives (`collective`, `count` per half)
    run while the other half computes (simserve.iteration.overlap gives the order and its time)."""
    compute_s: float
    collective: Collective


@dataclass(frozen=True)
class Host:
    """CPU work the GPU waits for (scheduling, input preparation, sampling)."""
    seconds: float


Step = Union[Compute, Collective, Interleaved, AllToAll, Experts, RingPass, TwoBatch, Host]


@dataclass(frozen=True)
class Layers:
    count: int
    bodies: tuple[tuple[Step, ...], ...]

    def uses(self) -> list[int]:
        """How many of the `count` layers run each body."""
        n = len(self.bodies)
        return [self.count // n + (1 if b < self.count % n else 0) for b in range(n)]


@dataclass(frozen=True)
class IterationPlan:
    steps: tuple[Union[Step, Layers], ...]

    def flat(self):
        """(step, times) in the order the stage runs them, each Layers body once with its uses."""
        for item in self.steps:
            if isinstance(item, Layers):
                for body, uses in zip(item.bodies, item.uses()):
                    if uses:
                        for step in body:
                            yield step, uses
            else:
                yield item, 1

    def played(self):
        """Every step in the order the stage runs it, layer by layer."""
        for item in self.steps:
            if isinstance(item, Layers):
                n = len(item.bodies)
                for layer in range(item.count):
                    yield from item.bodies[layer % n]
            else:
                yield item

    def describe(self) -> str:
        """One line per step (what `print(plan)` shows a user)."""
        lines = []
        for item in self.steps:
            if isinstance(item, Layers):
                lines.append(f"{item.count} layers x {len(item.bodies)} bodies:")
                for b, body in enumerate(item.bodies):
                    lines += [f"  [{b}] {_line(step)}" for step in body]
            else:
                lines.append(_line(item))
        return "\n".join(lines)


def _line(step: Step) -> str:
    if isinstance(step, Compute):
        return f"compute {step.label} {step.seconds * 1e6:.2f} us"
    if isinstance(step, Collective):
        return (f"{step.op} x{step.count} {step.nbytes:.0f} B {step.algorithm} over "
                f"{len(step.groups)} group(s) of {len(step.groups[0])}")
    if isinstance(step, Interleaved):
        return f"compute {step.seconds * 1e6:.2f} us with {_line(step.collective)} interleaved"
    if isinstance(step, AllToAll):
        return f"alltoall {step.key} {sum(map(sum, step.matrix)):.0f} B over {len(step.group)} GPUs"
    if isinstance(step, Experts):
        return f"experts slowest {step.slowest_s * 1e6:.2f} us, mean {step.mean_s * 1e6:.2f} us"
    if isinstance(step, TwoBatch):
        return f"two halves of {step.compute_s * 1e6:.2f} us, each with {_line(step.collective)} overlapped"
    if isinstance(step, RingPass):
        return (f"ring attention x{step.count} layers: {step.steps + 1} blocks of {step.compute_s * 1e6:.2f} us, "
                f"{step.steps} K/V passes of {max(max(r) for r in step.transfer.matrix):.0f} B")
    return f"host {step.seconds * 1e6:.2f} us"
