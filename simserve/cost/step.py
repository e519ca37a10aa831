"""Fast evaluation of an iteration's compute time on one GPU.

The operators of cost.operators are linear in the batch features, so a stage's whole iteration is
a small matrix: time = sum over ops of weight * gate * (max(C x, M x) + overhead) * r, where C holds
FLOPs per feature divided by achievable FLOP/s, M bytes per feature divided by achievable
bandwidth, weight is the number of layers (1 for the head) and r a measured correction (1, a
GEMM's rho(M) from cost.gemm_table, or an operator table's ratio from cost.op_tables). `time` evaluates one iteration in
plain Python; `decode_times` evaluates a run of decode steps with numpy, performing the same
floating-point operations in the same order, so both give bit-identical results. The engine uses
`decode_times` to advance a run of decode steps in one event.
"""
from __future__ import annotations

import numpy as np

from simserve.catalog import Gpu, ModelCard
from simserve.cost.operators import (FEATURES, BatchStats, OpModel, Precision, Shard, features,
                                     head_op_models, layer_op_models)
from simserve.cost.roofline import efficiencies, fixed_s, gemm_curve, table_ratio

FEATURE_INDEX = {f: i for i, f in enumerate(FEATURES)}


class StepCost:
    def __init__(self, model: ModelCard, shard: Shard, precision: Precision, gpu: Gpu):
        layers = shard.num_layers if shard.num_layers is not None else model.num_layers
        weighted: list[tuple[OpModel, float]] = [(m, float(layers)) for m in layer_op_models(model, shard, precision)]
        weighted += [(m, 1.0) for m in head_op_models(model, shard, precision)]
        self._compile(weighted, gpu)

    @classmethod
    def of_ops(cls, weighted: list[tuple[OpModel, float]], gpu: Gpu) -> "StepCost":
        """Any list of (operator model, times per iteration), e.g. the non-expert part of an MoE layer."""
        self = cls.__new__(cls)
        self._compile(weighted, gpu)
        return self

    def _compile(self, weighted: list[tuple[OpModel, float]], gpu: Gpu) -> None:
        # (gate index, weight, overhead_s, [(feature, compute coef)], [(feature, memory coef)], r):
        # r is None, a measured GEMM's rho(M) (cost.gemm_table) on its ideal roofline time, M
        # being its gate feature (tokens): then the coefficients use peak rates and no overhead,
        # or an operator table's correction r(x) of the fitted time (cost.op_tables)
        self.ops = []
        self._context_memo: dict[tuple, list] = {}
        for op, weight in weighted:
            rho = gemm_curve(op, gpu)
            eta_c, eta_m = (1.0, 1.0) if rho is not None else efficiencies(op, gpu)
            inv_c = 1.0 / (gpu.flops(op.dtype) * eta_c)
            inv_m = 1.0 / (gpu.hbm_bw_Bps * eta_m)
            comp = [(FEATURE_INDEX[f], c * inv_c) for f, c in op.flops.items() if c]
            mem = [(FEATURE_INDEX[f], c * inv_m) for f, c in op.bytes.items() if c]
            overhead = 0.0 if rho is not None else fixed_s(op, gpu)
            gate = FEATURE_INDEX[op.gate]
            scale = (lambda x, rho=rho, gate=gate: rho(x[gate])) if rho is not None else table_ratio(op, gpu)
            self.ops.append((gate, weight, overhead, comp, mem, scale))

    def time(self, batch: BatchStats) -> float:
        feats = features(batch)
        return self.time_of([feats[f] for f in FEATURES])

    def time_of(self, x: list) -> float:
        total = 0.0
        for gate, weight, overhead, comp, mem, scale in self.ops:
            if x[gate] > 0:
                total += _op_time(weight, overhead, comp, mem, x, scale(x) if scale is not None else 1.0)
        return total

    def decode_times(self, num_seqs: int, kv_tokens_start: float, steps: int) -> np.ndarray:
        """Times of `steps` consecutive decode-only iterations of `num_seqs` sequences whose summed
        context (new tokens included) is kv_tokens_start at the first step and grows by num_seqs a
        step. Only the context feature is an array; every operator is evaluated by the same
        `_op_time` as in time_of, in the same order, so element j equals time_of of step j bit for
        bit (operators that do not read the context stay scalars: `context_time_of`)."""
        x: list = [0.0] * len(FEATURES)
        x[_CONST] = 1.0
        x[_TOKENS] = x[_DECODE_TOKENS] = x[_LOGITS] = float(num_seqs)
        x[_DECODE_KV] = kv_tokens_start + num_seqs * np.arange(steps, dtype=float)
        return np.broadcast_to(np.asarray(self.context_time_of(x), dtype=float), (steps,)).copy()

    def context_time_of(self, x: list):
        """time_of of features whose context (decode_kv_tokens) is an array of decode steps: the
        operators that do not read it are evaluated once per batch shape (every other feature) and
        remembered, the others each time; the sum runs in time_of's order, so the result is the
        same bit for bit."""
        key = tuple(v for i, v in enumerate(x) if i != _DECODE_KV)
        parts = self._context_memo.get(key)
        if parts is None:
            parts = []
            for op in self.ops:
                gate, weight, overhead, comp, mem, scale = op
                if x[gate] > 0:
                    t = _op_time(weight, overhead, comp, mem, x, scale(x) if scale is not None else 1.0)
                    parts.append(op if isinstance(t, np.ndarray) else t)
            if len(self._context_memo) < 4096:      # batch shapes: at most a few hundred
                self._context_memo[key] = parts
        total = 0.0
        for part in parts:
            if isinstance(part, tuple):
                _, weight, overhead, comp, mem, scale = part
                part = _op_time(weight, overhead, comp, mem, x, scale(x) if scale is not None else 1.0)
            total += part
        return total


def _op_time(weight: float, overhead: float, comp, mem, x: list, scale=1.0):
    """weight * ((max(compute, memory) + overhead) * scale) of one operator; features and scale may
    be scalars or arrays (a decode-attention correction depends on the context)."""
    c = 0.0
    for f, coef in comp:
        c += coef * x[f]
    m = 0.0
    for f, coef in mem:
        m += coef * x[f]
    if isinstance(c, np.ndarray) or isinstance(m, np.ndarray):
        return weight * ((np.maximum(c, m) + overhead) * scale)
    return weight * (((c if c > m else m) + overhead) * scale)


_CONST, _TOKENS, _DECODE_TOKENS, _LOGITS, _DECODE_KV = (
    FEATURE_INDEX[f] for f in ("const", "tokens", "decode_tokens", "logits_tokens", "decode_kv_tokens"))
