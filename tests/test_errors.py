"""Bad input to the array functions: the documented error, and nothing changed.

Every rejected call is made with snapshots of all the arrays it was given
(``x``, ``out``, ``gamma``, ``beta``, ``mean``, ``var``, ``dy``) and checks
them byte for byte afterwards, so a function that writes part of its result
before noticing the problem fails. ``out`` is pre-filled with a sentinel so
that any write shows. The last section checks that NaN and Inf in the data
are not errors: they poison only their own feature, and the rest matches the
oracle.
"""

import numpy as np
import pytest
from numpy.exceptions import AxisError

import cbn
from oracle import assert_close, backward_ref, feature_shape, normalize_ref


def assert_raises_unchanged(exc, func, *args, match=None, **kwargs):
    """Call ``func``, expect ``exc``, and check no ndarray argument was modified."""
    arrays = [a for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)]
    before = [a.copy() for a in arrays]
    with pytest.raises(exc, match=match):
        func(*args, **kwargs)
    for a, b in zip(arrays, before):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), "an argument was modified by a failed call"


def shape_pattern(shape):
    """A regex for ``shape`` written as a tuple, e.g. ``(4,)`` or ``(3, 5)``."""
    inner = r"\s*,\s*".join(str(s) for s in shape)
    return r"\(\s*" + inner + r"\s*,?\s*\)"


@pytest.fixture
def x(rng):
    return rng.standard_normal((6, 4))


@pytest.fixture
def out():
    return np.full((6, 4), 7.0)


# normalize_batch -------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    np.ones((6, 4), np.complex128),
    np.ones((6, 4), np.complex64),
    np.ones((6, 4), dtype=object),
    np.full((6, 4), "a"),
    np.full((6, 4), b"a"),
    [["a", "b"], ["c", "d"]],
], ids=["complex128", "complex64", "object", "str", "bytes", "list-of-str"])
def test_unsupported_x_dtype_raises_type_error(bad, out):
    assert_raises_unchanged(TypeError, cbn.normalize_batch, bad)
    assert_raises_unchanged(TypeError, cbn.normalize_batch, bad, out=out)


@pytest.mark.parametrize("which", ["gamma", "beta"])
@pytest.mark.parametrize("xshape, axis, bad_shape", [
    ((6, 4), 0, (3,)),
    ((6, 4), 0, (5,)),
    ((6, 4), 0, (1,)),        # broadcastable, but not F
    ((6, 4), 0, (1, 4)),
    ((6, 4), 0, (4, 1)),
    ((6, 4), 0, (6, 4)),
    ((4, 3, 5), 0, (5,)),     # F = (3, 5)
    ((4, 3, 5), 0, (15,)),
    ((4, 3, 5), 0, (5, 3)),
    ((2, 6, 3, 3), (0, 2, 3), (2, 6)),
])
def test_gamma_or_beta_of_the_wrong_shape_raises_value_error_naming_f(rng, which, xshape,
                                                                      axis, bad_shape):
    x = rng.standard_normal(xshape)
    F = feature_shape(xshape, axis)
    good = np.full(F, 0.5)
    bad = np.full(bad_shape, 0.5)
    gamma, beta = (bad, good) if which == "gamma" else (good, bad)
    out = np.full(xshape, 7.0)
    assert_raises_unchanged(ValueError, cbn.normalize_batch, x, gamma, beta, axis=axis,
                            out=out, match=shape_pattern(F))
    # In place: x must survive too.
    assert_raises_unchanged(ValueError, cbn.normalize_batch, x, gamma, beta, axis=axis,
                            out=x)


@pytest.mark.parametrize("eps", [-1e-5, -1.0, -np.inf, np.nan])
def test_negative_or_nan_eps_raises_value_error(x, out, eps):
    assert_raises_unchanged(ValueError, cbn.normalize_batch, x, eps=eps, out=out)
    assert_raises_unchanged(ValueError, cbn.normalize_batch, x, eps=eps,
                            mean=np.zeros(4), var=np.ones(4), out=x)


