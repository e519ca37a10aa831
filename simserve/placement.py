"""Where a parallel layout's ranks live: replica -> pipeline stage -> tensor-parallel group of GPUs.

Default placement fills GPUs in order, TP innermost, so a TP group stays inside one node whenever
it fits (TP all-reduces are the heaviest traffic), then PP stages, then DP replicas. A TP group
larger than a node spans whole nodes. Users may pin the GPUs of each replica instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from simserve.errors import ConfigError


@dataclass(frozen=True)
class Placement:
    replicas: tuple[tuple[tuple[int, ...], ...], ...]   # replica -> stage -> GPU ids of its TP group
    gpus_per_node: int

    @property
    def num_gpus(self) -> int:
        return sum(len(group) for rep in self.replicas for group in rep)

    def node_of(self, gpu: int) -> int:
        return gpu // self.gpus_per_node


def place(tp: int, pp: int, dp: int, nodes: int, gpus_per_node: int,
          pinned: Sequence[Sequence[int]] | None = None) -> Placement:
    total = nodes * gpus_per_node
    need = tp * pp * dp
    if need > total:
        raise ConfigError(f"layout tp={tp} x pp={pp} x dp={dp} needs {need} GPUs; the cluster has "
                          f"{total} ({nodes} node(s) x {gpus_per_node})")
    if tp > gpus_per_node and tp % gpus_per_node:
        raise ConfigError(f"tp={tp} spans nodes of {gpus_per_node} GPUs unevenly; use a multiple of {gpus_per_node}")
    if tp <= gpus_per_node and gpus_per_node % tp:
        raise ConfigError(f"tp={tp} does not divide the {gpus_per_node} GPUs of a node; a TP group would straddle two nodes")
    if pinned is not None:
        if len(pinned) != dp:
            raise ConfigError(f"parallelism.placement lists {len(pinned)} replicas; dp={dp}")
        seen: set[int] = set()
        replicas = []
        for r, gpus in enumerate(pinned):
            gpus = [int(g) for g in gpus]
            if len(gpus) != tp * pp:
                raise ConfigError(f"parallelism.placement[{r}] has {len(gpus)} GPUs; tp x pp = {tp * pp}")
            bad = [g for g in gpus if not 0 <= g < total or g in seen]
            if bad:
                raise ConfigError(f"parallelism.placement[{r}]: GPU {bad[0]} is out of range 0..{total - 1} or used twice")
            seen.update(gpus)
            replicas.append(tuple(tuple(gpus[s * tp:(s + 1) * tp]) for s in range(pp)))
        return Placement(tuple(replicas), gpus_per_node)
    replicas = tuple(
        tuple(tuple(range((r * pp + s) * tp, (r * pp + s + 1) * tp)) for s in range(pp)) for r in range(dp))
    return Placement(replicas, gpus_per_node)


def split_layers(num_layers: int, pp: int, explicit: Sequence[int] | str | None = None,
                 head_layers: tuple[float, float] = (0.0, 0.0)) -> tuple[int, ...]:
    """Layers per stage.

    - an explicit list;
    - "even" (default): as even as possible, earlier stages take the remainder;
    - "balanced": equal stage *times*, where the first stage's embedding and the last stage's
      LM head count as `head_layers` = (first, last) layer-equivalents of time (the caller derives
      them from the cost model); the remaining layers are spread evenly over the other stages.
    """
    if isinstance(explicit, (list, tuple)):
        if len(explicit) != pp or sum(explicit) != num_layers or min(explicit) < 1:
            raise ConfigError(f"parallelism.stage_layers {list(explicit)} must list {pp} positive counts "
                              f"summing to the model's {num_layers} layers")
        return tuple(int(x) for x in explicit)
    if pp > num_layers:
        raise ConfigError(f"pp={pp} exceeds the model's {num_layers} layers")
    if explicit == "balanced" and pp > 1:
        first_extra, last_extra = head_layers
        target = (num_layers + first_extra + last_extra) / pp
        first = max(1, round(target - first_extra))
        last = max(1, round(target - last_extra))
        middle = num_layers - first - last
        if pp == 2:
            first, last = first + middle // 2 + middle % 2, last + middle // 2
            return (first, last)
        if middle >= pp - 2:
            base, extra = divmod(middle, pp - 2)
            return (first,) + tuple(base + (1 if s < extra else 0) for s in range(pp - 2)) + (last,)
    base, extra = divmod(num_layers, pp)
    return tuple(base + (1 if s < extra else 0) for s in range(pp))
