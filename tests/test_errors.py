"""Bad input to the array functions: the documented error, and nothing changed.

Every rejected call is made with snapshots of all the arrays it was given
(``x``, ``out``, ``gamma``, ``beta``, ``mean``, ``var``, ``dy``) and checks
them byte for byte afterwards, so a function that writes part of its result
before noticing the problem fails. ``out`` is pre-filled with a sentinel so
that any write shows. The last section checks that NaN and Inf in the data
are not errors: they poison only their own feature, and the rest matches the
oracle.
"""

from fractions import Fraction

import numpy as np
import pytest
from numpy.exceptions import AxisError

import cbn
from checks import assert_close, assert_stats_close
from oracle import backward_ref, feature_shape, normalize_ref


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


@pytest.mark.parametrize("eps, exc", [("abc", TypeError), (None, TypeError),
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


# float32 and float64: tests/test_edges.py, on every loop path and SIMD level.
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16])
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
    assert_stats_close(mean[others], var[others], mean_ref[others], var_ref[others])


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


# Masked arrays are refused; subclasses that only add methods are not ----------------
#
# cbn has no mask support yet: a numpy.ma.MaskedArray would be computed over its
# masked values and come back as a plain ndarray, its mask silently dropped. Every
# array argument refuses one, naming the two ways out, before anything is changed.

MASKED_MESSAGE = (r"^{0} is a numpy\.ma\.MaskedArray.*np\.asarray\({0}\).*"
                  r"{0}\.filled\(np\.nan\).*nan_policy='omit'")


def masked(a, hide=True):
    """``a`` as a MaskedArray, with one element masked (or none)."""
    mask = np.zeros(np.shape(a), bool)
    if hide and mask.size:
        mask.flat[0] = True
    return np.ma.masked_array(a, mask=mask)


def layer_state(layer):
    """Copies of everything about a layer that a failed call must leave alone."""
    def cp(a):
        return None if a is None else np.array(a, copy=True)
    return {"gamma": cp(layer.gamma), "beta": cp(layer.beta),
            "running_mean": cp(layer.running_mean), "running_var": cp(layer.running_var),
            "num_batches_tracked": layer.num_batches_tracked,
            "dgamma": cp(layer.dgamma), "dbeta": cp(layer.dbeta),
            "eps": layer.eps, "momentum": layer.momentum, "training": layer.training}


def assert_layer_raises_unchanged(exc, layer, call, match=None):
    """``call()`` raises ``exc`` and leaves ``layer``'s state as it was."""
    before = layer_state(layer)
    with pytest.raises(exc, match=match):
        call()
    after = layer_state(layer)
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            assert after[key].tobytes() == value.tobytes(), f"{key} was modified"
        else:
            assert after[key] == value, f"{key} was modified"


def used_layer(rng, dtype=np.float32, **kwargs):
    """A BatchNorm1d(4) with non-trivial parameters, after one training step and
    its backward (so dgamma, dbeta and the running statistics are set)."""
    layer = cbn.BatchNorm1d(4, dtype=dtype, **kwargs)
    if layer.affine:
        layer.gamma = rng.uniform(0.5, 2.0, 4)
        layer.beta = rng.standard_normal(4)
    y = layer(rng.standard_normal((6, 4)).astype(dtype))
    layer.backward(np.ones_like(y))
    return layer


@pytest.mark.parametrize("hide", [True, False], ids=["masked", "nothing-masked"])
def test_masked_x_raises_type_error_and_writes_nothing(x, out, hide):
    # normalize_batch takes a masked x (tests/test_zscore.py), but its result
    # is a new MaskedArray, which out= cannot hold; the backward and the
    # statistics have no mask support and refuse it.
    mx = masked(x, hide)
    match = MASKED_MESSAGE.format("x")
    out_match = r"^out= cannot hold the result of a masked array"
    assert_raises_unchanged(TypeError, cbn.normalize_batch, mx, out=out, match=out_match)
    assert_raises_unchanged(TypeError, cbn.normalize_batch, mx, mean=np.zeros(4),
                            var=np.ones(4), out=out, match=out_match)
    assert_raises_unchanged(TypeError, cbn.normalize_batch_backward, np.ones((6, 4)), mx,
                            np.zeros(4), np.ones(4), out=out, match=match)
    assert_raises_unchanged(TypeError, cbn.batch_stats, mx, match=match)


