"""Folding an inference-mode batch norm into the layer before it.

In eval mode a batch norm is an affine map per channel,
``y = (z - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``, and so is
the convolution or linear layer that produces z: the two compose into one
layer with weights scaled per output channel, and the batch norm costs
nothing at inference. PyTorch has this as an FX utility
(``torch.fx.experimental.optimization.fuse``); here it is a function of
arrays, for any layer whose weight has an output-channel axis.
"""
from collections.abc import Mapping

import numpy as np

from cbn._args import asarray, index, real
from cbn._layers import BatchNorm

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError


def _vector(value, name, C):
    """``value`` as a float64 vector of C channels (None stays None)."""
    if value is None:
        return None
    v = np.asarray(asarray(value, name), dtype=np.float64)
    if v.shape != (C,):
        raise ValueError(f"{name} must have shape ({C},), one value per channel of "
                         f"running_mean, got {v.shape}")
    return v


def _batchnorm_parts(bn):
    """running_mean, running_var, gamma, beta (None when absent) and eps of a
    cbn layer or a state dict, as float64."""
    if isinstance(bn, BatchNorm):
        if not bn.track_running_stats:
            raise ValueError("bn keeps no running statistics (track_running_stats=False): "
                             "in eval mode it normalizes with each batch's own, which "
                             "no fixed weights can reproduce")
        mean, var, gamma, beta, eps = (bn.running_mean, bn.running_var, bn.gamma,
                                       bn.beta, bn.eps)
    elif isinstance(bn, Mapping):
        missing = [k for k in ("running_mean", "running_var", "eps") if k not in bn]
        if missing:
            raise ValueError(f"bn has no {', '.join(missing)}: a batch norm's state needs "
                             "running_mean, running_var and eps (weight and bias are "
                             "optional)")
        mean, var, eps = bn["running_mean"], bn["running_var"], bn["eps"]
        gamma, beta = bn.get("weight"), bn.get("bias")
        if mean is None or var is None:
            raise ValueError("bn keeps no running statistics (running_mean or "
                             "running_var is None)")
    else:
        raise TypeError("bn must be a cbn batch-norm layer or a mapping with "
                        "running_mean, running_var, eps and optionally weight and bias, "
                        f"not {type(bn).__name__}")
    mean = np.asarray(asarray(mean, "running_mean"), dtype=np.float64)
    if mean.ndim != 1:
        raise ValueError(f"running_mean must be a vector, got shape {mean.shape}")
    C = mean.shape[0]
    eps = real(eps, "eps")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    return (mean, _vector(var, "running_var", C), _vector(gamma, "weight", C),
            _vector(beta, "bias", C), eps)


def fold_batchnorm(weight, bias, bn, *, axis=0):
    """Fold an eval-mode batch norm into the linear or convolution layer
    before it.

    A layer computing ``z`` from ``weight`` and ``bias`` (a convolution, a
    matrix product, anything linear in its weight along an output-channel
    axis, plus a per-channel bias), followed by ``bn`` in eval mode,
    computes the same as that layer with the returned weight and bias
    alone, up to float rounding::

        s  = gamma / sqrt(running_var + eps)
        W2 = weight * s      (s along weight's output-channel axis)
        b2 = (bias - running_mean) * s + beta

    computed in float64 and rounded once to the result's dtype.

    Parameters
    ----------
    weight : array_like
        The layer's weight, with its output channels along ``axis``.
    bias : array_like or None
        The layer's bias, one value per output channel; None for a layer
        without bias (taken as zeros).
    bn : BatchNorm or mapping
        A cbn batch-norm layer that keeps running statistics, or a mapping
        with ``running_mean``, ``running_var``, ``eps`` and, for an affine
        batch norm, ``weight`` and ``bias`` (gamma and beta; absent or None
        mean 1 and 0): a PyTorch ``state_dict()`` with ``eps`` added, or
        a cbn layer's :meth:`~BatchNorm.state_dict` likewise.
    axis : int, optional
        weight's output-channel axis: 0 (the default) for PyTorch's
        ``Conv2d`` weight (out, in, kh, kw) and ``Linear`` weight
        (out, in); 1 for ``x @ W`` with W of shape (in, out).

    Returns
    -------
    weight, bias : ndarray
        New arrays (nothing given is modified): the folded weight, of
        weight's shape, and bias, one value per channel, in weight's
        floating dtype (float64 for integer weights).

    Raises
    ------
    ValueError
        If weight's channel count along ``axis`` differs from bn's, bias or
        a bn vector has another length, or bn keeps no running statistics.
    TypeError
        If bn is neither a cbn layer nor a mapping, or an argument is not
        numeric.
    numpy.exceptions.AxisError
        If ``axis`` is out of range for weight.

    Examples
    --------
    A linear layer ``x @ W + b`` followed by a batch norm in eval mode:

    >>> import numpy as np
    >>> import cbn
    >>> rng = np.random.default_rng(0)
    >>> W, b = rng.normal(size=(5, 3)), rng.normal(size=3)
    >>> bn = cbn.BatchNorm1d(3, dtype=np.float64)
    >>> for _ in range(20):  # running statistics from training batches
    ...     _ = bn.forward(rng.normal(2.0, 3.0, (64, 5)) @ W + b)
    >>> _ = bn.eval()
    >>> W2, b2 = cbn.fold_batchnorm(W, b, bn, axis=1)
    >>> x = rng.normal(size=(4, 5))
    >>> bool(np.allclose(x @ W2 + b2, bn.forward(x @ W + b)))
    True
    """
    w = asarray(weight, "weight")
    if not (np.issubdtype(w.dtype, np.number) and not np.iscomplexobj(w)):
        raise TypeError(f"weight must hold real numbers, got dtype {w.dtype}")
    if w.ndim == 0:
        raise ValueError("weight must have an output-channel axis, got a 0-d array")
    ax = index(axis, "axis")
    if not -w.ndim <= ax < w.ndim:
        raise AxisError(ax, w.ndim)
    ax %= w.ndim
    mean, var, gamma, beta, eps = _batchnorm_parts(bn)
    C = mean.shape[0]
    if w.shape[ax] != C:
        raise ValueError(f"weight has {w.shape[ax]} output channels along axis {ax}, "
                         f"bn has {C}")
    b = np.zeros(C) if bias is None else _vector(bias, "bias", C)
    dtype = w.dtype if np.issubdtype(w.dtype, np.floating) else np.dtype(np.float64)
    s = (1.0 if gamma is None else gamma) / np.sqrt(var + eps)
    b2 = (b - mean) * s
    if beta is not None:
        b2 += beta
    shape = [1] * w.ndim
    shape[ax] = C
    w2 = w.astype(np.float64) * s.reshape(shape)
    return w2.astype(dtype), b2.astype(dtype)
