"""Accuracy of float32 results: far from zero, and the contract on adversarial data.

A kernel that folds the mean into a float32 shift (PyTorch's
``y = x * alpha + (beta - mean * alpha)``) loses about |mean|/std ulps; cbn
must keep ``x - mean`` exact enough that float32 output stays within 1e-5 of
the truth. The reference is the float64 oracle applied to the *same* float32
values, so what is measured is cbn's error alone, not the quantization of the
data to float32.

The second half holds every float32 result to the accuracy contract
(``checks.CONTRACT``: mean 1e-6 standard deviations, variance 1e-6
relative, y 1e-5, dx, dgamma and dbeta 1e-4), the bound any method of the
kernels must meet, on the data that break naive methods:

* per-feature means far from zero (1e3, 1e4, 1e6 standard deviations),
  where sums of x and x**2 in float32 cancel;
* heavy tails (Student t with 2 degrees of freedom: infinite variance, a few
  huge values per feature);
* a tiny spread around a mean of 1 (variance 1e-8), the spread in the last
  bits of float32;
* one outlier of 1e4 standard deviations in each feature;
* all-positive data (ReLU outputs, half of them exactly 0),

at every SIMD level and at 1 and 2 threads, in every loop shape with
several chunks, segments and column blocks (shapes from the core's tuning
constants).
"""
import numpy as np
import pytest

import cbn
from cbn import kernels
from checks import (CONTRACT, assert_close, assert_grads_within_contract,
                    assert_stats_close, assert_stats_within_contract,
                    assert_y_within_contract)
from oracle import backward_ref, batch_axes, feature_shape, normalize_ref

# |y - y_ref| at every offset: the contract's bound for outputs of order one.
MAX_ABS_ERROR = CONTRACT["y"]


def offset_data(rng, shape, axis, offset):
    """float32 data with std 1 and per-feature means spread over [offset, 2 offset)."""
    means = offset * rng.uniform(1.0, 2.0, feature_shape(shape, axis))
    means = np.expand_dims(means, batch_axes(len(shape), axis))
    return (means + rng.standard_normal(shape)).astype(np.float32)


LAYOUTS = [((1024, 256), 0), ((16, 8, 32, 32), (0, 2, 3))]
LAYOUT_IDS = ["n-by-c", "nchw"]


@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
@pytest.mark.parametrize("offset", [1e3, 1e4, 1e6])
@pytest.mark.parametrize("shape, axis", LAYOUTS, ids=LAYOUT_IDS)
def test_float32_output_stays_accurate_far_from_zero(rng, shape, axis, offset, affine):
    x = offset_data(rng, shape, axis, offset)
    F = feature_shape(shape, axis)
    gamma, beta = None, None
    if affine:
        gamma, beta = rng.uniform(0.5, 2.0, F), rng.standard_normal(F)
    y, mean, var = cbn.normalize_batch(x, gamma, beta, axis=axis, return_stats=True)
    y_ref, mean_ref, var_ref = normalize_ref(x, gamma, beta, axis=axis)
    error = np.abs(y.astype(np.float64) - y_ref).max()
    print(f"offset {offset:g} {shape} affine={affine}: max |y - y_ref| = {error:.3g}")
    assert y.dtype == np.float32
    assert error <= MAX_ABS_ERROR
    # Statistics accumulated in double: the mean to round-off, and the variance
    # (about 1, from values about 1e6) without E[x^2] - mean^2 cancellation.
    assert_stats_close(mean, var, mean_ref, var_ref)


@pytest.mark.parametrize("offset", [1e3, 1e4, 1e6])
@pytest.mark.parametrize("shape, axis", LAYOUTS, ids=LAYOUT_IDS)
def test_float32_output_with_given_statistics_stays_accurate(rng, shape, axis, offset):
    # Inference takes the same path through x - mean with a float64 mean.
    x = offset_data(rng, shape, axis, offset)
    _, mean, var = normalize_ref(x, axis=axis)
    y = cbn.normalize_batch(x, axis=axis, mean=mean, var=var)
    y_ref, _, _ = normalize_ref(x, axis=axis, mean=mean, var=var)
    error = np.abs(y.astype(np.float64) - y_ref).max()
    print(f"offset {offset:g} {shape} given stats: max |y - y_ref| = {error:.3g}")
    assert error <= MAX_ABS_ERROR


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((64, 5), 0), ((4, 5, 8, 8), (0, 2, 3)),
                                         ((4, 8, 8, 5), (0, 1, 2))])
