"""Tests of `cbn.normalize_batch` against the float64 oracle.

Every test computes the expected answer independently (``oracle.normalize_ref``,
``numpy.var`` or ``scipy.stats.zscore``) and compares. Covered: every ``axis``
form over 1-D..5-D shapes and the named layouts (N×C, NCHW, NHWC, all axes),
every input dtype and the result-dtype rules, the forms of ``gamma``/``beta``,
``out=`` (separate, strided, in place, partially overlapping), non-contiguous
and byte-swapped input, ``return_stats``, given statistics (inference), and
the edge cases m == 1, eps == 0, ``axis=()`` and empty feature axes.
"""
import numpy as np
import pytest
import scipy.stats

import cbn
from checks import assert_close, assert_stats_close
from oracle import (
    LAYOUT_CASES,
    LAYOUT_IDS,
    batch_axes,
    feature_shape,
    normalize_ref,
    random_array,
    result_dtype,
)

FLOATS = [np.float64, np.float32, np.float16]
ALL_DTYPES = FLOATS + [np.int32, np.int64, np.uint8, np.bool_]


def per_feature(rng, shape, axis, low=0.5, high=2.0):
    """A random array of shape F (gamma, var, ...) for x of ``shape``."""
    return rng.uniform(low, high, feature_shape(shape, axis))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape, axis", LAYOUT_CASES, ids=LAYOUT_IDS)
def test_matches_oracle_for_every_axis_form_and_dtype(rng, shape, axis, dtype):
    x = random_array(rng, shape, dtype)
    gamma = per_feature(rng, shape, axis, -2.0, 2.0)
    beta = rng.standard_normal(feature_shape(shape, axis))
    y = cbn.normalize_batch(x, gamma, beta, axis=axis)
    expected, _, _ = normalize_ref(x, gamma, beta, axis=axis)
    assert y.shape == x.shape
    assert y.dtype == result_dtype(dtype)
    assert_close(y, expected)


@pytest.mark.parametrize("dtype, expected_dtype", [
    (np.float64, np.float64),
    (np.float32, np.float32),
    (np.float16, np.float16),
    (np.int8, np.float64),
    (np.int16, np.float64),
    (np.int32, np.float64),
    (np.int64, np.float64),
    (np.uint8, np.float64),
    (np.uint16, np.float64),
    (np.uint32, np.float64),
    (np.uint64, np.float64),
    (np.bool_, np.float64),
])
def test_result_dtype_keeps_floats_and_promotes_the_rest_to_float64(rng, dtype,
                                                                    expected_dtype):
    x = random_array(rng, (9, 4), dtype)
    y, mean, var = cbn.normalize_batch(x, return_stats=True)
    assert y.dtype == expected_dtype
    assert mean.dtype == var.dtype == np.float64
    expected, _, _ = normalize_ref(x)
    assert_close(y, expected)


def test_array_like_input_is_accepted_and_becomes_float64():
    x = [[1, 2.5], [3, -1.0], [4, 0.5]]
    y = cbn.normalize_batch(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float64
    assert_close(y, normalize_ref(x)[0])


def test_input_is_not_modified_and_result_is_a_new_array(rng):
    x = random_array(rng, (8, 3, 4, 4), np.float32)
    before = x.copy()
    y = cbn.normalize_batch(x, axis=(0, 2, 3))
    assert np.array_equal(x, before)
    assert not np.shares_memory(x, y)


# gamma / beta --------------------------------------------------------------

GAMMA_BETA_FORMS = {
    "none": lambda F, rng: (None, None),
    "python-scalars": lambda F, rng: (1.7, -0.3),
    "numpy-scalars": lambda F, rng: (np.float64(-0.8), np.float32(2.5)),
    "0d-arrays": lambda F, rng: (np.array(1.25), np.array(0.75)),
    "gamma-array-only": lambda F, rng: (rng.uniform(0.5, 2, F), None),
    "beta-array-only": lambda F, rng: (None, rng.standard_normal(F)),
    "both-arrays": lambda F, rng: (rng.uniform(-2, 2, F), rng.standard_normal(F)),
}


@pytest.mark.parametrize("form", list(GAMMA_BETA_FORMS))
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape, axis", [
    ((6, 5), 0), ((3, 4, 5, 6), (0, 2, 3)), ((4, 3, 5), 0), ((7,), None)])
