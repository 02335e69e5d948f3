"""Slow, obviously-correct float64 reference implementations (the oracle).

Everything here is plain NumPy in float64, written straight from the textbook
formulas, with no attention to speed. The tests compare cbn against these
functions; nothing here may call cbn. How close cbn must come to them (every
tolerance of the suite) is tests/checks.py's business, not this module's.
"""
import numpy as np


def batch_axes(ndim, axis):
    """The tuple of non-negative batch axes for ``axis`` (int, tuple or None)."""
    if axis is None:
        return tuple(range(ndim))
    if np.ndim(axis) == 0:
        axis = (axis,)
    return tuple(sorted(a % ndim for a in axis))


def feature_shape(shape, axis):
    """The feature shape F: the axes of ``shape`` that are not batch axes."""
    b = batch_axes(len(shape), axis)
    return tuple(s for i, s in enumerate(shape) if i not in b)


def _expand(v, shape, axis):
    """Broadcast a per-feature array of shape F (or a scalar) against x."""
    v = np.asarray(v, dtype=np.float64)
    b = batch_axes(len(shape), axis)
    if v.ndim == 0:
        return v
    return np.expand_dims(v, b)


def normalize_ref(x, gamma=None, beta=None, axis=0, eps=1e-5, mean=None, var=None):
    """Return ``(y, mean, var)`` in float64; mean and var have shape F."""
    x = np.asarray(x, dtype=np.float64)
    b = batch_axes(x.ndim, axis)
    if mean is None:
        mean_k = x.mean(axis=b, keepdims=True)
        # One refinement step: the sum's rounding can leave the mean a few
        # ulps off (n copies of v need not average to v); what is left of it
        # in x - mean is recovered, so the mean is right to its last ulp.
        mean_k = mean_k + (x - mean_k).mean(axis=b, keepdims=True)
        var_k = ((x - mean_k) ** 2).mean(axis=b, keepdims=True)
    else:
        mean_k = _expand(mean, x.shape, axis)
        var_k = _expand(var, x.shape, axis)
    y = (x - mean_k) / np.sqrt(var_k + eps)
    if gamma is not None:
        y = y * _expand(gamma, x.shape, axis)
    if beta is not None:
        y = y + _expand(beta, x.shape, axis)
    fshape = feature_shape(x.shape, axis)
    return y, np.reshape(mean_k, fshape), np.reshape(var_k, fshape)