def test_constant_feature_far_from_zero_gives_exactly_beta(rng, shape, axis, dtype):
    # Feature 2 is constant at 3e7 (exact in float32); the others are noise, so
    # this is the per-feature path, not a whole-array special case.
    x = rng.standard_normal(shape).astype(dtype)
    feature = (Ellipsis, 2) if axis == (0, 1, 2) else (slice(None), 2)
    x[feature] = 3e7
    beta = np.array([0.5, -1.25, 3.0, 0.0, 7.5])  # exact in float32
    gamma = np.array([1.0, 2.0, 0.75, 1.5, -1.0])
    y, mean, var = cbn.normalize_batch(x, gamma, beta, axis=axis, return_stats=True)
    assert mean[2] == 3e7 and var[2] == 0.0
    assert np.all(y[feature] == dtype(3.0))
    # The same holds with the statistics given, as at inference.
    y = cbn.normalize_batch(x, gamma, beta, axis=axis, mean=mean, var=var)
    assert np.all(y[feature] == dtype(3.0))
    # And the other features are unaffected.
    expected, _, _ = normalize_ref(x, gamma, beta, axis=axis)
    assert_close(y, expected)


# ------------------------------------------------------------ the contract ---

CHUNK, SEG_CHUNKS, ROW_BLOCK = kernels.CHUNK, kernels.SEG_CHUNKS, kernels.ROW_BLOCK