def test_gamma_and_beta_may_be_none_scalar_or_feature_shaped(rng, form, dtype,
                                                             shape, axis):
    x = random_array(rng, shape, dtype)
    gamma, beta = GAMMA_BETA_FORMS[form](feature_shape(shape, axis), rng)
    y = cbn.normalize_batch(x, gamma, beta, axis=axis)
    expected, _, _ = normalize_ref(x, gamma, beta, axis=axis)
    assert_close(y, expected, scale=3.0)  # |gamma|, |beta| up to ~2.5


def test_gamma_and_beta_of_other_dtypes_and_strides_are_accepted(rng):
    # "an array of shape F" says nothing about dtype or contiguity.
    x = random_array(rng, (10, 6), np.float64)
    gamma = rng.uniform(0.5, 2, 12).astype(np.float32)[::2]
    beta = np.arange(-3, 3, dtype=np.int16)
    y = cbn.normalize_batch(x, gamma, beta)
    assert_close(y, normalize_ref(x, gamma, beta)[0])


def test_eps_is_added_to_the_variance(rng):
    # Small variance, large eps: a kernel that ignored or misplaced eps
    # would be far off.
    x = 0.1 * rng.standard_normal((12, 4))
    y = cbn.normalize_batch(x, eps=0.5)
    assert_close(y, normalize_ref(x, eps=0.5)[0])


# out= ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape, axis", [((6, 5), 0), ((3, 4, 5, 6), (0, 2, 3)),
                                         ((3, 5, 6, 4), (0, 1, 2))])
def test_out_receives_the_result_and_is_returned(rng, shape, axis, dtype):
    x = random_array(rng, shape, dtype)
    out = np.full(shape, 7.0, dtype=result_dtype(dtype))
    y, mean, var = cbn.normalize_batch(x, axis=axis, out=out, return_stats=True)
    assert y is out
    expected, mean_ref, var_ref = normalize_ref(x, axis=axis)
    assert_close(out, expected)
    assert_stats_close(mean, var, mean_ref, var_ref)


@pytest.mark.parametrize("dtype", FLOATS)
def test_out_may_be_a_strided_view_and_nothing_else_is_written(rng, dtype):
    x = random_array(rng, (6, 5), dtype)
    buf = np.full((12, 10), 7.0, dtype=dtype)
    out = buf[::2, ::-2]
    y = cbn.normalize_batch(x, out=out)
    assert y is out
    assert_close(out, normalize_ref(x)[0])
    untouched = np.ones(buf.shape, bool)
    untouched[::2, ::-2] = False
    assert np.all(buf[untouched] == 7.0)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape, axis", LAYOUT_CASES, ids=LAYOUT_IDS)
def test_in_place_gives_the_same_result(rng, shape, axis, dtype):
    x = random_array(rng, shape, dtype)
    gamma = per_feature(rng, shape, axis)
    expected, _, _ = normalize_ref(x, gamma, 0.5, axis=axis)
    y = cbn.normalize_batch(x, gamma, 0.5, axis=axis, out=x)
    assert y is x
    assert_close(x, expected, scale=3.0)


def _overlapping_pairs(buf):
    """(x, out) pairs of equal shape that share part of ``buf``'s memory."""
    return {
        "out-ahead-along-batch": (buf[:-1], buf[1:]),
        "out-behind-along-batch": (buf[1:], buf[:-1]),
        "out-ahead-along-features": (buf[:, :-1], buf[:, 1:]),
        "out-behind-along-features": (buf[:, 1:], buf[:, :-1]),
        "out-is-x-transposed": (buf[:6, :6], buf[:6, :6].T),
        "out-is-x-reversed": (buf, buf[::-1, ::-1]),
    }


