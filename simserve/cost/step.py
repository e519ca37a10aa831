"""Fast evaluation of an iteration's compute time on one GPU.

The operators of cost.operators are linear in the batch features, so a stage's whole iteration is
a small matrix: time = sum over ops of weight * gate * (max(C x, M x) + overhead) * r, where C holds
FLOPs per feature divided by achievable FLOP/s, M bytes per feature divided by achievable
bandwidth, weight is the number of layers (1 for the head) and r a measured correction (1, a
GEMM's rho(M) from cost.gemm_table, or an operator table's ratio from cost.op_tables). `time` evaluates one iteration in
plain Python; `decode_times` evaluates a run of decode steps with numpy, performing the same
floating-point operations in the same order, so both give bit-identical results. The engine uses
`decode_times` to advance a run of decode steps in one event. Operators that do not read the
context (every one but the attentions) are evaluated once per batch shape and remembered; the sum
still adds each term in operator order.
"""
from __future__ import annotations

import numpy as np

from simserve.catalog import Gpu, ModelCard
from simserve.cost.operators import (FEATURES, BatchStats, OpModel, Precision, Shard, head_op_models,
                                     layer_op_models)
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
        self._context_memo: dict[tuple, tuple] = {}     # batch shape -> time_of's terms
        self._run_memo: dict[tuple, tuple] = {}         # batch shape -> context_time_of's rows
        for op, weight in weighted:
            rho = gemm_curve(op, gpu)
            eta_c, eta_m = (1.0, 1.0) if rho is not None else efficiencies(op, gpu)
            inv_c = 1.0 / (gpu.flops(op.dtype) * eta_c)
            inv_m = 1.0 / (gpu.hbm_bw_Bps * eta_m)
            comp = [(FEATURE_INDEX[f], c * inv_c) for f, c in op.flops.items() if c]
            mem = [(FEATURE_INDEX[f], c * inv_m) for f, c in op.bytes.items() if c]
            if _memory_bound(comp, mem):
                comp = []                      # max(compute, memory) is memory whatever the batch
            overhead = 0.0 if rho is not None else fixed_s(op, gpu)
            gate = FEATURE_INDEX[op.gate]
            scale = GemmRho(rho, gate) if rho is not None else table_ratio(op, gpu)
            self.ops.append((gate, weight, overhead, comp, mem, scale))
        self._reads_context = [_reads_context(op) for op in self.ops]

    def time(self, batch: BatchStats) -> float:
        return self.time_of(feature_list(batch))

    def time_of(self, x: list) -> float:
        """Sum over operators whose gate is positive of their times, in operator order. The
        operators that do not read the context (prefill attention pairs and KV, decode KV) are
        evaluated once per batch shape (every other feature) and remembered (`_shape_plan`): of
        the default hour's 52k mixed iterations, 6k shapes. The sum still adds every term in
        operator order, so the result is the same bit for bit as evaluating each operator."""
        total, segments = self._shape_plan(x)
        for op, tail in segments:
            gate, weight, overhead, comp, mem, scale = op
            if x[gate] > 0:
                total += _op_time(weight, overhead, comp, mem, x, scale(x) if scale is not None else 1.0)
            for t in tail:
                total += t
        return total

    def context_time_of(self, x: list):
        """time_of of features whose context (decode_kv_tokens) is an array of decode steps, with
        the same operations in the same order, elementwise; a float when no operator reads the
        context. A short run costs its count of numpy calls, not its length, so its terms are
        summed by one `np.add.accumulate` down the rows of a (terms, steps) array: accumulate is
        the running sum by definition (row i is row i - 1 plus term i), the same additions as
        time_of's, and a context operator gated off adds a row of +0.0, which changes no sum (none
        is -0.0). Accumulating walks each column, so a long run adds its terms row by row."""
        steps = len(x[_DECODE_KV])
        total, segments, rows, buffer = self._run_rows(x)
        if rows is None:                       # no context operator: time_of
            return self.time_of(x)
        if steps > _ACCUMULATE_STEPS:
            return self._rowwise(x, total, segments)
        terms = buffer[:, :steps]              # the shape's constant rows, kept between runs
        for (op, _), row in zip(segments, rows):
            gate, weight, overhead, comp, mem, scale = op
            if x[gate] > 0:
                _op_times(weight, overhead, comp, mem, x, scale(x) if scale is not None else 1.0, terms[row])
            else:
                terms[row] = 0.0
        return np.add.accumulate(terms, axis=0)[-1]

    def _rowwise(self, x: list, total: float, segments: tuple) -> np.ndarray:
        """context_time_of's sum term by term, in place on an array of its own."""
        out = np.full(len(x[_DECODE_KV]), total)
        for op, tail in segments:
            gate, weight, overhead, comp, mem, scale = op
            if x[gate] > 0:
                out += _op_times(weight, overhead, comp, mem, x, scale(x) if scale is not None else 1.0)
            for t in tail:
                out += t
        return out

    def _run_rows(self, x: list) -> tuple:
        """(prefix, segments) of _shape_plan, the rows of the context operators in context_time_of's
        sum (None: there are none) and a (rows, _ACCUMULATE_STEPS) array holding the other rows
        (the prefix, then per context operator a placeholder and the terms that follow it), per
        batch shape."""
        key = (x[0], x[1], x[2], x[3], x[7])
        found = self._run_memo.get(key)
        if found is None:
            prefix, segments = self._shape_plan(x)
            column, rows = [prefix], []
            for _, tail in segments:
                rows.append(len(column))
                column += [0.0, *tail]
            if len(self._run_memo) >= _MEMO_SHAPES:
                self._run_memo.clear()
            buffer = np.repeat(np.array(column)[:, None], _ACCUMULATE_STEPS, axis=1)
            found = self._run_memo[key] = (prefix, segments, tuple(rows) or None, buffer)
        return found

    def _shape_plan(self, x: list) -> tuple:
        """(the running sum up to the first context operator, [(context operator, the context-free
        terms that follow it)]) for x's batch shape, memoised. Folding the leading terms into one
        float is exact (it is the same running sum); later terms stay separate, because floating-
        point addition is not associative."""
        key = (x[0], x[1], x[2], x[3], x[7])
        plan = self._context_memo.get(key)
        if plan is not None:
            return plan
        prefix, segments = 0.0, []
        for op, context in zip(self.ops, self._reads_context):
            gate, weight, overhead, comp, mem, scale = op
            if context and gate in _CONTEXT:
                segments.append((op, []))      # gated by the context itself: tested each time
            elif not x[gate] > 0:
                continue
            elif context:
                segments.append((op, []))
            else:
                t = _op_time(weight, overhead, comp, mem, x, scale(x) if scale is not None else 1.0)
                if segments:
                    segments[-1][1].append(t)
                else:
                    prefix += t
        plan = prefix, tuple((op, tuple(tail)) for op, tail in segments)
        if len(self._context_memo) >= _MEMO_SHAPES:
            self._context_memo.clear()         # bounded memory; the values do not depend on it
        self._context_memo[key] = plan
        return plan

    def decode_times(self, num_seqs: int, kv_tokens_start: float, steps: int, rows: int | None = None) -> np.ndarray:
        """Times of `steps` consecutive decode-only iterations of `num_seqs` sequences whose summed
        context (new tokens included) is kv_tokens_start at the first step and grows by num_seqs a
        step (computed as `rows` token rows: a CUDA graph's padded size, runtime.RuntimeStepCost).
        Only the context feature is an array; every operator is evaluated with the operations of
        time_of in the same order, so element j equals time_of of step j bit for bit (operators
        that do not read the context stay scalars: `context_time_of`)."""
        x: list = [0.0] * len(FEATURES)
        x[_CONST] = 1.0
        x[_TOKENS] = x[_DECODE_TOKENS] = x[_LOGITS] = float(num_seqs if rows is None else rows)
        x[_DECODE_KV] = kv = np.multiply(_steps(steps), float(num_seqs))
        kv += kv_tokens_start            # kv_tokens_start + num_seqs * j
        out = self.context_time_of(x)
        return out if isinstance(out, np.ndarray) else np.full(steps, out)