@pytest.mark.parametrize("hide", [True, False], ids=["masked", "nothing-masked"])
def test_masked_out_raises_type_error_and_writes_nothing(x, grads, hide):
    # The kernels would write out's data under its mask and leave the mask,
    # showing old values as masked and hiding new ones.
    match = r"^out is a numpy\.ma\.MaskedArray.*out\.data"
    for call, args, kwargs in (
            (cbn.normalize_batch, (x,), {}),
            (cbn.normalize_batch, (x,), {"mean": np.zeros(4), "var": np.ones(4)}),
            (cbn.normalize_batch_backward, backward_args(grads), {})):
        out = masked(np.full((6, 4), 7.0), hide)
        data, mask = out.data.copy(), out.mask.copy()
        assert_raises_unchanged(TypeError, call, *args, out=out, match=match, **kwargs)
        assert out.data.tobytes() == data.tobytes() and (out.mask == mask).all()


def test_masked_dy_raises_type_error_and_writes_nothing(grads):
    out = np.full((6, 4), 7.0)
    assert_raises_unchanged(TypeError, cbn.normalize_batch_backward,
                            *backward_args(grads, dy=masked(grads["dy"])), out=out,
                            match=MASKED_MESSAGE.format("dy"))


@pytest.mark.parametrize("which", ["gamma", "beta", "mean", "var"])
@pytest.mark.parametrize("form", ["array", "0-d", "masked-constant"])
def test_masked_per_feature_argument_raises_type_error(x, out, which, form):
    value = {"array": masked(np.full(4, 0.5)), "0-d": masked(0.5, hide=False),
             "masked-constant": np.ma.masked}[form]
    kwargs = {"mean": np.zeros(4), "var": np.ones(4)} if which in ("mean", "var") else {}
    kwargs[which] = value
    for target in (out, x):  # (numpy.ma.masked cannot be snapshotted: no tobytes)
        before = (x.copy(), target.copy())
        with pytest.raises(TypeError, match=MASKED_MESSAGE.format(which)):
            cbn.normalize_batch(x, out=target, **kwargs)
        assert (x.tobytes(), target.tobytes()) == (before[0].tobytes(), before[1].tobytes())


@pytest.mark.parametrize("which", ["mean", "var", "gamma"])
def test_backward_masked_per_feature_argument_raises_type_error(grads, which):
    out = np.full((6, 4), 7.0)
    assert_raises_unchanged(TypeError, cbn.normalize_batch_backward,
                            *backward_args(grads, **{which: masked(grads[which])}), out=out,
                            match=MASKED_MESSAGE.format(which))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_layer_forward_of_masked_input_raises_and_changes_nothing(rng, training):
    layer = used_layer(rng).train(training)
    x = masked(rng.standard_normal((6, 4)).astype(np.float32))
    assert_layer_raises_unchanged(TypeError, layer, lambda: layer(x),
                                  match=MASKED_MESSAGE.format("x"))
    assert_layer_raises_unchanged(TypeError, layer, lambda: layer.forward(x),
                                  match=MASKED_MESSAGE.format("x"))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_layer_backward_of_masked_dy_raises_and_changes_nothing(rng, training):
    layer = used_layer(rng).train(training)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    layer(x)
    dy = masked(np.ones((6, 4), np.float32))
    assert_layer_raises_unchanged(TypeError, layer, lambda: layer.backward(dy),
                                  match=MASKED_MESSAGE.format("dy"))
    # The last forward call is still there to back-propagate through.
    layer.backward(np.asarray(dy))


@pytest.mark.parametrize("name", ["gamma", "beta", "running_mean", "running_var"])
def test_setting_a_masked_parameter_raises_and_changes_nothing(rng, name):
    layer = used_layer(rng)
    value = masked(np.full(4, 3.0))
    assert_layer_raises_unchanged(TypeError, layer, lambda: setattr(layer, name, value),
                                  match=MASKED_MESSAGE.format(name))


