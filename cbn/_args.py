"""Argument checks shared by every public function and layer.

One place, so that cbn._normalize, cbn._layers, cbn.kernels and the Python
modules refuse the same things with the same messages:

* :func:`asarray` -- ``numpy.asarray`` for array arguments, refusing
  ``numpy.ma.MaskedArray``, whose mask asarray would silently drop.

Callers keep their fast paths for the common case (an exact ndarray) and call
these only off them, so the checks cost nothing there.
"""
import sys

import numpy as np


def _masked_array_type():
    """numpy.ma.MaskedArray, or None while numpy.ma is not imported (then no
    masked array can exist; NumPy 2 imports numpy.ma lazily, and this does
    not import it)."""
    ma = sys.modules.get("numpy.ma")
    return None if ma is None else ma.MaskedArray


def asarray(value, name):
    """``numpy.asarray(value)`` for the array argument called ``name``.

    A ``numpy.ma.MaskedArray`` (or subclass, ``numpy.ma.masked`` included)
    raises TypeError: cbn has no mask support yet, and asarray would compute
    over the masked values and drop the mask without a word. Other ndarray
    subclasses, which add methods but no meaning to the values
    (``numpy.matrix``, ``numpy.memmap``), are used as plain ndarrays.
    """
    masked = _masked_array_type()
    if masked is not None and isinstance(value, masked):
        raise TypeError(
            f"{name} is a numpy.ma.MaskedArray, which cbn does not support: it "
            f"would compute over the masked values and drop the mask. Pass "
            f"np.asarray({name}) to ignore the mask, or {name}.filled(np.nan) "
            f"to mark the masked values missing (NaN then spreads to the "
            f"results of their feature; nan_policy='omit', which would skip "
            f"them, is planned)")
    return np.asarray(value)
