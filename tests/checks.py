"""How close cbn must be to the float64 oracle: every tolerance of the suite.

tests/oracle.py computes the reference values; this module alone says how far
a cbn result may be from them, for the tests and for the fuzz harness
(tools/fuzz.py); tests compare with the oracle through these helpers. The
bounds are tighter than the project's accuracy contract (variance to 1e-6
relative, mean to 1e-6 standard deviations, y to 1e-5, dx to 1e-4): they
hold what the kernels reach, so that a change that loses accuracy fails
here long before it breaks the contract.

The float32 contract
--------------------
``CONTRACT`` is the contract itself, for float32 input against the float64
result on the same float32 values: the bound any method must meet (float32
block sums, shifts, compensation), on adversarial data
(tests/test_accuracy.py). ``assert_stats_within_contract``,
``assert_y_within_contract`` and ``assert_grads_within_contract`` apply it:

* mean: ``|mean - mean_ref| <= 1e-6 * std_ref``; variance:
  ``|var - var_ref| <= 1e-6 * var_ref``;
* y: ``|y - y_ref| <= 1e-5 * max(1, |y_ref|)`` -- 1e-5 absolute for an
  output of order one; a float32 y of 200 (an outlier) is itself only
  rounded to 7.6e-6, so large outputs are held to 1e-5 relative;
* dx: per feature, ``max |dx - dx_ref| <= 1e-4 * max |dx_ref|``; dgamma and
  dbeta: ``|d - d_ref| <= 1e-4 * sum |term|`` over the feature's batch
  (``|dy * xhat|`` and ``|dy|``), the size of what is summed, since an exact
  sum that cancels to near 0 has no relative accuracy to keep.

Ordinary data (unit scale, offsets of up to a few thousand standard deviations)
-------------------------------------------------------------------------------
* ``TOLERANCE[dtype]`` = (rtol, atol) of an output of order one (y, dx):
  float64 close to round-off, float32 a few ulps of the output's rounding,
  float16 one float16 rounding step. ``assert_close`` applies it (``scale``
  multiplies atol for outputs whose natural size is not one, e.g. sums), and
  ``assert_backward_close`` applies it to (dx, dgamma, dbeta), scaled by the
  size of the terms each is computed from. ``ROUNDING_TOLERANCE`` and
  ``assert_rounding_close`` are the tighter bound of tests that claim a
  result to a few units of rounding of its dtype.
* ``assert_float32_dx_close``: a float32 dx whose exact value may be beyond
  float32 (+-inf exactly there), to float32's tolerance of its largest value.
* ``FINITE_DIFFERENCE_TOLERANCE``: float64 gradients against central
  differences (``assert_matches_finite_differences``).
* ``STATS_RTOL`` = relative bounds of the batch mean and variance, which are
  sums in double: ``assert_stats_close`` applies them. ``EXACT_STATS_RTOL`` is
  what a feature reaches when its chunks are redone with two passes, or for
  plain float64 data through the C and Cython entry points
  (``assert_stats_close(..., exact=True)``).

Particular data and paths
-------------------------
Bounds of single tests, each with the reason for its numbers beside it.
``assert_within(actual, expected, tolerance)`` applies a table of (rtol,
atol) per dtype, as ``assert_close`` applies ``TOLERANCE``:

* ``FOLD_TOLERANCE``: a layer with a batch norm folded into its weights
  (``cbn.fold_batchnorm``) against the layer, then the batch norm;
* ``SPREAD_TOLERANCE``: the backward pass with eps = 0 over spreads from
  1e-30 to 1e35 (float32) and 1e-150 to 1e150 (float64);
* ``REDONE_Y_TOLERANCE``: y of rows layouts whose columns are redone with
  two passes;
* ``LARGE_Y_TOLERANCE``, ``LARGE_DGAMMA_TOLERANCE``,
  ``CANCELLED_DX_TOLERANCE``: outputs of 16 MiB and more (prefetching,
  streaming stores) against float64 formulas with numpy's mean and var.

``assert_stats_close(..., bounds=...)`` applies a "mean" and "var" table of
an rtol or (rtol, atol) each: ``SUBNORMAL_STATS_TOLERANCE`` (subnormal
data), ``REDONE_STATS_TOLERANCE`` (the two-pass redo of rows layouts),
``LARGE_STATS_TOLERANCE`` (the prefetching rows loops),
``HUGE_FEW_FEATURES_STATS_TOLERANCE`` and
``HUGE_MANY_FEATURES_STATS_TOLERANCE`` (more than 2**31 elements).

Arbitrary data (the property tests and the fuzz harness)
--------------------------------------------------------
Inputs of any scale and offset, where a fixed tolerance would be either too
loose for ordinary data or fail on extreme data for reasons that are not
errors.

An element is compared with ``|got - ref| <= u*(1 + |ref|) + w*r``, where

* ``u`` is the result dtype's tolerance (``TOLERANCE``' rtol: 1e-10 float64,
  1e-5 float32, 1e-3 float16), the rounding of the kernels' arithmetic in
  the data type;
* ``r = |gamma|*(1 + |mean|/sqrt(var + eps) + 16*2**-1074/(w*(var + eps)))``
  per feature, and
  ``w = 2**-46`` (about 64 units of float64 rounding). The mean itself is
  only known to float64 precision, to ``2**-53*|mean|`` at best, and every
  implementation, the oracle's ``x.mean()`` included, is further off by the
  sum's rounding; either moves y by that over the standard deviation. For
  data whose mean is 1e6 standard deviations from zero that is about 1e-9:
  a limit of float64, not an error of the kernels. The last term of ``r``,
  ``16*2**-1074/(w*(var + eps))``, is the same kind of limit: a variance
  below 2.2e-308 (float64 data of standard deviation below 1e-154, with
  eps = 0) is subnormal, known only to 2**-1074 absolutely.

The statistics are compared the same way: the mean to ``w*(|mean| + std)``
(a sum's rounding is relative to the values summed), the variance to a
relative 1e-9 plus the square of the mean's allowance. Where eps is 0 and a
feature's variance is exactly 0, y is 0/0 = NaN (docs/math.rst); the oracle,
whose own mean may be an ulp off, need not agree there, so those elements
are checked to be NaN and left out of the comparison.
"""
import numpy as np