@pytest.mark.parametrize("key", ["weight", "bias", "running_mean", "running_var",
                                 "num_batches_tracked"])
def test_loading_a_masked_state_dict_value_raises_and_loads_nothing(rng, key):
    layer = used_layer(rng)
    state = {k: v + 5 for k, v in layer.state_dict().items()}  # would show if loaded
    state[key] = masked(state[key], hide=state[key].ndim > 0)
    assert_layer_raises_unchanged(TypeError, layer, lambda: layer.load_state_dict(state),
                                  match=MASKED_MESSAGE.format(key))


@pytest.mark.parametrize("which", ["mean", "m2"])
def test_batch_stats_object_refuses_masked_statistics(which):
    args = {"mean": np.zeros(3), "m2": np.ones(3)}
    args[which] = masked(args[which])
    with pytest.raises(TypeError, match=MASKED_MESSAGE.format(which)):
        cbn.BatchStats(4, **args)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_matrix_input_is_used_as_a_plain_ndarray(x):
    # numpy.matrix only adds methods (and is always 2-D): it is normalized as
    # np.asarray(x) would be, and the results are plain ndarrays.
    m = np.asmatrix(x)
    y = cbn.normalize_batch(m)
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, cbn.normalize_batch(x))
    y, mean, var = cbn.normalize_batch(m, np.asmatrix(np.full(4, 2.0)).A1, return_stats=True)
    assert type(y) is np.ndarray and type(mean) is np.ndarray
    dx, dgamma, _ = cbn.normalize_batch_backward(np.asmatrix(np.ones((6, 4))), m, mean, var)
    assert type(dx) is np.ndarray and type(dgamma) is np.ndarray
    assert type(cbn.batch_stats(m).mean) is np.ndarray
    layer = cbn.BatchNorm1d(4, dtype=np.float64)
    y = layer(m)
    assert type(y) is np.ndarray
    assert type(layer.backward(np.asmatrix(np.ones((6, 4))))) is np.ndarray


def test_memmap_input_and_out_are_accepted(tmp_path, x):
    # numpy.memmap only adds file backing: as input it is read as an ndarray;
    # as ``out`` it is written and returned, so the result lands in the file.
    mx = np.memmap(tmp_path / "x.dat", dtype=np.float64, mode="w+", shape=x.shape)
    mx[...] = x
    y = cbn.normalize_batch(mx)
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, cbn.normalize_batch(x))
    out = np.memmap(tmp_path / "y.dat", dtype=np.float64, mode="w+", shape=x.shape)
    assert cbn.normalize_batch(mx, out=out) is out
    np.testing.assert_array_equal(out, y)
    gamma = np.memmap(tmp_path / "g.dat", dtype=np.float64, mode="w+", shape=(4,))
    gamma[...] = 2.0
    np.testing.assert_array_equal(cbn.normalize_batch(mx, gamma), cbn.normalize_batch(x, 2.0))
    np.testing.assert_array_equal(cbn.batch_stats(mx).mean, cbn.batch_stats(x).mean)
    layer = cbn.BatchNorm1d(4, dtype=np.float64)
    layer.gamma = gamma
    np.testing.assert_array_equal(layer.gamma, gamma)
    y = layer(mx)
    assert type(y) is np.ndarray
    dy = np.memmap(tmp_path / "dy.dat", dtype=np.float64, mode="w+", shape=x.shape)
    assert type(layer.backward(dy)) is np.ndarray


# Numeric arguments take numbers only ---------------------------------------------------
#
# As in numpy and torch: integer arguments take anything with __index__ (int,
# bool, numpy integers) and real ones (eps, momentum) int, float, numpy real
# scalars and 0-d real arrays. Strings, bytes, complex numbers, None (where it
# means nothing) and other objects raise TypeError naming the argument and the
# type, and change nothing; values out of range stay ValueError.

NOT_REAL = ["0.1", b"0.1", 0.1 + 0j, np.complex128(0.1), None, [0.1], np.array([0.1]),
            np.array(0.1, dtype=object), object()]
