"""Thread-count invariance: 1 and 2 OpenMP threads give bitwise-equal results.

The C core promises a fixed reduction order, so the number of threads must
not change a single bit of any output (statistics included). The shapes are
large enough that a kernel parallelizes them, and include few-feature cases
(C = 3, F = ()) where the batch itself has to be split between threads. The
1-thread results are also checked against the oracle, so that the equality
is not between two equally wrong answers (and the parallel paths, which only
these sizes reach, are checked for correctness too).
"""
import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import cbn
from cbn.kernels import PARALLEL_MIN_WORK, ROW_BLOCK
from checks import assert_backward_close, assert_close, assert_stats_close
from oracle import backward_ref, feature_shape, normalize_ref

SHAPES = [
    ((64, 256, 16, 16), (0, 2, 3)),   # NCHW, many channels
    ((8, 3, 224, 224), (0, 2, 3)),    # NCHW, three channels: split the batch
    ((4096, 512), 0),                 # N x C
    ((300, 2 * ROW_BLOCK + 452), 0),  # N x C, three column blocks
    ((16, 32, 32, 64), (0, 1, 2)),    # NHWC
    ((1 << 21,), None),               # one feature
]
SHAPE_IDS = ["nchw", "nchw-c3", "n-by-c", "n-by-wide-c", "nhwc", "one-feature"]


def test_shapes_are_large_enough_to_run_in_parallel():
    assert all(np.prod(shape) >= PARALLEL_MIN_WORK for shape, _ in SHAPES)


@pytest.fixture(scope="module", autouse=True)
def require_openmp():
    # threadpoolctl can only limit an OpenMP runtime that is loaded; without
    # one the comparison below would be vacuous.
    if not any(info["user_api"] == "openmp" for info in threadpool_info()):
        pytest.skip("no OpenMP runtime loaded: cbn appears to be built without OpenMP")


def all_outputs(x, dy, gamma, beta, axis, mean0, var0):
    """Every output of both functions in both modes, by name."""
    y, mean, var = cbn.normalize_batch(x, gamma, beta, axis=axis, return_stats=True)
    y_given = cbn.normalize_batch(x, gamma, beta, axis=axis, mean=mean0, var=var0)
    dx, dgamma, dbeta = cbn.normalize_batch_backward(dy, x, mean, var, gamma, axis=axis)
    dx_f, dgamma_f, dbeta_f = cbn.normalize_batch_backward(
        dy, x, mean0, var0, gamma, axis=axis, batch_stats=False)
    return dict(y=y, mean=mean, var=var, y_given=y_given, dx=dx, dgamma=dgamma,
                dbeta=dbeta, dx_frozen=dx_f, dgamma_frozen=dgamma_f, dbeta_frozen=dbeta_f)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", SHAPES, ids=SHAPE_IDS)
def test_outputs_are_bitwise_equal_with_one_and_two_threads(rng, shape, axis, dtype):
    F = feature_shape(shape, axis)
    x = (3.0 + rng.standard_normal(shape, dtype=dtype))
    dy = rng.standard_normal(shape, dtype=dtype)
    gamma, beta = rng.uniform(0.5, 2.0, F), rng.standard_normal(F)
    mean0, var0 = 3.0 + 0.1 * rng.standard_normal(F), rng.uniform(0.5, 2.0, F)
    args = (x, dy, gamma, beta, axis, mean0, var0)
    with threadpool_limits(limits=1, user_api="openmp"):
        one = all_outputs(*args)
    with threadpool_limits(limits=2, user_api="openmp"):
        two = all_outputs(*args)
    for name in one:
        assert one[name].dtype == two[name].dtype, name
        assert one[name].shape == two[name].shape, name
        assert one[name].tobytes() == two[name].tobytes(), f"{name} depends on threads"
    y_ref, mean_ref, var_ref = normalize_ref(x, gamma, beta, axis=axis)
    assert_close(one["y"], y_ref, scale=3.0)
    assert_stats_close(one["mean"], one["var"], mean_ref, var_ref)
    y_ref, _, _ = normalize_ref(x, gamma, beta, axis=axis, mean=mean0, var=var0)
    assert_close(one["y_given"], y_ref, scale=3.0)
    expected = backward_ref(dy, x, one["mean"], one["var"], gamma, axis=axis)
    assert_backward_close((one["dx"], one["dgamma"], one["dbeta"]), expected,
                          dy, x, one["mean"], one["var"], axis, gamma)
    expected = backward_ref(dy, x, mean0, var0, gamma, axis=axis, batch_stats=False)
    assert_backward_close((one["dx_frozen"], one["dgamma_frozen"], one["dbeta_frozen"]),
                          expected, dy, x, mean0, var0, axis, gamma, batch_stats=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", SHAPES, ids=SHAPE_IDS)
def test_nan_omit_is_bitwise_equal_at_every_level_and_thread_count(rng, shape, axis, dtype,
                                                                   simd_level):
    # nan_policy='omit' (cbn_stats_omit): the fast statistics at the level,
    # then the features holding NaN recomputed in order, one per thread --
    # so neither the level nor the threads may change a bit of the features
    # with NaN, and the others are the plain kernels' (tested above).
    x = 3.0 + rng.standard_normal(shape, dtype=dtype)
    x[rng.random(shape) < 0.05] = np.nan
    results = []
    for n in (1, 2):
        with threadpool_limits(limits=n, user_api="openmp"):
            y, mean, var = cbn.normalize_batch(x, axis=axis, nan_policy="omit",
                                               return_stats=True, ddof=1)
            s = cbn.batch_stats(x, axis=axis, nan_policy="omit")
            grads = cbn.normalize_batch_backward(y, x, mean, var, axis=axis,
                                                 nan_policy="omit")
        results.append((y, mean, var, s.count, s.mean, s.m2, *grads))
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes(), "nan_policy='omit' depends on threads"
    x64 = x.astype(np.float64)
    mean_ref = np.nanmean(x64, axis=axis)
    var_ref = np.nanvar(x64, axis=axis, ddof=1)
    assert_stats_close(results[0][1], results[0][2], mean_ref, var_ref)
    np.testing.assert_array_equal(results[0][3], np.sum(~np.isnan(x), axis=axis))
    y_ref, _, _ = normalize_ref(x64, axis=axis, mean=mean_ref, var=var_ref)
    assert_close(results[0][0], y_ref.astype(dtype), scale=3.0)
    assert np.array_equal(np.isnan(results[0][0]), np.isnan(x))
