"""Tests of `cbn.normalize_batch_backward`.

Two independent references: ``oracle.backward_ref`` (the textbook formulas in
float64) over every layout, dtype and gamma form, and central finite
differences of ``sum(w * normalize_batch(...))`` in float64, which check the
formulas themselves, for both ``batch_stats`` modes.
"""
import numpy as np
import pytest

import cbn
from checks import (assert_backward_close, assert_matches_finite_differences,
                    assert_rounding_close)
from oracle import (
    LAYOUT_CASES,
    LAYOUT_IDS,
    backward_ref,
    central_difference,
    feature_shape,
    normalize_ref,
    random_array,
)

FLOATS = [np.float64, np.float32, np.float16]


def make_problem(rng, shape, axis, dtype, batch_stats):
    """(dy, x, mean, var): mean/var are x's batch statistics or arbitrary frozen ones."""
    x = random_array(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    F = feature_shape(shape, axis)
    if batch_stats:
        _, mean, var = normalize_ref(x, axis=axis)
    else:
        mean, var = rng.standard_normal(F), rng.uniform(0.5, 2.0, F)
    return dy, x, mean, var


GAMMAS = {
    "none": lambda F, rng: None,
    "scalar": lambda F, rng: -1.5,
    "array": lambda F, rng: rng.uniform(-2.0, 2.0, F),
}


@pytest.mark.parametrize("batch_stats", [True, False])
@pytest.mark.parametrize("gamma_form", list(GAMMAS))
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape, axis", LAYOUT_CASES, ids=LAYOUT_IDS)
def test_matches_oracle_for_every_layout_dtype_and_gamma(rng, shape, axis, dtype,
                                                         gamma_form, batch_stats):
    dy, x, mean, var = make_problem(rng, shape, axis, dtype, batch_stats)
    F = feature_shape(shape, axis)
    gamma = GAMMAS[gamma_form](F, rng)
    result = cbn.normalize_batch_backward(dy, x, mean, var, gamma, axis=axis,
                                          batch_stats=batch_stats)
    dx, dgamma, dbeta = result
    assert dx.shape == x.shape and dx.dtype == x.dtype
    assert dgamma.shape == dbeta.shape == F
    expected = backward_ref(dy, x, mean, var, gamma, axis=axis, batch_stats=batch_stats)
    assert_backward_close(result, expected, dy, x, mean, var, axis, gamma,
                          batch_stats=batch_stats)


@pytest.mark.parametrize("batch_stats", [True, False])
def test_eps_enters_the_gradient(rng, batch_stats):
    # Small variance, large eps: the result depends strongly on eps.
    shape, axis = (12, 4), 0
    dy, x, mean, var = make_problem(rng, shape, axis, np.float64, batch_stats)
    x *= 0.1
    if batch_stats:
        _, mean, var = normalize_ref(x, axis=axis)
    result = cbn.normalize_batch_backward(dy, x, mean, var, axis=axis, eps=0.5,
                                          batch_stats=batch_stats)
    expected = backward_ref(dy, x, mean, var, axis=axis, eps=0.5, batch_stats=batch_stats)
    assert_backward_close(result, expected, dy, x, mean, var, axis, eps=0.5,
                          batch_stats=batch_stats)


def test_single_sample_batch_has_zero_input_gradient(rng):
    # With m == 1, x - mean is identically zero, so no change in x moves y.
    dy, x, mean, var = make_problem(rng, (1, 6), 0, np.float64, True)
    dx, dgamma, dbeta = cbn.normalize_batch_backward(dy, x, mean, var, 2.0)
    assert_rounding_close(dx, np.zeros_like(x))
    assert_rounding_close(dgamma, np.zeros(6))
    assert_rounding_close(dbeta, dy[0], scale=0)


def _layouts(rng, dtype):
    """name -> (dy, x, axis) with non-contiguous dy and/or x."""
    x = random_array(rng, (10, 7), dtype)
    dy = rng.standard_normal((10, 7)).astype(dtype)
    x4 = random_array(rng, (4, 6, 5, 3), dtype)
    dy4 = rng.standard_normal((4, 6, 5, 3)).astype(dtype)
    return {
        "x-transposed": (dy.T.copy(), x.T, 0),
        "dy-fortran": (np.asfortranarray(dy), x, 0),
        "both-step-sliced": (dy[::2, ::-3], x[1::2, ::3], 0),
        "nchw-from-nhwc-views": (dy4.transpose(0, 3, 1, 2), x4.transpose(0, 3, 1, 2),
                                 (0, 2, 3)),
        "nchw-negative-strides": (dy4[::-1], x4[:, :, ::-1], (0, 2, 3)),
    }


@pytest.mark.parametrize("batch_stats", [True, False])
@pytest.mark.parametrize("layout", list(_layouts(np.random.default_rng(0), np.float64)))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_non_contiguous_inputs_give_the_same_gradients(rng, layout, dtype, batch_stats):
    dy, x, axis = _layouts(rng, dtype)[layout]
    F = feature_shape(x.shape, axis)
    if batch_stats:
        _, mean, var = normalize_ref(x, axis=axis)
    else:
        mean, var = rng.standard_normal(F), rng.uniform(0.5, 2, F)
    gamma = rng.uniform(0.5, 2, F)
    result = cbn.normalize_batch_backward(dy, x, mean, var, gamma, axis=axis,
                                          batch_stats=batch_stats)
    assert result[0].shape == x.shape
    expected = backward_ref(dy, x, mean, var, gamma, axis=axis, batch_stats=batch_stats)
    assert_backward_close(result, expected, dy, x, mean, var, axis, gamma,
                          batch_stats=batch_stats)


@pytest.mark.parametrize("batch_stats", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape, axis", [
    ((m, n), 0) for m in (1, 2, 7, 8, 9, 17, 33) for n in (1, 3, 8, 17, 65)
] + [((3, 5, inner, 1), (0, 2, 3)) for inner in (1, 2, 7, 8, 9, 15, 16, 17, 33, 100)])
def test_sizes_around_vector_widths(rng, shape, axis, dtype, batch_stats):
    # Vectorized kernels fail first at remainders: sizes just off 4/8/16.
    dy, x, mean, var = make_problem(rng, shape, axis, dtype, batch_stats)
    gamma = rng.uniform(0.5, 2, feature_shape(shape, axis))
    result = cbn.normalize_batch_backward(dy, x, mean, var, gamma, axis=axis,
                                          batch_stats=batch_stats)
    expected = backward_ref(dy, x, mean, var, gamma, axis=axis, batch_stats=batch_stats)
    assert_backward_close(result, expected, dy, x, mean, var, axis, gamma,
                          batch_stats=batch_stats)