NOT_REAL_IDS = ["str", "bytes", "complex", "np-complex", "None", "list", "1-d-array",
                "object-array", "object"]
NOT_INTEGER = [3.0, np.float64(3.0), "3", b"3", 3 + 0j, None, [3], np.array([3]),
               np.array(3.0)]
NOT_INTEGER_IDS = ["float", "np-float", "str", "bytes", "complex", "None", "list",
                   "1-d-array", "0-d-float-array"]
LAYER_CLASSES = [cbn.BatchNorm, cbn.BatchNorm1d, cbn.BatchNorm2d, cbn.BatchNorm3d,
                 cbn.SyncBatchNorm]


def type_name(value):
    """How the error messages name the type of ``value``."""
    return "None" if value is None else type(value).__name__


def type_message(name, value, what):
    return rf"^{name} must be {what}, not {type_name(value)}"


@pytest.mark.parametrize("eps", NOT_REAL, ids=NOT_REAL_IDS)
def test_eps_of_the_wrong_type_raises_type_error_naming_it(x, out, grads, eps):
    match = type_message("eps", eps, "a real number")
    assert_raises_unchanged(TypeError, cbn.normalize_batch, x, eps=eps, out=out, match=match)
    assert_raises_unchanged(TypeError, cbn.normalize_batch, x, eps=eps, mean=np.zeros(4),
                            var=np.ones(4), out=x, match=match)
    assert_raises_unchanged(TypeError, cbn.normalize_batch_backward, *backward_args(grads),
                            eps=eps, out=out, match=match)


@pytest.mark.parametrize("cls", LAYER_CLASSES)
@pytest.mark.parametrize("eps", NOT_REAL, ids=NOT_REAL_IDS)
def test_layer_eps_of_the_wrong_type_raises_type_error(cls, eps):
    with pytest.raises(TypeError, match=type_message("eps", eps, "a real number")):
        cls(3, eps=eps)


@pytest.mark.parametrize("cls", LAYER_CLASSES)
@pytest.mark.parametrize("momentum", [m for m in NOT_REAL if m is not None],
                         ids=[i for i in NOT_REAL_IDS if i != "None"])
def test_layer_momentum_of_the_wrong_type_raises_type_error(cls, momentum):
    with pytest.raises(TypeError,
                       match=type_message("momentum", momentum, "a real number or None")):
        cls(3, momentum=momentum)


@pytest.mark.parametrize("cls", LAYER_CLASSES)
@pytest.mark.parametrize("num_features", NOT_INTEGER, ids=NOT_INTEGER_IDS)
def test_num_features_of_the_wrong_type_raises_type_error(cls, num_features):
    with pytest.raises(TypeError, match=type_message("num_features", num_features,
                                                     "a positive integer")):
        cls(num_features)


@pytest.mark.parametrize("cls", [cbn.BatchNorm, cbn.SyncBatchNorm])
@pytest.mark.parametrize("feature_axis", NOT_INTEGER, ids=NOT_INTEGER_IDS)
def test_feature_axis_of_the_wrong_type_raises_type_error(cls, feature_axis):
    with pytest.raises(TypeError,
                       match=type_message("feature_axis", feature_axis, "an integer")):
        cls(3, feature_axis=feature_axis)


@pytest.mark.parametrize("name, value, what", [
    *[("eps", v, "a real number") for v in NOT_REAL],
    *[("momentum", v, "a real number or None") for v in NOT_REAL if v is not None],
    *[("num_batches_tracked", v, "a non-negative integer") for v in NOT_INTEGER],
], ids=[*("eps-" + i for i in NOT_REAL_IDS),
        *("momentum-" + i for i in NOT_REAL_IDS if i != "None"),
        *("num_batches_tracked-" + i for i in NOT_INTEGER_IDS)])
def test_setting_a_number_of_the_wrong_type_raises_and_changes_nothing(rng, name, value,
                                                                       what):
    layer = used_layer(rng, eps=1e-3, momentum=0.25)
    layer.num_batches_tracked = 7
    assert_layer_raises_unchanged(TypeError, layer, lambda: setattr(layer, name, value),
                                  match=type_message(name, value, what))
    assert (layer.eps, layer.momentum, layer.num_batches_tracked) == (1e-3, 0.25, 7)