#: (shape, batch axes) per loop shape: planes whose features span more than
#: one segment, rows with several chunks of rows, rows wider than a column
#: block, channels-last.
CONTRACT_LAYOUTS = {
    "planes": ((3, 5, SEG_CHUNKS * CHUNK // 3 + 37), (0, 2)),
    "rows": ((4 * CHUNK + 9, 6), 0),
    "wide-rows": ((40, ROW_BLOCK + 33), 0),
    "nhwc": ((6, 24, 20, 12), (0, 1, 2)),
}

ADVERSARIAL = ["offset0", "offset1e3", "offset1e4", "offset1e6", "student-t2",
               "tiny-variance", "outlier", "relu"]


def test_contract_layouts_reach_their_paths():
    (n, c, inner), _ = CONTRACT_LAYOUTS["planes"]
    assert n * inner > SEG_CHUNKS * CHUNK and inner > 1
    assert CONTRACT_LAYOUTS["rows"][0][0] > 2 * CHUNK
    assert CONTRACT_LAYOUTS["wide-rows"][0][1] > ROW_BLOCK


def adversarial(kind, rng, shape, axis):
    """float32 data of one adversarial kind (see the module docstring)."""
    z = rng.standard_normal(shape)
    b = batch_axes(len(shape), axis)
    if kind.startswith("offset"):
        means = float(kind[len("offset"):]) * rng.uniform(1.0, 2.0, feature_shape(shape, axis))
        x = np.expand_dims(means, b) + z
    elif kind == "student-t2":
        x = rng.standard_t(2, shape)
    elif kind == "tiny-variance":
        x = 1.0 + 1e-4 * z
    elif kind == "outlier":
        # 1e4 once in every feature, at a random batch position: x seen
        # batch-first as (batch, feature), one element set per column
        order = list(b) + [i for i in range(len(shape)) if i not in b]
        batch_first = np.transpose(z, order)
        columns = batch_first.reshape(np.prod(batch_first.shape[:len(b)]), -1)
        columns[rng.integers(0, columns.shape[0], columns.shape[1]),
                np.arange(columns.shape[1])] = 1e4
        x = np.transpose(columns.reshape(batch_first.shape), np.argsort(order))
    elif kind == "relu":
        x = 3.0 * np.maximum(z, 0.0)
    else:
        raise ValueError(kind)
    return np.ascontiguousarray(x, dtype=np.float32)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("kind", ADVERSARIAL)
@pytest.mark.parametrize("layout", list(CONTRACT_LAYOUTS))
def test_float32_results_meet_the_contract(simd_level, threads, layout, kind, n_threads):
    rng = np.random.default_rng([ADVERSARIAL.index(kind), list(CONTRACT_LAYOUTS).index(layout)])
    shape, axis = CONTRACT_LAYOUTS[layout]
    threads(n_threads)
    x = adversarial(kind, rng, shape, axis)
    F = feature_shape(shape, axis)
    gamma, beta = rng.uniform(0.5, 2.0, F), rng.standard_normal(F)
    dy = rng.standard_normal(shape).astype(np.float32)

    y, mean, var = cbn.normalize_batch(x, gamma, beta, axis=axis, return_stats=True)
    stats = cbn.batch_stats(x, axis=axis)
    grads = cbn.normalize_batch_backward(dy, x, mean, var, gamma, axis=axis)

    y_ref, mean_ref, var_ref = normalize_ref(x, gamma, beta, axis=axis)
    refs = backward_ref(dy, x, mean_ref, var_ref, gamma, axis=axis)
    xhat, _, _ = normalize_ref(x, axis=axis, mean=mean_ref, var=var_ref)
    assert_stats_within_contract(mean, var, mean_ref, var_ref)
    assert_stats_within_contract(stats.mean, stats.var(), mean_ref, var_ref)
    assert_y_within_contract(y, y_ref)
    assert_grads_within_contract(grads, refs, dy, xhat, axis)


def test_the_contract_checks_fail_beyond_their_bounds(rng):
    # Each helper raises just past its bound (and not just inside it), so a
    # kernel that loses accuracy cannot pass them.
    mean_ref, var_ref = np.array([1e6, 0.0]), np.array([4.0, 1e-8])
    step = 1.01 * CONTRACT["mean"] * np.sqrt(var_ref)
    assert_stats_within_contract(mean_ref + 0.98 * step, var_ref, mean_ref, var_ref)
    with pytest.raises(AssertionError, match="mean"):
        assert_stats_within_contract(mean_ref + step, var_ref, mean_ref, var_ref)
    with pytest.raises(AssertionError, match="var"):
        assert_stats_within_contract(mean_ref, var_ref * (1 + 1.01 * CONTRACT["var"]),
                                     mean_ref, var_ref)
    y_ref = np.array([0.5, -200.0])
    with pytest.raises(AssertionError, match="y"):
        assert_y_within_contract(y_ref + [1.01 * CONTRACT["y"], 0.0], y_ref)
    with pytest.raises(AssertionError, match="y"):
        assert_y_within_contract(y_ref * (1 + 1.01 * CONTRACT["y"]), y_ref)
    with pytest.raises(AssertionError, match="y"):
        assert_y_within_contract(np.array([np.nan, -200.0]), y_ref)
    x = rng.standard_normal((64, 3))
    dy = rng.standard_normal((64, 3))
    _, m, v = normalize_ref(x)
    refs = backward_ref(dy, x, m, v)
    xhat, _, _ = normalize_ref(x, mean=m, var=v)
    assert_grads_within_contract(refs, refs, dy, xhat, 0)
    for k, what in enumerate(["dx", "dgamma", "dbeta"]):
        bad = list(refs)
        bad[k] = bad[k] + 1e-3 * np.abs(bad[k]).max() + 1e-3 * np.abs(dy).sum(axis=0).max()
        with pytest.raises(AssertionError, match=what):
            assert_grads_within_contract(bad, refs, dy, xhat, 0)


@pytest.mark.parametrize("kind", ["offset1e3", "tiny-variance"])
def test_the_adversarial_data_defeat_naive_float32_statistics(kind):
    # The data have teeth: the textbook one pass in float32,
    # var = E[x^2] - E[x]^2 (NumPy's pairwise sums, better than a loop's),
    # misses the contract on them, its mean by ~1e-3 standard deviations and
    # its variance by a factor of 2 to 400.
    shape, axis = CONTRACT_LAYOUTS["rows"]
    x = adversarial(kind, np.random.default_rng(1), shape, axis)
    _, mean_ref, var_ref = normalize_ref(x, axis=axis)
    mean = x.mean(axis=0, dtype=np.float32)
    var = (x * x).mean(axis=0, dtype=np.float32) - mean * mean
    with pytest.raises(AssertionError, match="beyond the contract"):
        assert_stats_within_contract(mean, var, mean_ref, var_ref)