@pytest.mark.parametrize("given", ["mean", "var"])
def test_mean_without_var_or_var_without_mean_raises_value_error(x, out, given):
    stats = {given: np.full(4, 0.5)}
    assert_raises_unchanged(ValueError, cbn.normalize_batch, x, out=out, **stats)
    assert_raises_unchanged(ValueError, cbn.normalize_batch, x, out=x, **stats)


@pytest.mark.parametrize("which", ["mean", "var"])
@pytest.mark.parametrize("bad_shape", [(3,), (5,), (1, 4), (6, 4)])
def test_given_statistics_of_the_wrong_shape_raise_value_error(x, out, which, bad_shape):
    stats = {"mean": np.zeros(4), "var": np.ones(4)}
    stats[which] = np.full(bad_shape, 0.5)
    assert_raises_unchanged(ValueError, cbn.normalize_batch, x, out=out, **stats)


@pytest.mark.parametrize("bad_shape", [(6, 5), (4, 6), (24,), (1, 6, 4), (6, 4, 1)])
def test_out_of_the_wrong_shape_raises_value_error(x, bad_shape):
    out = np.full(bad_shape, 7.0)
    assert_raises_unchanged(ValueError, cbn.normalize_batch, x, out=out)


@pytest.mark.parametrize("x_dtype, out_dtype", [
    (np.float64, np.float32),
    (np.float32, np.float64),
    (np.float32, np.float16),
    (np.float16, np.float32),
    (np.int32, np.int32),      # the result of integer input is float64
    (np.int64, np.float32),
    (np.bool_, np.bool_),
    (np.float64, np.complex128),
])
def test_out_of_the_wrong_dtype_raises_type_error(rng, x_dtype, out_dtype):
    x = (10 * rng.standard_normal((6, 4))).astype(x_dtype)
    out = np.full((6, 4), 7, dtype=out_dtype)
    assert_raises_unchanged(TypeError, cbn.normalize_batch, x, out=out)


def test_in_place_on_integer_input_raises_type_error(rng):
    x = rng.integers(0, 10, (6, 4))
    assert_raises_unchanged(TypeError, cbn.normalize_batch, x, out=x)


def test_read_only_out_raises_value_error(x, out):
    out.flags.writeable = False
    assert_raises_unchanged(ValueError, cbn.normalize_batch, x, out=out)
    x.flags.writeable = False
    assert_raises_unchanged(ValueError, cbn.normalize_batch, x, out=x)


@pytest.mark.parametrize("axis", [2, -3, (0, 2), (0, 0), (0, -2), (1, 0, 1), (-1, 1)])
def test_bad_axis_raises_axis_error(x, out, axis):
    assert_raises_unchanged(AxisError, cbn.normalize_batch, x, axis=axis, out=out)


@pytest.mark.parametrize("shape, axis", [
    ((0, 4), 0),
    ((4, 0), 1),
    ((4, 0), None),
    ((2, 0, 3), (0, 1)),
    ((0, 3, 2, 2), (0, 2, 3)),
])
@pytest.mark.parametrize("return_stats", [False, True])
def test_empty_batch_in_training_raises_value_error(shape, axis, return_stats):
    x = np.zeros(shape)
    out = np.full(shape, 7.0)
    assert_raises_unchanged(ValueError, cbn.normalize_batch, x, axis=axis, out=out,
                            return_stats=return_stats)


