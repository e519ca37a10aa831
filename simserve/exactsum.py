"""An exact running sum of floats in bounded memory: math.fsum's result without keeping the parts.

Why: a stage's busy seconds are the sum of hundreds of thousands of iteration times. math.fsum of
all of them is correctly rounded and does not depend on the order of the parts, so runs that book
the same iterations in another order (fast and exact fidelity, coalesced and stepped decode) agree
to the last bit; but keeping every part grows with the run. Every finite double is an integer
multiple of 2**-1074, so the sum is kept as one Python integer in those units: adding is exact,
and int / int division is correctly rounded, so `value()` equals math.fsum of every part ever
added. Parts are buffered and folded into the integer COMPACT_EVERY at a time with numpy (the
mantissas of equal exponent summed in 26-bit halves, exact in float64), so a part costs well under
a microsecond and the memory is bounded by the buffer.
"""
from __future__ import annotations

import numpy as np

COMPACT_EVERY = 2048          # buffered parts (floats or arrays) before folding into the integer
_UNIT_BITS = 1074             # 2**-1074: the smallest positive double
_HALF = 26                    # mantissas (53 bits) split in halves whose sums stay exact in float64
_TINY = 2.0 ** -1000          # below: subnormal-adjacent values go through as_integer_ratio


def _scaled(x: float) -> int:
    """x exactly, in units of 2**-1074."""
    num, den = x.as_integer_ratio()          # den is a power of two
    return num << (_UNIT_BITS + 1 - den.bit_length())


def _scaled_sum(values: np.ndarray) -> int:
    """The exact sum of finite float64 values, in units of 2**-1074."""
    tiny = np.abs(values) < _TINY
    total = sum(_scaled(v) for v in values[tiny].tolist()) if tiny.any() else 0
    mant, exp = np.frexp(values[~tiny] if tiny.any() else values)
    ints = (mant * 2.0 ** 53).astype(np.int64)               # exact: 53-bit mantissas
    exps, group = np.unique(exp, return_inverse=True)
    hi = np.bincount(group, weights=(ints >> _HALF).astype(np.float64), minlength=len(exps))
    lo = np.bincount(group, weights=(ints & ((1 << _HALF) - 1)).astype(np.float64), minlength=len(exps))
    for e, h, l_ in zip(exps.tolist(), hi.tolist(), lo.tolist()):
        total += ((int(h) << _HALF) + int(l_)) << (e - 53 + _UNIT_BITS)
    return total


class ExactSum:
    """Add floats or float arrays; `value()` is the correctly rounded sum of all of them."""

    __slots__ = ("_units", "_floats", "_arrays")

    def __init__(self):
        self._units = 0
        self._floats: list[float] = []
        self._arrays: list[np.ndarray] = []

    def add(self, x: float) -> None:
        self._floats.append(x)
        if len(self._floats) >= COMPACT_EVERY:
            self._compact()

    def add_array(self, values) -> None:
        """Add every entry (the array is copied when folded, so a view of a longer one is fine)."""
        self._arrays.append(np.asarray(values, dtype=np.float64))
        if len(self._arrays) >= COMPACT_EVERY:
            self._compact()

    def _compact(self) -> None:
        parts = [np.asarray(self._floats, dtype=np.float64)] + [a.ravel() for a in self._arrays]
        values = np.concatenate(parts)
        if values.size:
            if not np.isfinite(values).all():
                raise ValueError("ExactSum adds finite numbers only")
            self._units += _scaled_sum(values)
        self._floats, self._arrays = [], []

    def value(self) -> float:
        self._compact()
        return self._units / (1 << _UNIT_BITS) if self._units else 0.0

    def __float__(self) -> float:
        return self.value()