from oracle import batch_axes, normalize_ref

#: (rtol, atol) for comparing a cbn result of a given dtype with the float64
#: oracle, for outputs of order one.  float64 is close to round-off; float32
#: allows a few ulps of rounding the output; float16 allows one float16
#: rounding step (half an ulp is at most 2**-11 relative) plus float32 noise.
TOLERANCE = {
    np.dtype(np.float64): (1e-10, 1e-12),
    np.dtype(np.float32): (1e-5, 1e-5),
    np.dtype(np.float16): (1e-3, 1e-3),
}

#: (rtol, atol) where a test claims more than TOLERANCE: the oracle's value
#: to a few units of rounding in the data type (features whose chunks are
#: redone with two passes, results of ordinary data at every SIMD level).
ROUNDING_TOLERANCE = {
    np.dtype(np.float64): (1e-12, 1e-12),
    np.dtype(np.float32): (3e-7, 2e-6),
}

#: Relative bounds of the batch statistics of ordinary data against the
#: oracle's, whatever the data's dtype (they are float64, summed in double).
STATS_RTOL = {"mean": 1e-12, "var": 1e-10}
#: ... where the sums are exact to a few units of double rounding: chunks
#: redone with two passes, float64 data through the C and Cython entry points.
EXACT_STATS_RTOL = {"mean": 1e-13, "var": 1e-12}

#: Subnormal data (float64 1e-310, float32 1e-42): ``STATS_RTOL`` plus an atol
#: of 1e-320 (about 2000 units of 2**-1074), as float64 squares of 1e-310
#: underflow (the variance is 0) and such a mean is a multiple of 2**-1074.
SUBNORMAL_STATS_TOLERANCE = {"mean": (STATS_RTOL["mean"], 1e-320),
                             "var": (STATS_RTOL["var"], 1e-320)}
#: Rows layouts whose columns are redone with two passes after a level shift
#: of 1e5 (test_simd): the mean relative to two-pass accuracy, with an atol
#: for columns whose mean is near 0, the variance to ``EXACT_STATS_RTOL``.
REDONE_STATS_TOLERANCE = {"mean": (1e-13, 1e-13), "var": EXACT_STATS_RTOL["var"]}
#: ... and their y: float32 to 2e-6 absolute (a few roundings of an output of
#: size up to 4, with no relative part), float64 to rounding.
REDONE_Y_TOLERANCE = {np.dtype(np.float32): (0.0, 2e-6),
                      np.dtype(np.float64): ROUNDING_TOLERANCE[np.dtype(np.float64)]}