@pytest.mark.parametrize("how", list(_overlapping_pairs(np.zeros((9, 7)))))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_partial_overlap_between_out_and_x_gives_the_right_answer(rng, how, dtype):
    buf = random_array(rng, (9, 7), dtype)
    x, out = _overlapping_pairs(buf)[how]
    expected, _, _ = normalize_ref(x.copy())
    y = cbn.normalize_batch(x, out=out)
    assert y is out
    assert_close(out, expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_partial_overlap_in_a_1d_batch(rng, dtype):
    buf = random_array(rng, 41, dtype)
    x, out = buf[:-1], buf[1:]
    expected, _, _ = normalize_ref(x.copy())
    cbn.normalize_batch(x, out=out)
    assert_close(out, expected)


# Input layouts -----------------------------------------------------------------

def _views(rng, dtype):
    """name -> (x, axis): inputs whose memory layout is not plain C order."""
    a2 = random_array(rng, (11, 9), dtype)
    a4 = random_array(rng, (4, 6, 5, 8), dtype)
    return {
        "transposed": (a2.T, 0),
        "transposed-4d": (a4.transpose(0, 3, 1, 2), (0, 2, 3)),
        "step-sliced": (a2[::2, ::3], 0),
        "fortran-order": (np.asfortranarray(a2), 0),
        "fortran-order-4d": (np.asfortranarray(a4), (0, 2, 3)),
        "negative-strides": (a2[::-1, ::-2], 0),
        "negative-strides-4d": (a4[::-1, :, ::-1, 1::2], (0, 2, 3)),
        "channels-sliced-nchw": (a4[:, ::2], (0, 2, 3)),
        "byte-swapped": (a2.astype(a2.dtype.newbyteorder()), 0),
        # Four identical copies of a2 along a zero-stride batch axis.
        "zero-stride-broadcast": (np.broadcast_to(a2, (4, 11, 9)), (0, 1)),
    }


VIEW_NAMES = list(_views(np.random.default_rng(0), np.float64))


@pytest.mark.parametrize("view", VIEW_NAMES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32])
def test_non_contiguous_input_gives_the_same_result(rng, view, dtype):
    x, axis = _views(rng, dtype)[view]
    gamma = per_feature(rng, x.shape, axis)
    y = cbn.normalize_batch(x, gamma, 1.0, axis=axis)
    assert y.shape == x.shape
    # A byte-swapped float64 may come back in either byte order.
    assert y.dtype.kind == "f" and y.dtype.itemsize == result_dtype(dtype).itemsize
    assert_close(y, normalize_ref(x, gamma, 1.0, axis=axis)[0],
                 dtype=result_dtype(dtype), scale=3.0)


def _random_view(rng, dtype):
    """(x, axis): a random 0-D..5-D view (steps, flips, axis order) and batch axes."""
    ndim = int(rng.integers(0, 6))
    shape = tuple(int(s) for s in rng.integers(1, 6, ndim))
    base = random_array(rng, tuple(2 * s for s in shape), dtype)
    steps = tuple(slice(None, None, int(rng.choice([1, 2, -1, -2]))) for _ in shape)
    x = base[steps][tuple(slice(0, s) for s in shape)].transpose(rng.permutation(ndim))
    axis = None
    if ndim and rng.random() < 0.9:
        picked = rng.choice(ndim, size=int(rng.integers(1, ndim + 1)), replace=False)
        # Mix negative and non-negative spellings of the same axes.
        axis = tuple(int(a) - ndim * int(rng.random() < 0.3) for a in picked)
    return x, axis


