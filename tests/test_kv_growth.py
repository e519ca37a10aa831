"""kvcache's decode-run block arithmetic: the plain-Python and numpy paths give the same counts as
blocks_for one sequence at a time (both paths are used: PYTHON_MAX_SEQS splits them by count)."""
import numpy as np
from hypothesis import given, settings, strategies as st

from simserve.kvcache import PYTHON_MAX_SEQS, blocks_for, extra_blocks, steps_that_fit

seqs = st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 3)), min_size=1, max_size=2 * PYTHON_MAX_SEQS)


def _brute(prefilled, held, bs, steps):
    return sum(max(blocks_for(p + steps, bs) - h, 0) for p, h in zip(prefilled, held))


@settings(max_examples=60, deadline=None)
@given(seqs, st.sampled_from([1, 16, 32]), st.integers(1, 300), st.integers(0, 400))
def test_extra_blocks_and_steps_that_fit_agree_on_lists_and_arrays(rows, bs, steps, free):
    prefilled = [p for p, _ in rows]
    held = [blocks_for(p, bs) + extra for p, extra in rows]      # some hold more than they fill
    arrays = np.array(prefilled, dtype=np.int64), np.array(held, dtype=np.int64)
    expected = _brute(prefilled, held, bs, steps)
    assert extra_blocks(prefilled, held, bs, steps) == expected == extra_blocks(*arrays, bs, steps)
    k = steps_that_fit(prefilled, held, bs, steps, free)
    assert k == steps_that_fit(*arrays, bs, steps, free)
    assert k == steps or _brute(prefilled, held, bs, k + 1) > free
    assert k == 1 or _brute(prefilled, held, bs, k) <= free