#: (rtol, atol) of the backward pass with eps = 0 over extreme spreads
#: (float32 std 1e-30..1e35, float64 1e-150..1e150), dx in units of its
#: largest value, dgamma and dbeta with atol times m: float32 to its
#: ``TOLERANCE``, float64 (in double whatever the spread) to rounding.
SPREAD_TOLERANCE = {np.dtype(np.float32): TOLERANCE[np.dtype(np.float32)],
                    np.dtype(np.float64): ROUNDING_TOLERANCE[np.dtype(np.float64)]}
#: Outputs of 16 MiB and more (test_simd: prefetching rows loops, streaming
#: stores) against float64 formulas that use numpy's mean and var; numpy's
#: pairwise mean of a column at 1e3 differs from the kernels' by ~1e-13.
#: The statistics: that mean to 1e-12 relative, or absolute near 0.
LARGE_STATS_TOLERANCE = {"mean": (1e-12, 1e-12), "var": STATS_RTOL["var"]}
#: y: float32 to rounding; float64 y moves by ~2e-12 with that mean (atol).
LARGE_Y_TOLERANCE = {np.dtype(np.float32): ROUNDING_TOLERANCE[np.dtype(np.float32)],
                     np.dtype(np.float64): (1e-7, 1e-12)}
#: dgamma, relative: float32 to rounding, float64 ~5e-12 off with that mean.
LARGE_DGAMMA_TOLERANCE = {
    np.dtype(np.float32): (ROUNDING_TOLERANCE[np.dtype(np.float32)][0], 0.0),
    np.dtype(np.float64): (TOLERANCE[np.dtype(np.float64)][0], 0.0),
}
#: float32 dx of dy = x + 1, 0 up to the rounding of terms of size |dy| <= 56.
CANCELLED_DX_TOLERANCE = {np.dtype(np.float32): (1e-7, 2e-5)}
#: The >2**31-element test of test_edges (CBN_TEST_HUGE=1, 14 GiB; not run by
#: the ordinary suite): its bounds as written and run, named, not tightened
#: unverified. Few features (4.3e8 float32 values each, summed in double) and
#: many (2557 values per column, of means near 3).
HUGE_FEW_FEATURES_STATS_TOLERANCE = {"mean": 1e-11, "var": 1e-11}
HUGE_MANY_FEATURES_STATS_TOLERANCE = {"mean": (1e-9, 1e-12), "var": 1e-9}

#: A layer with batch-norm-folded weights against the layer, then the batch
#: norm in eval mode (test_fold): they differ by the rounding of the folded
#: weights and of sums taken in another order, so float64 to rounding and
#: float32 to its ``TOLERANCE``, atol times the size of the summed terms.
FOLD_TOLERANCE = {np.dtype(np.float64): ROUNDING_TOLERANCE[np.dtype(np.float64)],
                  np.dtype(np.float32): TOLERANCE[np.dtype(np.float32)]}

#: (rtol, atol) of an analytic float64 gradient against central differences
#: (oracle.central_difference, h = 1e-6): they are good to about 1e-9 on
#: unit-scale data, while a wrong term in a formula is off by O(1).
FINITE_DIFFERENCE_TOLERANCE = (1e-6, 1e-7)

#: The offset allowance of arbitrary data (the module docstring): about 64
#: units of float64 rounding.
W = 2.0**-46


def assert_within(actual, expected, tolerance, dtype=None, scale=1.0, err_msg=""):
    """Assert ``actual`` matches the float64 ``expected`` to ``tolerance[dtype]``.

    ``tolerance`` maps a dtype to (rtol, atol), as ``TOLERANCE`` does;
    ``dtype`` defaults to ``actual.dtype``; ``scale`` multiplies the absolute
    tolerance for outputs whose natural magnitude is not one (e.g. sums;
    ``scale=0`` leaves the bound relative alone).
    """
    actual = np.asarray(actual)
    rtol, atol = tolerance[np.dtype(dtype if dtype is not None else actual.dtype)]
    np.testing.assert_allclose(actual.astype(np.float64), expected,
                               rtol=rtol, atol=atol * scale, err_msg=err_msg)