@pytest.mark.parametrize("name, value", [
    ("eps", -1e-5), ("eps", np.nan), ("eps", np.float32(-1)), ("momentum", 1.5),
    ("momentum", -0.1), ("momentum", np.nan), ("momentum", np.float64(2)),
    ("num_batches_tracked", -1), ("num_batches_tracked", 2**63),
    ("num_batches_tracked", np.int64(-3)),
])
def test_setting_a_number_out_of_range_still_raises_value_error(rng, name, value):
    layer = used_layer(rng, eps=1e-3, momentum=0.25)
    assert_layer_raises_unchanged(ValueError, layer, lambda: setattr(layer, name, value))


@pytest.mark.parametrize("kwargs", [
    {"eps": -1.0}, {"eps": np.nan}, {"momentum": 1.5}, {"momentum": -1},
    {"num_features": 0}, {"num_features": np.int64(-2)}, {"num_features": 2**63},
])
def test_layer_arguments_out_of_range_still_raise_value_error(kwargs):
    kwargs = {"num_features": 3, **kwargs}
    with pytest.raises(ValueError):
        cbn.BatchNorm(**kwargs)


@pytest.mark.parametrize("eps", [np.float32(1e-3), np.float64(1e-3), np.array(1e-3),
                                 np.array(1e-3, np.float32), 0, np.int64(0), np.uint8(0),
                                 True, Fraction(1, 1000)],
                         ids=["np-float32", "np-float64", "0-d", "0-d-float32", "int",
                              "np-int64", "np-uint8", "bool", "fraction"])
def test_numbers_of_every_real_type_are_accepted_as_eps(x, eps):
    expected = cbn.normalize_batch(x, eps=float(eps))
    np.testing.assert_array_equal(cbn.normalize_batch(x, eps=eps), expected)
    mean, var = x.mean(0), x.var(0)
    np.testing.assert_array_equal(cbn.normalize_batch_backward(x, x, mean, var, eps=eps)[0],
                                  cbn.normalize_batch_backward(x, x, mean, var,
                                                               eps=float(eps))[0])
    layer = cbn.BatchNorm1d(4, eps=eps)
    assert layer.eps == float(eps) and type(layer.eps) is float
    layer.eps = eps
    assert layer.eps == float(eps) and type(layer.eps) is float


@pytest.mark.parametrize("momentum", [np.float32(0.25), np.float64(0.25), np.array(0.25),
                                      0, 1, np.int64(1), True, Fraction(1, 4), None],
                         ids=["np-float32", "np-float64", "0-d", "int-0", "int-1",
                              "np-int64", "bool", "fraction", "None"])
def test_numbers_of_every_real_type_are_accepted_as_momentum(momentum):
    expected = None if momentum is None else float(momentum)
    for layer in (cbn.BatchNorm1d(3, momentum=momentum), cbn.SyncBatchNorm(3, momentum=momentum)):
        assert layer.momentum == expected and type(layer.momentum) is type(expected)
        layer.momentum = 0.5
        layer.momentum = momentum
        assert layer.momentum == expected and type(layer.momentum) is type(expected)


@pytest.mark.parametrize("n", [np.int64(3), np.int32(3), np.uint8(3), np.array(3)],
                         ids=["np-int64", "np-int32", "np-uint8", "0-d"])
def test_numpy_integers_are_accepted_as_integer_arguments(rng, n):
    for cls in LAYER_CLASSES:
        layer = cls(n)
        assert layer.num_features == 3 and type(layer.num_features) is int
    for fa in (np.int64(-1), np.int8(-1), np.array(-1)):
        layer = cbn.BatchNorm(3, feature_axis=fa)
        assert layer.feature_axis == -1
        assert layer(np.ones((2, 5, 3), np.float32)).shape == (2, 5, 3)
    layer.num_batches_tracked = n
    assert layer.num_batches_tracked == 3 and type(layer.num_batches_tracked) is int
    s = cbn.BatchStats(n, np.zeros(2), np.ones(2))
    assert s.count == 3 and type(s.count) is int
    before = cbn.get_num_threads()
    try:
        cbn.set_num_threads(n - 2)
        assert cbn.get_num_threads() == 1
    finally:
        cbn.set_num_threads(before)


