"""Shared pytest fixtures for the cbn test suite."""
import os
import sys

import numpy as np
import pytest

# The tests import the oracle as a top-level module; make that work whatever
# pytest import mode is configured (importlib mode does not touch sys.path).
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def rng():
    """A freshly seeded generator, so every test sees the same data every run."""
    return np.random.default_rng(20240611)