def assert_close(actual, expected, dtype=None, scale=1.0, err_msg=""):
    """Assert ``actual`` matches the float64 ``expected`` to ``dtype``'s tolerance.

    ``dtype`` defaults to ``actual.dtype``; ``scale`` multiplies the absolute
    tolerance for outputs whose natural magnitude is not one (e.g. sums).
    """
    assert_within(actual, expected, TOLERANCE, dtype, scale, err_msg)


def assert_rounding_close(actual, expected, dtype=None, scale=1.0, err_msg=""):
    """``assert_close`` to ``ROUNDING_TOLERANCE`` instead of ``TOLERANCE``."""
    assert_within(actual, expected, ROUNDING_TOLERANCE, dtype, scale, err_msg)


def assert_backward_close(result, expected, dy, x, mean, var, axis, gamma=None,
                          eps=1e-5, batch_stats=True):
    """Compare ``result`` = (dx, dgamma, dbeta) with the oracle's ``expected``.

    The tolerance is that of x's dtype, with absolute errors scaled by the
    magnitude of the terms each output is computed from, not by the result,
    which may cancel to near zero (with m == 1, dx is exactly 0 but its terms
    are of size gamma * invstd).
    """
    dx, dgamma, dbeta = result
    dx_ref, dgamma_ref, dbeta_ref = expected
    b = batch_axes(x.ndim, axis)
    xhat = normalize_ref(x, axis=axis, eps=eps, mean=mean, var=var)[0]
    dy64 = dy.astype(np.float64)
    g_invstd = 1.0 / np.sqrt(np.expand_dims(var, b) + eps)
    if gamma is not None:
        g_invstd = g_invstd * np.abs(np.expand_dims(gamma, b) if np.ndim(gamma) else gamma)
    dx_terms = np.abs(dy64)
    if batch_stats:
        dx_terms = dx_terms + np.abs(dy64).mean(axis=b, keepdims=True) + np.abs(
            xhat) * np.abs(dy64 * xhat).mean(axis=b, keepdims=True)
    assert_close(dx, dx_ref, dtype=x.dtype,
                 scale=max(1.0, (g_invstd * dx_terms).max(initial=0)))
    assert_close(dgamma, dgamma_ref, dtype=x.dtype,
                 scale=max(1.0, np.abs(dy64 * xhat).sum(axis=b).max(initial=0)))
    assert_close(dbeta, dbeta_ref, dtype=x.dtype,
                 scale=max(1.0, np.abs(dy64).sum(axis=b).max(initial=0)))


def assert_stats_close(mean, var, mean_ref, var_ref, exact=False, bounds=None):
    """The batch statistics against the oracle's, to ``STATS_RTOL`` (or
    ``EXACT_STATS_RTOL``, or ``bounds``: "mean" and "var" to an rtol or an
    (rtol, atol)); NaN and Inf must be in the same places. ``mean`` or
    ``var`` may be None: that statistic is not compared."""
    if bounds is None:
        bounds = EXACT_STATS_RTOL if exact else STATS_RTOL
    for what, got, ref in (("mean", mean, mean_ref), ("var", var, var_ref)):
        if got is not None:
            rtol, atol = bounds[what] if isinstance(bounds[what], tuple) else (bounds[what], 0)
            np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, err_msg=what)


#: The float32 accuracy contract (see the module docstring); never loosen it.
CONTRACT = {"mean": 1e-6, "var": 1e-6, "y": 1e-5, "dx": 1e-4, "dgamma": 1e-4,
            "dbeta": 1e-4}


def _assert_at_most(error, bound, what):
    bad = ~(error <= bound)     # NaN is a failure too
    if bad.any():
        # the worst failure, NaN counting as the worst of all
        ratio = np.nan_to_num(error / np.maximum(bound, 1e-300), nan=np.inf)
        worst = np.argmax(np.where(bad, ratio, -1.0))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} beyond the contract; worst "
            f"error {error.flat[worst]:.3g} against a bound of {bound.flat[worst]:.3g}")


def assert_stats_within_contract(mean, var, mean_ref, var_ref):
    """Batch mean to 1e-6 standard deviations, variance to 1e-6 relative."""
    var_ref = np.asarray(var_ref, np.float64)
    _assert_at_most(np.abs(np.asarray(mean, np.float64) - mean_ref),
                    CONTRACT["mean"] * np.sqrt(var_ref), "mean")
    _assert_at_most(np.abs(np.asarray(var, np.float64) - var_ref),
                    CONTRACT["var"] * var_ref, "var")


