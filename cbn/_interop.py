"""Arrays of other libraries in, the same kind of array out.

:func:`cbn.normalize_batch`, :func:`cbn.normalize_batch_backward` and
:func:`cbn.zscore` compute on NumPy arrays. An input from another library is
read as one -- through DLPack (``numpy.from_dlpack``), without a copy where
its layout allows, or through ``to_numpy()`` for pandas -- and the result of
x's shape goes back to the input's library the same way. Per-feature results
(statistics, dgamma, dbeta) stay NumPy arrays.

Nothing here imports torch, pandas or array_api_compat: an object is
recognized by its protocols (``__dlpack__``, ``__array_namespace__``) and by
the module its type comes from, so ``import cbn`` needs NumPy alone.
"""
import sys

import numpy as np

# DLPack's DLDeviceType codes, for the message that names a device.
_DEVICES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan",
            8: "metal", 9: "vpi", 10: "rocm", 11: "rocm_host", 13: "cuda_managed",
            14: "oneapi", 15: "webgpu", 16: "hexagon"}
_CPU = (1, 3, 11)  # host memory: the CPU reads it in place


def foreign(a, name):
    """``(ndarray, wrap)`` for an array of another library, where ``wrap``
    turns a result of a's shape back into a's kind of array; None for
    anything NumPy takes directly (ndarrays, lists, scalars).

    Raises TypeError for an array that is not in host memory, for a torch
    tensor that requires grad (cbn's functions are outside autograd, so its
    result would be silently detached), and for data NumPy cannot hold
    (e.g. bfloat16)."""
    if isinstance(a, np.ndarray):
        return None
    library = type(a).__module__.split(".")[0]
    if library == "pandas" and hasattr(a, "to_numpy") and hasattr(a, "index"):
        return _from_pandas(a)
    if not hasattr(a, "__dlpack__"):
        return None
    if hasattr(a, "__dlpack_device__"):
        kind, index = a.__dlpack_device__()
        if int(kind) not in _CPU:
            device = f"{_DEVICES.get(int(kind), f'device type {int(kind)}')}:{index}"
            raise TypeError(f"{name} is on {device}; cbn computes on the CPU: move it "
                            f"to host memory first (for torch, {name}.cpu())")
    if getattr(a, "requires_grad", False):
        raise TypeError(f"{name} requires grad: cbn's functions are outside torch's "
                        f"autograd, so their result would be silently detached. Pass "
                        f"{name}.detach() and take the gradient with "
                        f"cbn.normalize_batch_backward")
    try:
        arr = np.from_dlpack(a)
    except (BufferError, TypeError, RuntimeError, ValueError) as e:
        raise TypeError(f"{name} ({type(a).__module__}.{type(a).__name__}) cannot be "
                        f"read as a NumPy array through DLPack: {e}") from None
    return arr, _dlpack_wrap(a, library)


def _from_pandas(a):
    """A DataFrame's or Series' values, and how to put a result back in one
    with the same index (and columns, or name)."""
    values = np.asarray(a.to_numpy())
    if hasattr(a, "columns"):
        return values, lambda r: type(a)(r, index=a.index, columns=a.columns)
    return values, lambda r: type(a)(r, index=a.index, name=a.name)


def _dlpack_wrap(a, library):
    """How to give a result to a's library: its array namespace's
    ``from_dlpack`` (the array API), else array_api_compat's namespace for it
    if that is installed, else the ``from_dlpack`` of the module its type
    comes from (``torch.from_dlpack``); without any, the result stays a
    NumPy array."""
    xp = None
    if hasattr(a, "__array_namespace__"):
        xp = a.__array_namespace__()
    else:
        try:
            import array_api_compat
            xp = array_api_compat.array_namespace(a)
        except (ImportError, TypeError):
            xp = sys.modules.get(library)
    convert = getattr(xp, "from_dlpack", None)
    if convert is None:
        return lambda r: r
    return convert


def rewrap(result, wrap, nfirst=1):
    """``result`` (an array, or a tuple whose first ``nfirst`` items have x's
    shape) with those arrays given back through ``wrap``."""
    if isinstance(result, tuple):
        return tuple(wrap(r) if i < nfirst else r for i, r in enumerate(result))
    return wrap(result)