def backward_ref(dy, x, mean, var, gamma=None, axis=0, eps=1e-5, batch_stats=True):
    """Return ``(dx, dgamma, dbeta)`` in float64 from the textbook formulas."""
    dy = np.asarray(dy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    b = batch_axes(x.ndim, axis)
    m = int(np.prod([x.shape[i] for i in b]))
    mean_k = _expand(mean, x.shape, axis)
    invstd = 1.0 / np.sqrt(_expand(var, x.shape, axis) + eps)
    g = 1.0 if gamma is None else _expand(gamma, x.shape, axis)
    xhat = (x - mean_k) * invstd
    fshape = feature_shape(x.shape, axis)
    dbeta = dy.sum(axis=b, keepdims=True)
    dgamma = (dy * xhat).sum(axis=b, keepdims=True)
    if batch_stats:
        dx = g * invstd / m * (m * dy - dbeta - xhat * dgamma)
    else:
        dx = dy * g * invstd
    return dx, np.reshape(dgamma, fshape), np.reshape(dbeta, fshape)


def central_difference(f, a, h=1e-6):
    """d f() / d a by central differences, perturbing ``a`` in place one
    entry at a time (and restoring it): the reference every analytic
    gradient is checked against, with no formula in common with it."""
    grad = np.zeros(a.shape)
    for i in np.ndindex(a.shape):
        keep = a[i]
        a[i] = keep + h
        up = f()
        a[i] = keep - h
        down = f()
        a[i] = keep
        grad[i] = (up - down) / (2 * h)
    return grad


class BatchNormRef:
    """A float64 reference of the layer semantics (running statistics included)."""

    def __init__(self, num_features, feature_axis=1, eps=1e-5, momentum=0.1,
                 affine=True, track_running_stats=True):
        self.C = num_features
        self.feature_axis = feature_axis
        self.eps = eps
        self.momentum = momentum
        self.gamma = np.ones(num_features) if affine else None
        self.beta = np.zeros(num_features) if affine else None
        self.track = track_running_stats
        self.running_mean = np.zeros(num_features) if track_running_stats else None
        self.running_var = np.ones(num_features) if track_running_stats else None
        self.num_batches_tracked = 0
        self.training = True

    def _axes(self, ndim):
        fa = self.feature_axis % ndim
        return tuple(i for i in range(ndim) if i != fa)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        axes = self._axes(x.ndim)
        use_batch = self.training or not self.track
        if use_batch:
            y, mean, var = normalize_ref(x, self.gamma, self.beta, axes, self.eps)
            if self.training and self.track:
                m = x.size // self.C
                self.num_batches_tracked += 1
                f = (1.0 / self.num_batches_tracked if self.momentum is None
                     else self.momentum)
                self.running_mean = (1 - f) * self.running_mean + f * mean
                self.running_var = (1 - f) * self.running_var + f * var * m / (m - 1)
        else:
            mean, var = self.running_mean, self.running_var
            y, _, _ = normalize_ref(x, self.gamma, self.beta, axes, self.eps,
                                    mean=mean, var=var)
        self._saved = (x, mean, var, axes, use_batch)
        return y

    def backward(self, dy):
        x, mean, var, axes, use_batch = self._saved
        dx, dg, db = backward_ref(dy, x, mean, var, self.gamma, axes, self.eps,
                                  batch_stats=use_batch)
        self.dgamma, self.dbeta = dg, db
        return dx


# Test data shared by the function tests ------------------------------------

def random_array(rng, shape, dtype):
    """Unit-scale test data of ``dtype``: normal floats, small integers, coin flips."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind == "u":
        return rng.integers(0, 200, shape).astype(dtype)
    if dtype.kind == "i":
        return rng.integers(-100, 100, shape).astype(dtype)
    return (1.5 * rng.standard_normal(shape) + 0.5).astype(dtype)


def result_dtype(dtype):
    """The dtype cbn returns for input of ``dtype``: floats keep theirs, the rest float64."""
    dtype = np.dtype(dtype)
    if dtype in (np.float16, np.float32, np.float64):
        return dtype
    return np.dtype(np.float64)


#: (shape, axis) pairs the function tests share: every axis form over 1-D..5-D,
#: the named layouts, and batch axes that are not adjacent to each other.
LAYOUT_CASES = [
    ((7,), 0),
    ((7,), -1),
    ((7,), None),
    ((6, 5), 0),                      # N x C
    ((6, 5), -2),
    ((6, 5), 1),                      # features along axis 0
    ((6, 5), None),
    ((4, 3, 5), (0, 2)),              # N x C x L, as BatchNorm1d
    ((4, 3, 5), 0),                   # F = (3, 5)
    ((4, 3, 5), (0, 1)),
    ((4, 3, 5), (-1, 0)),
    ((3, 4, 5, 6), (0, 2, 3)),        # NCHW
    ((3, 5, 6, 4), (0, 1, 2)),        # NHWC
    ((3, 4, 5, 6), (1, 3)),           # batch axes interleaved with features
    ((3, 4, 5, 6), None),
    ((2, 3, 4, 3, 5), (0, 2, 3, 4)),  # NCDHW
    ((2, 3, 4, 3, 5), (1, 3)),        # F = (2, 4, 5)
    ((2, 3, 4, 3, 5), (-5, -1)),
]
LAYOUT_IDS = [f"{shape}-axis{axis}" for shape, axis in LAYOUT_CASES]


def backward_omit_ref(dy, x, mean, var, gamma=None, axis=0, eps=1e-5, batch_stats=True):
    """``backward_ref`` for a forward that left NaN out (nan_policy 'omit'):
    the elements where x is NaN are not in the sums, get dx = 0, and each
    feature's batch size is its count of the others. Returns
    ``(dx, dgamma, dbeta)`` in float64."""
    x = np.asarray(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    b = batch_axes(x.ndim, axis)
    keep = ~np.isnan(x)
    n = keep.sum(axis=b, keepdims=True)
    invstd = 1.0 / np.sqrt(_expand(var, x.shape, axis) + eps)
    xhat = np.where(keep, (x - _expand(mean, x.shape, axis)) * invstd, 0.0)
    g = np.where(keep, dy, 0.0)
    dbeta = g.sum(axis=b, keepdims=True)
    dgamma = (g * xhat).sum(axis=b, keepdims=True)
    scale = (1.0 if gamma is None else _expand(gamma, x.shape, axis)) * invstd
    with np.errstate(divide="ignore", invalid="ignore"):
        if batch_stats:
            dx = scale / n * (n * g - dbeta - xhat * dgamma)
        else:
            dx = scale * g
    fshape = feature_shape(x.shape, axis)
    return (np.where(keep, dx, 0.0), dgamma.reshape(fshape), dbeta.reshape(fshape))