def assert_y_within_contract(y, y_ref):
    """y to 1e-5, relative for outputs beyond 1 in size."""
    y_ref = np.asarray(y_ref, np.float64)
    _assert_at_most(np.abs(np.asarray(y, np.float64) - y_ref),
                    CONTRACT["y"] * np.maximum(1.0, np.abs(y_ref)), "y")


def assert_grads_within_contract(grads, refs, dy, xhat, axis):
    """(dx, dgamma, dbeta) against the oracle's, to the contract.

    ``xhat`` is the oracle's normalized x (float64), from which the size of
    dgamma's terms is taken.
    """
    dx, dgamma, dbeta = (np.asarray(g, np.float64) for g in grads)
    dx_ref, dgamma_ref, dbeta_ref = refs
    b = batch_axes(dx.ndim, axis)
    scale = np.max(np.abs(dx_ref), axis=b, keepdims=True)
    _assert_at_most(np.abs(dx - dx_ref), CONTRACT["dx"] * np.broadcast_to(scale, dx.shape),
                    "dx")
    dy = np.asarray(dy, np.float64)
    for what, got, ref, terms in (("dgamma", dgamma, dgamma_ref, np.abs(dy * xhat)),
                                  ("dbeta", dbeta, dbeta_ref, np.abs(dy))):
        size = np.reshape(terms.sum(axis=b), np.shape(ref))
        _assert_at_most(np.abs(got - ref), CONTRACT[what] * size, what)


def assert_matches_finite_differences(grad, numerical, err_msg=""):
    """A float64 gradient against ``oracle.central_difference``'s."""
    rtol, atol = FINITE_DIFFERENCE_TOLERANCE
    np.testing.assert_allclose(grad, numerical, rtol=rtol, atol=atol, err_msg=err_msg)


def assert_float32_dx_close(dx, dx_ref):
    """A float32 dx against the oracle's where the oracle's values may lie
    beyond float32: +-inf exactly where they do, and elsewhere finite and
    within float32's ``TOLERANCE`` in units of the largest value that fits."""
    rtol = TOLERANCE[np.dtype(np.float32)][0]
    top_f32 = float(np.finfo(np.float32).max)
    dx = np.asarray(dx, np.float64)
    over = np.abs(dx_ref) > top_f32 * (1 + 1e-6)
    assert (dx[over] == np.sign(dx_ref[over]) * np.inf).all()
    fits = np.abs(dx_ref) < top_f32 * (1 - 1e-6)
    assert np.isfinite(dx[fits]).all()
    top = np.abs(dx_ref[fits]).max(initial=1e-300)
    np.testing.assert_allclose(dx[fits] / top, dx_ref[fits] / top, rtol=rtol, atol=rtol)


def expand(v, ndim, axis):
    """A per-feature array (or scalar, or None) broadcastable against x."""
    if v is None:
        return np.float64(1.0)
    v = np.asarray(v, np.float64)
    return v if v.ndim == 0 else np.expand_dims(v, batch_axes(ndim, axis))


def offset_ratio(mean, var, eps, gamma, ndim, axis):
    """r of the module docstring, broadcastable against x."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.asarray(var, np.float64) + eps
        r = 1.0 + np.abs(mean) / np.sqrt(v) + 16 * 2.0**-1074 / W / v
    r = np.where(np.isfinite(r), r, 0.0)
    return np.abs(expand(gamma, ndim, axis)) * expand(r, ndim, axis)


def assert_matches(got, ref, u, slack=0.0, what="y", dtype=None):
    """|got - ref| <= u*(1 + |ref|) + slack, and NaN/Inf in the same places;
    got may be +-inf where ref's bound reaches ``dtype``'s largest value."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape, what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=what)
    fin = np.isfinite(ref)
    np.testing.assert_array_equal(got[~fin & ~np.isnan(ref)], ref[~fin & ~np.isnan(ref)],
                                  err_msg=what)
    err = np.abs(got[fin] - ref[fin])
    bound = (u * (1.0 + np.abs(ref)) + np.broadcast_to(slack, ref.shape))[fin]
    if dtype is not None:  # past the result dtype's range the right answer is +-inf
        top = float(np.finfo(dtype).max)
        over = (np.abs(ref[fin]) + bound >= top) & np.isinf(got[fin])
        err[over] = 0.0
    assert (err <= bound).all(), (
        f"{what}: max error {err.max(initial=0):.3g}, bound there "
        f"{bound[np.argmax(err - bound)] if err.size else 0:.3g}")