@pytest.mark.parametrize("which", ["gamma", "beta", "mean", "var"])
@pytest.mark.parametrize("bad, exc", [
    (np.ones(4, np.complex128), TypeError),
    (np.array(["a", "b", "c", "d"]), TypeError),
    (np.ones(4, dtype=object), TypeError),
    ("abcd", TypeError),
], ids=["complex", "str-array", "object", "str"])
def test_per_feature_argument_of_the_wrong_type_raises_type_error(x, out, which, bad, exc):
    kwargs = {"mean": np.zeros(4), "var": np.ones(4)} if which in ("mean", "var") else {}
    kwargs[which] = bad
    assert_raises_unchanged(exc, cbn.normalize_batch, x, out=out, **kwargs)
    assert_raises_unchanged(exc, cbn.normalize_batch, x, out=x, **kwargs)


@pytest.mark.parametrize("axis", [1.0, "0", [0], np.array([0]), (0, 1.5), (None,)],
                         ids=["float", "str", "list", "array", "tuple-float", "tuple-none"])
def test_axis_of_the_wrong_type_raises_type_error(x, out, axis):
    assert_raises_unchanged(TypeError, cbn.normalize_batch, x, axis=axis, out=out)
    assert_raises_unchanged(TypeError, cbn.normalize_batch, x, axis=axis, out=x)


@pytest.mark.parametrize("axis", [0, -1, (0,)])
def test_axis_of_a_0d_array_raises_axis_error(axis):
    x = np.array(3.0)
    out = np.array(7.0)
    assert_raises_unchanged(AxisError, cbn.normalize_batch, x, axis=axis, out=out)


@pytest.mark.parametrize("eps, exc", [("abc", ValueError), (None, TypeError),
                                      ([1e-5], TypeError), (np.nan, ValueError)])
def test_eps_that_is_not_a_number_raises(x, out, eps, exc):
    assert_raises_unchanged(exc, cbn.normalize_batch, x, eps=eps, out=out)
    assert_raises_unchanged(exc, cbn.normalize_batch_backward, x, x.copy(), np.zeros(4),
                            np.ones(4), eps=eps)


@pytest.mark.parametrize("out", [[[7.0] * 4] * 6, ((7.0,) * 4,) * 6, 7.0],
                         ids=["list", "tuple", "float"])
def test_out_that_is_not_an_ndarray_raises_type_error(x, out):
    assert_raises_unchanged(TypeError, cbn.normalize_batch, x, out=out)


# normalize_batch_backward ---------------------------------------------------------

@pytest.fixture
def grads(rng):
    """A valid backward problem: dy, x (6, 4), mean, var, gamma of shape (4,)."""
    x = rng.standard_normal((6, 4))
    return dict(dy=rng.standard_normal((6, 4)), x=x, mean=x.mean(0), var=x.var(0),
                gamma=rng.uniform(0.5, 2, 4))


def backward_args(grads, **changes):
    """Positional arguments (dy, x, mean, var, gamma) with some replaced."""
    g = {**grads, **changes}
    return g["dy"], g["x"], g["mean"], g["var"], g["gamma"]


@pytest.mark.parametrize("batch_stats", [True, False])
@pytest.mark.parametrize("bad_shape", [(6, 5), (5, 4), (4, 6), (24,), (1, 6, 4)])
def test_backward_dy_of_the_wrong_shape_raises_value_error(grads, bad_shape, batch_stats):
    assert_raises_unchanged(ValueError, cbn.normalize_batch_backward,
                            *backward_args(grads, dy=np.ones(bad_shape)),
                            batch_stats=batch_stats)


@pytest.mark.parametrize("which", ["mean", "var"])
@pytest.mark.parametrize("bad_shape", [(3,), (5,), (1, 4), (4, 1)])
def test_backward_statistics_of_the_wrong_shape_raise_value_error(grads, which,
                                                                  bad_shape):
    assert_raises_unchanged(ValueError, cbn.normalize_batch_backward,
                            *backward_args(grads, **{which: np.full(bad_shape, 0.5)}))


@pytest.mark.parametrize("bad_shape", [(3,), (1,), (1, 4), (6, 4)])
def test_backward_gamma_of_the_wrong_shape_raises_value_error(grads, bad_shape):
    assert_raises_unchanged(ValueError, cbn.normalize_batch_backward,
                            *backward_args(grads, gamma=np.full(bad_shape, 0.5)),
                            match=shape_pattern((4,)))


