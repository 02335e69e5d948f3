"""Shared pytest fixtures for the cbn test suite."""
import os
import sys

import numpy as np
import pytest

import cbn
from cbn import kernels

# The tests import the oracle as a top-level module; make that work whatever
# pytest import mode is configured (importlib mode does not touch sys.path).
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def rng():
    """A freshly seeded generator, so every test sees the same data every run."""
    return np.random.default_rng(20240611)


@pytest.fixture(params=kernels.simd_levels())
def simd_level(request):
    """Run the test at each SIMD level this CPU supports (the fixture's value
    is the level's name), then restore the level that was set before, so a
    failing test cannot leave the rest of the suite on another level."""
    before = kernels.simd_by_pass()
    kernels.set_simd(request.param)
    yield request.param
    for p, level in before.items():
        kernels.set_simd(level, passes=p)


@pytest.fixture
def threads():
    """Set the OpenMP thread count for the test; restore the default afterwards."""
    yield cbn.set_num_threads
    cbn.set_num_threads(0)