def _op_time(weight: float, overhead: float, comp, mem, x: list, scale=1.0):
    """weight * ((max(compute, memory) + overhead) * scale) of one operator whose features read are
    scalars (the scale may be an array: a decode-attention correction of a run's contexts);
    _op_times evaluates one that reads an array."""
    c = 0.0
    for f, coef in comp:
        c += coef * x[f]
    m = 0.0
    for f, coef in mem:
        m += coef * x[f]
    return weight * (((c if c > m else m) + overhead) * scale)


def _op_times(weight: float, overhead: float, comp, mem, x: list, scale=1.0, out=None):
    """_op_time where a feature or the scale is an array (a decode run's context): the same IEEE
    operations on each element, computed in place on arrays made here (the result into `out`
    when given). The running sums start from their first term rather than 0.0 + it: coefficients
    and features are non-negative, so no term is -0.0, the one value 0.0 + y changes."""
    c = _linear(comp, x)
    m = _linear(mem, x)
    if not isinstance(c, np.ndarray) and not isinstance(m, np.ndarray):
        t = _op_time(weight, overhead, comp, mem, x, scale)
        if out is None:
            return t
        out[...] = t
        return out
    if not comp:
        y = m                          # max(0.0, m) is m: no memory term is -0.0 or NaN
    else:
        y = np.maximum(c, m, out=c) if isinstance(c, np.ndarray) else np.maximum(m, c, out=m)  # symmetric
    y += overhead
    y *= scale
    return np.multiply(y, weight, out=y if out is None else out)   # weight * y == y * weight