@pytest.mark.parametrize("n", NOT_INTEGER, ids=NOT_INTEGER_IDS)
def test_set_num_threads_of_the_wrong_type_raises_and_changes_nothing(n):
    before = cbn.get_num_threads()
    with pytest.raises(TypeError, match=r"^n \(the number of threads\) must be an "
                                        r"integer, not " + type_name(n)):
        cbn.set_num_threads(n)
    assert cbn.get_num_threads() == before


@pytest.mark.parametrize("count", [c for c in NOT_INTEGER if np.ndim(c) == 0],
                         ids=[i for c, i in zip(NOT_INTEGER, NOT_INTEGER_IDS) if np.ndim(c) == 0])
def test_batch_stats_count_of_the_wrong_type_raises_type_error(count):
    with pytest.raises(TypeError, match=type_message("count", count, "a non-negative integer")):
        cbn.BatchStats(count, np.zeros(2), np.ones(2))


def test_batch_stats_per_feature_counts_must_be_integers_of_the_feature_shape():
    # An array count is one count per feature (nan_policy='omit'): integers
    # of mean's shape, none negative.
    with pytest.raises(TypeError, match=r"^count must hold integers, got dtype float64"):
        cbn.BatchStats(np.array([3.0, 2.0]), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match=r"^per-feature counts must have the shape of mean"):
        cbn.BatchStats(np.array([3]), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match=r"^count must be non-negative"):
        cbn.BatchStats(np.array([3, -1]), np.zeros(2), np.ones(2))
    s = cbn.BatchStats(np.array([3, 0]), np.zeros(2), np.ones(2))
    assert s.count.dtype == np.int64 and not s.count.flags.writeable
    np.testing.assert_array_equal(s.mean, [0.0, np.nan])  # no values: no mean


@pytest.mark.parametrize("ddof", [v for v in NOT_REAL if not isinstance(v, list)],
                         ids=[i for i in NOT_REAL_IDS if i != "list"])
def test_var_ddof_of_the_wrong_type_raises_type_error(ddof):
    s = cbn.batch_stats(np.arange(8.0).reshape(4, 2))
    with pytest.raises(TypeError, match=type_message("ddof", ddof, "a real number")):
        s.var(ddof=ddof)


def test_var_ddof_may_be_any_real_number_as_in_numpy():
    x = np.arange(8.0).reshape(4, 2)
    s = cbn.batch_stats(x)
    for ddof in (1, np.int64(1), 1.0, np.float32(0.5), 0.5):
        np.testing.assert_allclose(s.var(ddof=ddof), np.var(x, axis=0, ddof=float(ddof)),
                                   rtol=1e-15)


@pytest.mark.parametrize("axis", [1.0, np.float64(0), "0", b"0", 0j, (0, "1"), (np.float32(1),)],
                         ids=["float", "np-float", "str", "bytes", "complex", "tuple-str",
                              "tuple-np-float"])
def test_axis_of_a_non_integer_type_raises_type_error_as_in_numpy(x, out, axis):
    with pytest.raises(TypeError):
        np.mean(x, axis=axis)
    assert_raises_unchanged(TypeError, cbn.normalize_batch, x, axis=axis, out=out)
    assert_raises_unchanged(TypeError, cbn.normalize_batch_backward, x, x, np.zeros(4),
                            np.ones(4), axis=axis, out=out)
    assert_raises_unchanged(TypeError, cbn.batch_stats, x, axis=axis)


def test_numpy_integer_axis_is_accepted(x):
    np.testing.assert_array_equal(cbn.normalize_batch(x, axis=np.int64(0)),
                                  cbn.normalize_batch(x, axis=0))
    np.testing.assert_array_equal(cbn.normalize_batch(x, axis=(np.int8(-2),)),
                                  cbn.normalize_batch(x, axis=0))