# Finite differences ------------------------------------------------------------

@pytest.mark.parametrize("batch_stats", [True, False])
@pytest.mark.parametrize("shape, axis", [
    ((5, 3), 0),
    ((3, 4), 1),
    ((4, 3, 2), (0, 2)),
    ((2, 3, 2, 2), (0, 2, 3)),      # NCHW
    ((2, 2, 2, 3), (0, 1, 2)),      # NHWC
    ((3, 2, 3), 0),                 # F = (2, 3)
    ((2, 3, 2, 2), (1, 3)),         # interleaved batch axes
    ((3, 2, 2), None),              # F = ()
])
def test_gradients_match_finite_differences(rng, shape, axis, batch_stats):
    F = feature_shape(shape, axis)
    x = rng.standard_normal(shape)
    gamma = np.asarray(rng.uniform(0.5, 2.0, F))
    beta = np.asarray(rng.standard_normal(F))
    w = rng.standard_normal(shape)  # dL/dy for L = sum(w * y)
    eps = 1e-3
    if batch_stats:
        def loss():
            return np.sum(w * cbn.normalize_batch(x, gamma, beta, axis=axis, eps=eps))
        _, mean, var = normalize_ref(x, axis=axis)
    else:
        mean, var = rng.standard_normal(F), rng.uniform(0.5, 2.0, F)

        def loss():
            return np.sum(w * cbn.normalize_batch(x, gamma, beta, axis=axis, eps=eps,
                                                  mean=mean, var=var))
    dx, dgamma, dbeta = cbn.normalize_batch_backward(
        w, x, mean, var, gamma, axis=axis, eps=eps, batch_stats=batch_stats)
    assert_matches_finite_differences(dx, central_difference(loss, x))
    assert_matches_finite_differences(dgamma, central_difference(loss, gamma))
    assert_matches_finite_differences(dbeta, central_difference(loss, beta))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("target", ["new", "dy", "x", "overlap", "fortran"])
def test_backward_out_receives_dx(rng, dtype, target):
    # out= takes dx: a separate array, dy or x themselves (the kernels read
    # each element before writing it), a partial overlap, another layout.
    shape, axis = (6, 3, 5), (0, 2)
    buf = rng.standard_normal(2 * np.prod(shape) + 1).astype(dtype)
    x = buf[:np.prod(shape)].reshape(shape).copy()
    dy = rng.standard_normal(shape).astype(dtype)
    _, mean, var = normalize_ref(x, axis=axis)
    want, dg_ref, db_ref = backward_ref(dy, x, mean, var, 1.5, axis=axis)
    if target == "new":
        out = np.empty_like(x)
    elif target == "dy":
        out = dy
    elif target == "x":
        out = x
    elif target == "overlap":  # x lives in buf[1:], out in buf[:-1]
        x = buf[1:np.prod(shape) + 1].reshape(shape)
        x[...] = buf[:np.prod(shape)].reshape(shape).copy()
        _, mean, var = normalize_ref(x, axis=axis)
        want, dg_ref, db_ref = backward_ref(dy, x, mean, var, 1.5, axis=axis)
        out = buf[:np.prod(shape)].reshape(shape)
    else:
        out = np.asfortranarray(np.empty_like(x))
    x0, dy0 = x.copy(), dy.copy()  # out may be one of them
    dx, dg, db = cbn.normalize_batch_backward(dy, x, mean, var, 1.5, axis=axis,
                                              out=out)
    assert dx is out
    assert_backward_close((dx, dg, db), (want, dg_ref, db_ref), dy0, x0, mean,
                          var, axis, 1.5)


def test_backward_out_errors_leave_everything_unchanged(rng):
    x = rng.standard_normal((8, 4)).astype(np.float32)
    dy = rng.standard_normal((8, 4)).astype(np.float32)
    _, mean, var = normalize_ref(x)
    for out, err in ((np.zeros((8, 5), np.float32), ValueError),
                     (np.zeros((8, 4), np.float64), TypeError),
                     (np.zeros((8, 4), np.float32)[::1].view(), None)):
        if err is None:  # read-only
            out.flags.writeable = False
            err = ValueError
        before = out.copy()
        with pytest.raises(err):
            cbn.normalize_batch_backward(dy, x, mean, var, out=out)
        np.testing.assert_array_equal(out, before)


@pytest.mark.parametrize("missing", ["mean", "var"])
def test_backward_without_statistics_is_a_type_error(rng, missing):
    x = rng.standard_normal((8, 4))
    _, mean, var = normalize_ref(x)
    args = {"mean": mean, "var": var, missing: None}
    with pytest.raises(TypeError, match="mean and var"):
        cbn.normalize_batch_backward(x, x, args["mean"], args["var"])