@pytest.mark.parametrize("seed", range(40))
def test_random_views_and_axes_match_oracle(seed):
    # Complements the hand-picked layouts above with combinations nobody
    # thought of; seeded, so a failure reproduces.
    rng = np.random.default_rng(seed)
    for dtype in (np.float64, np.float32, np.float16, np.int16):
        x, axis = _random_view(rng, dtype)
        F = feature_shape(x.shape, axis)
        gamma, beta = rng.uniform(0.5, 2, F), rng.standard_normal(F)
        y = cbn.normalize_batch(x, gamma, beta, axis=axis)
        assert y.shape == x.shape
        assert_close(y, normalize_ref(x, gamma, beta, axis=axis)[0], scale=5.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m", [1, 2, 3, 7, 8, 9, 16, 17, 33, 100])
@pytest.mark.parametrize("n", [1, 3, 8, 17, 64, 65])
def test_n_by_c_sizes_around_vector_widths(rng, m, n, dtype):
    # Vectorized kernels fail first at remainders: sizes just off 4/8/16.
    x = random_array(rng, (m, n), dtype)
    y, mean, var = cbn.normalize_batch(x, return_stats=True)
    expected, mean_ref, var_ref = normalize_ref(x)
    assert_close(y, expected)
    assert_stats_close(mean, var, mean_ref, var_ref)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("inner", [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100])
def test_nchw_inner_sizes_around_vector_widths(rng, inner, dtype):
    x = random_array(rng, (3, 5, inner, 1), dtype)
    gamma = rng.uniform(0.5, 2, 5)
    y, mean, var = cbn.normalize_batch(x, gamma, axis=(0, 2, 3), return_stats=True)
    expected, mean_ref, var_ref = normalize_ref(x, gamma, axis=(0, 2, 3))
    assert_close(y, expected, scale=2.0)
    assert_stats_close(mean, var, mean_ref, var_ref)


# Statistics ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape, axis", LAYOUT_CASES, ids=LAYOUT_IDS)
def test_return_stats_gives_float64_biased_batch_statistics(rng, shape, axis, dtype):
    x = random_array(rng, shape, dtype)
    y, mean, var = cbn.normalize_batch(x, axis=axis, return_stats=True)
    F = feature_shape(shape, axis)
    assert mean.shape == var.shape == F
    assert mean.dtype == var.dtype == np.float64
    b = batch_axes(len(shape), axis)
    x64 = x.astype(np.float64)
    # numpy's own var with ddof=0 is a second, independent reference.
    assert_stats_close(mean, var, np.mean(x64, axis=b), np.var(x64, axis=b, ddof=0))
    assert_close(y, normalize_ref(x, axis=axis)[0])


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape, axis", LAYOUT_CASES, ids=LAYOUT_IDS)
def test_given_mean_and_var_are_used_and_returned(rng, shape, axis, dtype):
    x = random_array(rng, shape, dtype)
    F = feature_shape(shape, axis)
    mean = rng.standard_normal(F)
    var = rng.uniform(0.0, 3.0, F)
    gamma = rng.uniform(0.5, 2, F)
    y, mean_out, var_out = cbn.normalize_batch(x, gamma, 0.25, axis=axis, mean=mean,
                                               var=var, return_stats=True)
    assert mean_out.dtype == var_out.dtype == np.float64
    assert np.array_equal(mean_out, mean) and np.array_equal(var_out, var)
    expected, _, _ = normalize_ref(x, gamma, 0.25, axis=axis, mean=mean, var=var)
    # Integer data is far from the given mean, so y is large: scale atol.
    scale = max(1.0, float(np.abs(expected).max()))
    assert_close(y, expected, scale=scale)


def test_given_statistics_of_another_dtype_are_returned_as_float64(rng):
    x = random_array(rng, (10, 4), np.float64)
    mean = rng.standard_normal(4).astype(np.float32)
    var = rng.uniform(0.5, 2, 4).astype(np.float32)
    y, mean_out, var_out = cbn.normalize_batch(x, mean=mean, var=var, return_stats=True)
    assert mean_out.dtype == var_out.dtype == np.float64
    assert np.array_equal(mean_out, mean.astype(np.float64))
    assert np.array_equal(var_out, var.astype(np.float64))
    assert_close(y, normalize_ref(x, mean=mean, var=var)[0])


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape, axis", [((1, 5), 0), ((1, 3, 1, 1), (0, 2, 3)),
                                         ((4, 1, 3), 1), ((1,), None)])
def test_single_sample_batch_has_zero_variance_and_gives_beta(rng, shape, axis, dtype):
    x = random_array(rng, shape, dtype)
    F = feature_shape(shape, axis)
    beta = np.asarray(rng.integers(-8, 8, F) / 4.0)  # exact in every float dtype
    y, mean, var = cbn.normalize_batch(x, 2.0, beta, axis=axis, return_stats=True)
    assert np.array_equal(var, np.zeros(F))
    assert np.array_equal(mean, x.astype(np.float64).reshape(F))
    expected = np.broadcast_to(np.expand_dims(beta, batch_axes(len(shape), axis)), shape)
    assert np.array_equal(y, expected.astype(result_dtype(dtype)))


def test_empty_axis_tuple_makes_every_element_its_own_batch(rng):
    # As numpy.mean(axis=()): nothing is reduced, F is x's whole shape.
    x = random_array(rng, (3, 4), np.float64)
    beta = rng.standard_normal((3, 4))
    y, mean, var = cbn.normalize_batch(x, None, beta, axis=(), return_stats=True)
    assert np.array_equal(mean, x) and np.array_equal(var, np.zeros((3, 4)))
    assert np.array_equal(y, beta)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
