"""Routing traces for MoE models: which experts each iteration's tokens chose (a file format)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from simserve.errors import ConfigError


def read_routing_trace(path: str | Path, num_experts: int) -> np.ndarray:
    """A routing trace: CSV with header `iteration,layer,e0,e1,...` (tokens per expert); returns
    (iterations, layers, E) counts. Missing (iteration, layer) rows are errors."""
    path = Path(path)
    try:
        with path.open() as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise ConfigError(f"routing trace not found: {path}") from None
    if not rows or rows[0][:2] != ["iteration", "layer"] or len(rows[0]) - 2 != num_experts:
        raise ConfigError(f"{path}: expected a header iteration,layer,e0..e{num_experts - 1} "
                          f"({num_experts} experts)")
    data = {}
    for n, row in enumerate(rows[1:], start=2):
        try:
            it, layer, *counts = row
            data[(int(it), int(layer))] = [float(c) for c in counts]
        except ValueError:
            raise ConfigError(f"{path}:{n}: expected integers iteration, layer and {num_experts} counts") from None
        if len(counts) != num_experts or min(data[(int(it), int(layer))]) < 0:
            raise ConfigError(f"{path}:{n}: expected {num_experts} non-negative counts")
    if not data:
        raise ConfigError(f"{path}: no rows")
    iters = max(i for i, _ in data) + 1
    layers = max(l for _, l in data) + 1
    out = np.zeros((iters, layers, num_experts))
    for i in range(iters):
        for l in range(layers):
            if (i, l) not in data:
                raise ConfigError(f"{path}: no row for iteration {i}, layer {l}")
            out[i, l] = data[(i, l)]
    return out