@pytest.mark.parametrize("eps", [-1e-5, -np.inf, np.nan])
def test_backward_negative_or_nan_eps_raises_value_error(grads, eps):
    assert_raises_unchanged(ValueError, cbn.normalize_batch_backward,
                            *backward_args(grads), eps=eps)


@pytest.mark.parametrize("axis", [2, -3, (0, 0), (0, -2)])
def test_backward_bad_axis_raises_axis_error(grads, axis):
    assert_raises_unchanged(AxisError, cbn.normalize_batch_backward,
                            *backward_args(grads), axis=axis)


@pytest.mark.parametrize("which", ["x", "dy"])
@pytest.mark.parametrize("dtype", [np.complex128, object, str])
def test_backward_unsupported_dtype_raises_type_error(grads, which, dtype):
    assert_raises_unchanged(TypeError, cbn.normalize_batch_backward,
                            *backward_args(grads, **{which: np.ones((6, 4), dtype=dtype)}))


@pytest.mark.parametrize("bad_out, exc", [
    (np.full((6, 5), 7.0), ValueError),          # shape
    (np.full((4, 6), 7.0), ValueError),
    (np.full((6, 4), 7.0, np.float32), TypeError),  # dtype (x is float64)
    (np.full((6, 4), 7, np.int64), TypeError),
    ([[7.0] * 4] * 6, TypeError),                # not an ndarray
], ids=["shape", "transposed", "float32", "int", "list"])
@pytest.mark.parametrize("batch_stats", [True, False])
def test_backward_bad_out_raises_and_writes_nothing(grads, bad_out, exc, batch_stats):
    assert_raises_unchanged(exc, cbn.normalize_batch_backward, *backward_args(grads),
                            out=bad_out, batch_stats=batch_stats)


def test_backward_read_only_out_raises_value_error(grads):
    out = np.full((6, 4), 7.0)
    out.flags.writeable = False
    assert_raises_unchanged(ValueError, cbn.normalize_batch_backward, *backward_args(grads),
                            out=out)
    dy = grads["dy"].copy()
    dy.flags.writeable = False
    assert_raises_unchanged(ValueError, cbn.normalize_batch_backward,
                            *backward_args(grads, dy=dy), out=dy)


@pytest.mark.parametrize("missing", ["mean", "var"])
def test_backward_without_statistics_raises_type_error(grads, missing):
    assert_raises_unchanged(TypeError, cbn.normalize_batch_backward,
                            *backward_args(grads, **{missing: None}))


@pytest.mark.parametrize("which", ["mean", "var", "gamma"])
def test_backward_per_feature_argument_of_the_wrong_type_raises_type_error(grads, which):
    assert_raises_unchanged(TypeError, cbn.normalize_batch_backward,
                            *backward_args(grads, **{which: np.ones(4, np.complex128)}))


def test_backward_empty_batch_with_batch_statistics_raises_value_error():
    empty = np.zeros((0, 4))
    assert_raises_unchanged(ValueError, cbn.normalize_batch_backward, empty, empty.copy(),
                            np.zeros(4), np.ones(4), batch_stats=True)


# NaN and Inf propagate, feature by feature ----------------------------------------

