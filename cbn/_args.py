"""Argument checks shared by every public function and layer.

One place, so that cbn._normalize, cbn._layers, cbn.kernels and the Python
modules refuse the same things with the same messages:

* :func:`asarray` -- ``numpy.asarray`` for array arguments, refusing
  ``numpy.ma.MaskedArray``, whose mask asarray would silently drop.
* :func:`index` and :func:`real` -- integer and real-number arguments, taken
  as NumPy and PyTorch take them: numbers only, never strings (``float("0.1")``
  and ``int("3")`` would parse them) or complex numbers. Wrong types raise
  TypeError naming the argument and the type received; range checks stay
  with the callers, as ValueError.

Callers keep their fast paths for the common case (an exact ndarray) and call
these only off them, so the checks cost nothing there.
"""
import numbers
import operator
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


def refuse_masked_out(out):
    """TypeError when ``out`` is a ``numpy.ma.MaskedArray``: the kernels
    would write its data under the mask and leave the mask as it was, so
    the result would show old values as masked and hide new ones."""
    masked = _masked_array_type()
    if masked is not None and isinstance(out, masked):
        raise TypeError(
            "out is a numpy.ma.MaskedArray, which cbn does not support: its "
            "mask would be left as it was over the new values. Pass its data "
            "(out.data) to write through it, or let cbn allocate the result")


def _type_name(value):
    """How an error message names the type of ``value``."""
    if value is None:
        return "None"
    name = type(value).__name__
    if isinstance(value, np.ndarray):
        name += f" (shape {value.shape}, dtype {value.dtype})"
    return name


def index(value, name, what="an integer"):
    """``operator.index(value)``, for the integer argument called ``name``.

    Takes what NumPy takes for an axis or a count: anything with
    ``__index__`` (int, bool, numpy integers, 0-d integer arrays). Anything
    else (float, numpy floats, str, bytes, None) raises TypeError saying
    that ``name`` must be ``what``.
    """
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be {what}, not {_type_name(value)}") from None


def real(value, name, what="a real number"):
    """``float(value)``, for the real-number argument called ``name``.

    Takes int, bool, float and other ``numbers.Real`` (``fractions.Fraction``),
    numpy real scalars (floating, integer, bool) and 0-d arrays of them.
    Anything else (str, bytes, complex, None, arrays of other shapes or
    dtypes, a masked array, other objects) raises TypeError saying that
    ``name`` must be ``what``.
    """
    if type(value) is float:
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        masked = _masked_array_type()
        ok = (value.ndim == 0 and value.dtype.kind in "biuf"
              and (masked is None or not isinstance(value, masked)))
    else:
        ok = isinstance(value, numbers.Real)
    if not ok:
        raise TypeError(f"{name} must be {what}, not {_type_name(value)}")
    return float(value)
