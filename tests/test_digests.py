"""Pinned outputs of the examples (see tests/digests.py): any change to a number is deliberate.

A model change that moves numbers regenerates the digests (`python -m tests.digests --update`) in
the same commit and says why; a restructuring leaves them alone. Values are hashed at 12
significant digits so that a different numpy or BLAS build (last-bit summation order) does not
read as a change of the model.
"""
import json

import pytest

from tests.digests import DIGESTS, cases, digest, FAST_ONLY

KNOWN = json.loads(DIGESTS.read_text())


@pytest.mark.parametrize("key", sorted(KNOWN))
def test_outputs_match_the_pinned_digest(key):
    name, fidelity = key.split("/")
    config, overrides = cases()[name]
    assert digest(config, overrides, fidelity) == KNOWN[key], \
        f"{key}: outputs changed; if deliberate, run `python -m tests.digests --update` and say why"


def test_every_example_is_pinned():
    expected = {f"{n}/{f}" for n in cases() for f in (("fast",) if n in FAST_ONLY else ("fast", "exact"))}
    assert expected == set(KNOWN)