POISONED_LAYOUTS = {
    # name: (shape, axis, index of the bad element, index of its feature)
    "n-by-c": ((8, 4), 0, (3, 1), (slice(None), 1)),
    "nchw": ((4, 3, 5, 5), (0, 2, 3), (2, 1, 4, 0), (slice(None), 1)),
    "nhwc": ((4, 5, 5, 3), (0, 1, 2), (2, 4, 0, 1), (Ellipsis, 1)),
}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("layout", list(POISONED_LAYOUTS))
def test_nan_or_inf_poisons_only_its_own_feature_in_training(rng, layout, dtype, bad):
    shape, axis, where, feature = POISONED_LAYOUTS[layout]
    x = rng.standard_normal(shape).astype(dtype)
    x[where] = bad
    y, mean, var = cbn.normalize_batch(x, 1.5, 0.5, axis=axis, return_stats=True)
    with np.errstate(invalid="ignore"):  # the oracle's own inf - inf
        expected, mean_ref, var_ref = normalize_ref(x, 1.5, 0.5, axis=axis)
    assert np.isnan(y[feature]).all()
    assert not np.isfinite(mean[1]) and not np.isfinite(var[1])
    clean = np.ones(y.shape, bool)
    clean[feature] = False
    assert np.isfinite(y[clean]).all()
    assert_close(y[clean], expected[clean], scale=3.0)
    others = np.arange(mean.size) != 1
    np.testing.assert_allclose(mean[others], mean_ref[others], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var[others], var_ref[others], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", list(POISONED_LAYOUTS))
def test_nan_or_inf_with_given_statistics_poisons_only_its_own_element(rng, layout,
                                                                       dtype, bad):
    shape, axis, where, _ = POISONED_LAYOUTS[layout]
    x = rng.standard_normal(shape).astype(dtype)
    x[where] = bad
    F = feature_shape(shape, axis)
    mean, var = rng.standard_normal(F), np.full(F, 1.5)
    y = cbn.normalize_batch(x, axis=axis, mean=mean, var=var)
    expected, _, _ = normalize_ref(x, axis=axis, mean=mean, var=var)
    assert np.isfinite(np.delete(y.ravel(), np.ravel_multi_index(where, shape))).all()
    # assert_allclose also requires NaN and +-Inf in exactly the same places.
    assert_close(y, expected, scale=3.0)


@pytest.mark.parametrize("batch_stats", [True, False])
@pytest.mark.parametrize("poisoned", ["x", "dy"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_backward_nan_or_inf_stays_in_its_feature(rng, dtype, bad, poisoned, batch_stats):
    x = rng.standard_normal((8, 4)).astype(dtype)
    dy = rng.standard_normal((8, 4)).astype(dtype)
    {"x": x, "dy": dy}[poisoned][3, 1] = bad
    if batch_stats:
        with np.errstate(invalid="ignore"):
            _, mean, var = normalize_ref(x)
    else:
        mean, var = np.zeros(4), np.ones(4)
    gamma = np.array([0.5, 1.0, 1.5, 2.0])
    dx, dgamma, dbeta = cbn.normalize_batch_backward(dy, x, mean, var, gamma,
                                                     batch_stats=batch_stats)
    with np.errstate(invalid="ignore"):  # the oracle's own inf - inf
        dx_ref, dgamma_ref, dbeta_ref = backward_ref(dy, x, mean, var, gamma,
                                                     batch_stats=batch_stats)
    assert np.isfinite(dx[:, [0, 2, 3]]).all()
    assert np.isfinite(dgamma[[0, 2, 3]]).all() and np.isfinite(dbeta[[0, 2, 3]]).all()
    # Within the poisoned feature, the same elements are non-finite as in the
    # oracle; whether one is NaN or +-Inf depends on the order of operations
    # (inf - inf), which is the kernels' own business.
    for got, ref in ((dx, dx_ref), (dgamma, dgamma_ref), (dbeta, dbeta_ref)):
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(ref))
    ok = [0, 2, 3]
    assert_close(dx[:, ok], dx_ref[:, ok], dtype=dtype, scale=5.0)
    assert_close(dgamma[ok], dgamma_ref[ok], dtype=dtype, scale=20.0)
    assert_close(dbeta[ok], dbeta_ref[ok], dtype=dtype, scale=20.0)
    finite = np.isfinite(dx_ref[:, 1])
    assert_close(dx[finite, 1], dx_ref[finite, 1], dtype=dtype, scale=5.0)