def _linear(terms, x: list):
    """sum of coef * x[f] in order: an array of its own when a feature is one, else a float."""
    acc = 0.0
    for f, coef in terms:
        v = x[f]
        if isinstance(v, np.ndarray):
            if isinstance(acc, np.ndarray):
                acc += coef * v
            else:
                term = np.multiply(v, coef)
                if acc:
                    term += acc        # acc + term (commutative); 0.0 + term is term
                acc = term
        else:
            acc += coef * v
    return acc


_STEPS = np.arange(1024, dtype=float)


def _steps(n: int) -> np.ndarray:
    """0.0, 1.0, ..., n - 1 (a view of a shared array when it is long enough: read only)."""
    global _STEPS
    if n > len(_STEPS):
        _STEPS = np.arange(max(n, 2 * len(_STEPS)), dtype=float)
    return _STEPS[:n]


_CONST, _TOKENS, _DECODE_TOKENS, _LOGITS, _DECODE_KV = (
    FEATURE_INDEX[f] for f in ("const", "tokens", "decode_tokens", "logits_tokens", "decode_kv_tokens"))
# the features an iteration's context sets; every other one is part of its batch shape (the
# memo key of StepCost._shape_plan, which lists them by index)
_CONTEXT = frozenset(FEATURE_INDEX[f] for f in ("prefill_attn_pairs", "prefill_kv_tokens", "decode_kv_tokens"))
assert FEATURES.index("logits_tokens") == 7 and set(range(len(FEATURES))) - _CONTEXT == {0, 1, 2, 3, 7}
_MEMO_SHAPES = 1 << 15     # batch shapes remembered (a few hundred bytes each)
# decode steps up to which a run's terms are summed by one accumulate (measured here: 14 terms of
# 15 steps 1.2 us vs 17 us row by row; of 200 steps 31 us vs 14 us)
_ACCUMULATE_STEPS = 64


class GemmRho:
    """A measured GEMM's correction rho(M), M being its gate feature (tokens): context-free."""
    context_free = True
    __slots__ = ("rho", "gate")

    def __init__(self, rho, gate: int):
        self.rho, self.gate = rho, gate

    def __call__(self, x) -> float:
        return self.rho(x[self.gate])


def _memory_bound(comp: list, mem: list) -> bool:
    """Whether an operator's memory time is at least its compute time for every batch: its one
    compute term (or none) reads a feature that a memory term reads with a coefficient at least as
    large. Features and coefficients are non-negative and rounding is monotone, so
    fl(a x) <= fl(b x) <= the memory sum (adding a non-negative term never lowers a sum), and
    max(compute, memory) is the memory time bit for bit: the compute sum need not be formed."""
    if not comp:
        return True
    if len(comp) > 1:
        return False
    (f, a), = comp
    return any(g == f and b >= a for g, b in mem)


def _reads_context(op: tuple) -> bool:
    """Whether an operator's time reads a context feature: through its coefficients, its gate, or
    a correction other than a GEMM's rho(M) or an elementwise table's r(tokens) (a decode-attention
    table reads the mean context)."""
    gate, _, _, comp, mem, scale = op
    if gate in _CONTEXT or any(f in _CONTEXT for f, _ in comp) or any(f in _CONTEXT for f, _ in mem):
        return True
    return scale is not None and not getattr(scale, "context_free", False)


def feature_list(batch: BatchStats) -> list:
    """features(batch) as a list in FEATURES order (the same floats, without the dict)."""
    return [1.0, float(batch.tokens), float(batch.prefill_tokens), float(batch.decode_tokens),
            batch.prefill_attn_pairs, batch.prefill_kv_tokens, batch.decode_kv_tokens,
            float(batch.logits_tokens)]