@pytest.mark.parametrize("shape, axis", LAYOUT_CASES, ids=LAYOUT_IDS)
def test_eps_zero_equals_scipy_zscore(rng, shape, axis, dtype):
    x = random_array(rng, shape, dtype)
    expected = scipy.stats.zscore(x.astype(np.float64), axis=axis)
    assert np.all(np.isfinite(expected)), "test data must have nonzero variance"
    y = cbn.normalize_batch(x, axis=axis, eps=0.0)
    assert y.dtype == result_dtype(dtype)
    assert_close(y, expected)


# Empty arrays ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32])
@pytest.mark.parametrize("shape, axis", [((5, 0), 0), ((3, 0, 4), (0, 2)),
                                         ((2, 3, 0), (0, 1)), ((4, 0, 2, 2), (0, 2, 3))])
def test_empty_feature_axes_give_empty_results(shape, axis, dtype):
    x = np.zeros(shape, dtype)
    F = feature_shape(shape, axis)
    y, mean, var = cbn.normalize_batch(x, np.ones(F), np.zeros(F), axis=axis,
                                       return_stats=True)
    assert y.shape == shape and y.dtype == result_dtype(dtype)
    assert mean.shape == var.shape == F
    assert mean.dtype == var.dtype == np.float64


def test_empty_batch_with_given_statistics_gives_an_empty_result():
    # Only training needs m > 0 (for the batch statistics); inference on an
    # empty batch has nothing to compute.
    x = np.zeros((0, 3))
    y = cbn.normalize_batch(x, mean=np.zeros(3), var=np.ones(3))
    assert y.shape == (0, 3) and y.dtype == np.float64


# float16 specifics ------------------------------------------------------------

@pytest.mark.parametrize("shape, axis", [((64, 7), 0), ((8, 4, 6, 6), (0, 2, 3))])
def test_float16_is_returned_as_float16_with_float16_rounding(rng, shape, axis):
    x = random_array(rng, shape, np.float16)
    F = feature_shape(shape, axis)
    gamma, beta = rng.uniform(0.5, 2, F), rng.standard_normal(F)
    y, mean, var = cbn.normalize_batch(x, gamma, beta, axis=axis, return_stats=True)
    expected, mean_ref, var_ref = normalize_ref(x, gamma, beta, axis=axis)
    assert y.dtype == np.float16
    assert_close(y, expected, scale=2.0)
    # The statistics are float64 and taken in float64 precision, as for any dtype.
    assert_stats_close(mean, var, mean_ref, var_ref)


def _unaligned(a):
    """A copy of ``a`` one byte off its dtype's alignment (NumPy allows it;
    C does not, so cbn must never hand such memory to the kernels)."""
    buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
    u = buf[1:].view(a.dtype).reshape(a.shape)
    u[...] = a
    assert not u.flags.aligned
    return u


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((37, 5), 0), ((6, 3, 11), (0, 2))])
def test_unaligned_inputs_and_outputs_give_the_aligned_results(rng, dtype, shape, axis):
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    C = shape[1]
    g, b = rng.standard_normal(C), rng.standard_normal(C)
    y, m, v = cbn.normalize_batch(x, g, b, axis=axis, return_stats=True)
    ye = cbn.normalize_batch(x, g, b, axis=axis, mean=m, var=v)
    dx, dg, db = cbn.normalize_batch_backward(dy, x, m, v, g, axis=axis)

    out = _unaligned(np.zeros_like(x))
    y2, m2, v2 = cbn.normalize_batch(_unaligned(x), _unaligned(g), _unaligned(b),
                                     axis=axis, return_stats=True, out=out)
    assert y2 is out
    ye2 = cbn.normalize_batch(_unaligned(x), g, b, axis=axis,
                              mean=_unaligned(m), var=_unaligned(v))
    dx2, dg2, db2 = cbn.normalize_batch_backward(_unaligned(dy), _unaligned(x),
                                                 _unaligned(m), _unaligned(v),
                                                 _unaligned(g), axis=axis,
                                                 out=_unaligned(np.zeros_like(x)))
    for a, e in [(y2, y), (m2, m), (v2, v), (ye2, ye), (dx2, dx), (dg2, dg), (db2, db)]:
        assert a.tobytes() == e.tobytes()