def check_stats(mean, var, mean_ref, var_ref):
    """The batch statistics: the sums' rounding is relative to the values
    summed, |mean| + std, not to the mean, which may be near zero."""
    size = W * (np.abs(mean_ref) + np.sqrt(var_ref)) + 1e-300
    assert_matches(mean, mean_ref, 0.0, size, "mean")
    assert_matches(var, var_ref, 0.0, 1e-9 * var_ref + size * size, "var")


def zero_var_with_eps_zero(var, eps, ndim, axis, shape):
    """Elements of features whose variance is 0 while eps is 0: their y is
    0/0 = NaN by the documented rule; the oracle, whose mean may be off by
    an ulp, need not agree, so they are checked on their own."""
    if eps != 0.0:
        return np.zeros(shape, bool)
    return np.broadcast_to(np.expand_dims(np.asarray(var) == 0, batch_axes(ndim, axis)),
                           shape)


def check_normalize(x64, y, mean, var, gamma, beta, axis, eps):
    """normalize_batch's training result (y, mean, var) for the float64
    values x64 against the oracle: the statistics, the documented NaN of a
    zero-variance feature with eps=0, and y."""
    rdt = np.asarray(y).dtype.newbyteorder("=")
    with np.errstate(all="ignore"):
        y_ref, mean_ref, var_ref = normalize_ref(x64, gamma, beta, axis=axis, eps=eps)
    check_stats(mean, var, mean_ref, var_ref)
    y64 = np.asarray(y, np.float64)
    nan_ok = zero_var_with_eps_zero(var, eps, x64.ndim, axis, x64.shape)
    assert np.isnan(y64[nan_ok]).all(), "eps=0, zero variance: y must be NaN"
    r = offset_ratio(mean_ref, var_ref, eps, gamma, x64.ndim, axis)
    keep = ~nan_ok
    assert_matches(y64[keep], y_ref[keep], TOLERANCE[rdt][0],
                   np.broadcast_to(W * r, x64.shape)[keep], "y", rdt)


def check_backward(dx, dgamma, dbeta, dx_ref, dgamma_ref, dbeta_ref, dy, x64, mean, var,
                   gamma, axis, eps, batch_stats, u):
    """The gradients against the oracle's, each bounded by the size of the terms
    it is summed from (a sum may cancel to far below them) and by the offset
    allowance of the module docstring."""
    ndim = x64.ndim
    b = batch_axes(ndim, axis)
    dy64 = np.asarray(dy, np.float64)
    invstd = 1.0 / np.sqrt(expand(var, ndim, axis) + eps)
    xhat = np.abs((x64 - expand(mean, ndim, axis)) * invstd)
    r = offset_ratio(mean, var, eps, None, ndim, axis)   # ~ |mean|/std
    ady = np.abs(dy64)
    dbeta_terms = ady.sum(axis=b)
    dgamma_terms = (ady * (xhat + W * r)).sum(axis=b)
    # The sums are in double; the result is then rounded to its dtype.
    rdt = np.asarray(dx).dtype
    assert_matches(dbeta, dbeta_ref, u, u * dbeta_terms, "dbeta", rdt)
    assert_matches(dgamma, dgamma_ref, u, u * dgamma_terms + W * (ady * r).sum(axis=b),
                   "dgamma", rdt)
    g_invstd = np.abs(expand(gamma, ndim, axis)) * invstd
    m = max(1, dy64.size // max(1, np.size(dbeta)))
    terms = ady
    if batch_stats:
        terms = ady + expand(dbeta_terms, ndim, axis) / m + (xhat + W * r) * expand(
            dgamma_terms, ndim, axis) / m
    slack = np.broadcast_to(g_invstd * (u * terms + W * r * (
        ady + (expand(dgamma_terms, ndim, axis) / m if batch_stats else 0))), x64.shape)
    assert_matches(np.asarray(dx), dx_ref, u, slack, "dx", rdt)
