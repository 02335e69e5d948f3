"""Numbers at the edges: constant features, huge and tiny magnitudes, eps=0,
NaN and Inf, and arrays of more than 2**31 elements.

What each edge must give is stated in docs/math.rst ("Edge cases"); the
tests below check exactly that, at every SIMD level the CPU supports, and
through every loop shape of the kernels: features as contiguous runs
(NCHW) or as columns of rows (N x C, NHWC), each either one thread per
feature or with a feature's batch shared by two threads (the "split" paths,
taken for few features and at least 65536 elements when two threads run).
"""
import os
import warnings

import numpy as np
import pytest

import cbn
from cbn import kernels
from oracle import assert_close, backward_ref, normalize_ref

LEVELS = kernels.simd_levels()


@pytest.fixture(params=LEVELS)
def level(request):
    """Run the test at each supported SIMD level, then restore the default."""
    before = kernels.get_simd()
    kernels.set_simd(request.param)
    yield request.param
    kernels.set_simd(before)


@pytest.fixture
def threads():
    """Set the thread count for the test; restore the default afterwards."""
    yield cbn.set_num_threads
    cbn.set_num_threads(0)


# name: (shape, axis, threads). With 2 threads and >= 65536 elements, few
# features (or column blocks) take the split paths, many the parallel loop
# over features.
PATHS = {
    "rows": ((300, 7), 0, 1),
    "runs": ((4, 3, 37), (0, 2), 1),
    "rows-split": ((40000, 3), 0, 2),
    "runs-split": ((8, 2, 8192), (0, 2), 2),
    "rows-many": ((50, 1500), 0, 2),         # two column blocks, split
    "runs-parallel": ((4, 16, 1100), (0, 2), 2),
}


def feature_index(shape, axis):
    """An index that selects every element of feature 0 along the feature axes."""
    batch = (axis,) if np.ndim(axis) == 0 else axis
    batch = tuple(a % len(shape) for a in batch)
    return tuple(slice(None) if i in batch else 0 for i in range(len(shape)))


# A constant feature gives exactly beta ---------------------------------------

@pytest.mark.parametrize("value", [3e7, -3e7, 1.0, 0.0, 1e-3, 16777217.0, 1e30])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", list(PATHS))
def test_constant_feature_gives_exactly_beta(level, threads, path, dtype, value, rng):
    shape, axis, nt = PATHS[path]
    threads(nt)
    x = np.full(shape, value, dtype)
    F = normalize_ref(x, axis=axis)[1].shape
    gamma = rng.uniform(0.5, 2.0, F)
    beta = rng.standard_normal(F)
    y, mean, var = cbn.normalize_batch(x, gamma, beta, axis=axis, return_stats=True)
    # x - mean is exactly 0 when mean is exactly the value, so y is beta
    # rounded once to x's dtype: no +-1 from a mean that is off by an ulp.
    np.testing.assert_array_equal(mean, np.full(F, dtype(value), np.float64))
    np.testing.assert_array_equal(var, 0.0)
    expected = np.broadcast_to(np.expand_dims(beta, tuple(np.atleast_1d(axis))), shape)
    np.testing.assert_array_equal(y, expected.astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_channel_through_a_layer_gives_exactly_beta(dtype, rng):
    bn = cbn.BatchNorm2d(3, dtype=dtype)
    bn.beta = [0.25, -1.5, 2.0]
    x = rng.standard_normal((4, 3, 5, 5)).astype(dtype)
    x[:, 1] = 3e7
    y = bn(x)
    np.testing.assert_array_equal(y[:, 1], dtype(-1.5))
    np.testing.assert_allclose(bn.running_var[1], 0.9, rtol=1e-7)  # 0.9*1 + 0.1*0


# float32 near 1e20 .. 1e30: the variance lives in double ------------------

@pytest.mark.parametrize("scale", [1e20, 1e25, 1e30, 3e33])
@pytest.mark.parametrize("path", list(PATHS))
def test_huge_float32_data_gives_finite_correct_output(level, threads, path, scale, rng):
    shape, axis, nt = PATHS[path]
    threads(nt)
    # Offsets of up to 30 sigma: the squares (up to 1e67) overflow float32
    # but not the double accumulators.
    x = (scale * (rng.standard_normal(shape) + 30.0)).astype(np.float32)
    y, mean, var = cbn.normalize_batch(x, 2.0, 0.5, axis=axis, return_stats=True)
    y_ref, mean_ref, var_ref = normalize_ref(x, 2.0, 0.5, axis=axis)
    assert np.isfinite(y).all() and np.isfinite(var).all()
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-12)
    np.testing.assert_allclose(var, var_ref, rtol=1e-10)
    assert_close(y, y_ref, scale=4.0)  # |y| up to ~ 2*4 sigma + 0.5


# The backward pass, eps = 0, over the documented range of spreads
# (docs/math.rst, "Edge cases"): float32 std in [1e-15, 1e18], float64 in
# [1e-150, 1e150], where invstd^3 alone would leave the range beyond 1e+-103.
@pytest.mark.parametrize("dtype, std", [
    (np.float32, 1e-15), (np.float32, 1e-6), (np.float32, 1e12), (np.float32, 1e18),
    (np.float64, 1e-150), (np.float64, 1e-100), (np.float64, 1e100), (np.float64, 1e150),
])
@pytest.mark.parametrize("path", list(PATHS))
def test_backward_is_accurate_for_tiny_and_huge_spreads(level, threads, path, dtype,
                                                        std, rng):
    shape, axis, nt = PATHS[path]
    threads(nt)
    x = (std * (rng.standard_normal(shape) + 3.0)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    _, mean, var = cbn.normalize_batch(x, axis=axis, eps=0, return_stats=True)
    dx, dgamma, dbeta = cbn.normalize_batch_backward(dy, x, mean, var, 2.0, axis=axis,
                                                     eps=0)
    dx_ref, dgamma_ref, dbeta_ref = backward_ref(dy, x, mean, var, 2.0, axis=axis, eps=0)
    # dx is of order 1/std: compare it in units of its largest value.
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    top = np.abs(dx_ref).max()
    np.testing.assert_allclose(dx / top, dx_ref / top, rtol=rtol, atol=rtol)
    m = dy.size // dbeta.size
    np.testing.assert_allclose(dgamma, dgamma_ref, rtol=rtol, atol=rtol * m)
    np.testing.assert_allclose(dbeta, dbeta_ref, rtol=rtol, atol=rtol * m)


# float64 near 1e150 .. 1e300: squares overflow, the kernels rescale -------

def scaled_reference(x, axis, eps, S):
    """The oracle computed on x/S (exact for a power of two S): the mean and
    variance scaled back (the variance may overflow to inf, its correctly
    rounded value) and y, which does not depend on S when eps does."""
    with np.errstate(over="ignore"):
        y, mean, var = normalize_ref(x / S, 1.5, 0.25, axis=axis, eps=eps / S / S)
        return y, mean * S, var * S * S


@pytest.mark.parametrize("scale", [1e150, 1e153, 1e154, 3e154, 1e155, 1e200, 1e300, 1e307])
@pytest.mark.parametrize("path", list(PATHS))
def test_huge_float64_data_gives_rescaled_statistics(level, threads, path, scale, rng):
    shape, axis, nt = PATHS[path]
    threads(nt)
    x = scale * (rng.standard_normal(shape) + 3.0)
    x.flat[::7] *= -1  # both signs: the shifted sums must not overflow either
    S = 2.0 ** np.ceil(np.log2(scale))
    y, mean, var = cbn.normalize_batch(x, 1.5, 0.25, axis=axis, return_stats=True)
    y_ref, mean_ref, var_ref = scaled_reference(x, axis, 1e-5, S)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-12)
    assert np.isfinite(mean).all()
    if np.isfinite(var_ref).all():
        # The documented promise: a variance that fits in a double is
        # returned, and y is the float64 result, whatever the sums did.
        np.testing.assert_allclose(var, var_ref, rtol=1e-10)
        assert_close(y, y_ref, scale=4.0)
    else:
        # Beyond the double range (std above ~1.3e154): var is +inf and y
        # is what the float64 formula gives, (x - mean)/sqrt(inf) = 0 -> beta.
        assert scale >= 1e154
        assert (var == np.inf).all()
        np.testing.assert_array_equal(y, 0.25)
        # The gradients follow the same formula: invstd = 0 makes them 0,
        # except where x - mean or sum(dy*(x - mean)) overflows (0*inf = NaN).
        dy = rng.standard_normal(shape)
        dx, dgamma, _ = cbn.normalize_batch_backward(dy, x, mean, var, 1.5, axis=axis)
        with np.errstate(over="ignore", invalid="ignore"):
            d = x - np.expand_dims(mean, axis)
            overflows = not (np.isfinite(d).all() and np.isfinite((dy * d).sum(axis)).all())
        for g in (dx, dgamma):
            assert ((g == 0) | np.isnan(g)).all() if overflows else (g == 0).all()


def test_huge_float64_feature_with_nan_stays_nan_alone(level, rng):
    x = 1e200 * rng.standard_normal((50, 3))
    x[:, 0] *= 1e-100   # a feature the fast path handles
    x[7, 1] = np.nan    # a feature the rescue must leave poisoned
    y, mean, var = cbn.normalize_batch(x, return_stats=True)
    assert np.isnan(y[:, 1]).all() and np.isnan(var[1])
    assert np.isfinite(y[:, 0]).all() and var[2] == np.inf
    y_ref, mean_ref, var_ref = normalize_ref(x[:, :1])
    np.testing.assert_allclose(var[:1], var_ref, rtol=1e-10)
    assert_close(y[:, :1], y_ref)


# Tiny values ---------------------------------------------------------------

@pytest.mark.parametrize("dtype, tiny", [(np.float64, 1e-310), (np.float32, 1e-42)])
@pytest.mark.parametrize("path", list(PATHS))
def test_subnormal_input_matches_oracle(level, threads, path, dtype, tiny, rng):
    shape, axis, nt = PATHS[path]
    threads(nt)
    x = (tiny * rng.standard_normal(shape)).astype(dtype)
    assert (np.abs(x[x != 0]) < np.finfo(dtype).tiny).all()  # really subnormal
    y, mean, var = cbn.normalize_batch(x, 2.0, 0.5, axis=axis, return_stats=True)
    y_ref, mean_ref, var_ref = normalize_ref(x, 2.0, 0.5, axis=axis)
    # y = 0.5 + (x - mean)*2/sqrt(eps): the subnormal part is far below an ulp.
    assert_close(y, y_ref)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-12, atol=1e-320)
    np.testing.assert_allclose(var, var_ref, rtol=1e-6, atol=1e-320)


@pytest.mark.parametrize("odd_std", [1e-42, 1e25])
@pytest.mark.parametrize("path", list(PATHS))
def test_feature_beyond_float32_coefficients_leaves_the_others_alone(level, threads, path,
                                                                     odd_std, rng):
    # The documented limits of float32 (docs/math.rst): with eps = 0 a
    # feature of std below 1/FLT_MAX normalizes to +-inf or NaN (its scale
    # overflows float32), and one of std above ~1e19 gets a dx without its
    # xhat*dgamma term (invstd^2 underflows). Either way the other features
    # -- in the rows layout, the other columns of its block -- are exact, and
    # the sums (dgamma, dbeta) stay right, being in double.
    shape, axis, nt = PATHS[path]
    threads(nt)
    x = rng.standard_normal(shape)
    odd = feature_index(shape, axis)
    x[odd] *= odd_std
    x = x.astype(np.float32)
    dy = rng.standard_normal(shape)
    dy[odd] *= min(1.0, odd_std)  # dx ~ dy/std within float32
    dy = dy.astype(np.float32)
    others = np.ones(shape, bool)
    others[odd] = False
    y, mean, var = cbn.normalize_batch(x, 1.5, 0.5, axis=axis, eps=0, return_stats=True)
    y_ref = normalize_ref(x, 1.5, 0.5, axis=axis, eps=0)[0]
    assert_close(y[others], y_ref[others], scale=6.0)
    if odd_std < 1:
        assert not np.isfinite(y[odd]).any()
    else:
        assert_close(y[odd], y_ref[odd], scale=6.0)
    dx, dgamma, dbeta = cbn.normalize_batch_backward(dy, x, mean, var, 1.5, axis=axis,
                                                     eps=0)
    dx_ref, dgamma_ref, dbeta_ref = backward_ref(dy, x, mean, var, 1.5, axis=axis, eps=0)
    top = np.abs(dx_ref[others]).max()
    np.testing.assert_allclose(dx[others] / top, dx_ref[others] / top, rtol=1e-5, atol=1e-5)
    m = dy.size // dgamma.size
    np.testing.assert_allclose(dgamma, dgamma_ref, rtol=1e-5, atol=1e-5 * m)
    np.testing.assert_allclose(dbeta, dbeta_ref, rtol=1e-5, atol=1e-5 * m)


@pytest.mark.parametrize("path", list(PATHS))
def test_subnormal_values_beside_normal_ones_with_eps_zero(level, threads, path, rng):
    shape, axis, nt = PATHS[path]
    threads(nt)
    x = rng.standard_normal(shape) * 1e-150  # squares ~1e-300: still normal
    x.flat[::11] = 4e-320  # subnormal
    y, mean, var = cbn.normalize_batch(x, axis=axis, eps=0.0, return_stats=True)
    y_ref, mean_ref, var_ref = normalize_ref(x, axis=axis, eps=0.0)
    assert_close(y, y_ref, scale=4.0)
    np.testing.assert_allclose(var, var_ref, rtol=1e-10)


# eps = 0 and a zero variance: NaN for that feature, as scipy.stats.zscore ----

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", list(PATHS))
def test_eps_zero_with_zero_variance_gives_nan_for_that_feature_only(level, threads,
                                                                     path, dtype, rng):
    scipy_stats = pytest.importorskip("scipy.stats")
    shape, axis, nt = PATHS[path]
    threads(nt)
    x = rng.standard_normal(shape).astype(dtype)
    const = feature_index(shape, axis)
    x[const] = 2.5
    y, mean, var = cbn.normalize_batch(x, 1.0, 0.5, axis=axis, eps=0, return_stats=True)
    assert var.flat[0] == 0.0
    assert np.isnan(y[const]).all()  # (x - mean)/0 = 0/0
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "catastrophic cancellation"
        z = scipy_stats.zscore(x.astype(np.float64), axis=axis)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(z))
    ok = ~np.isnan(z)
    assert_close(y[ok], z[ok] + 0.5, dtype=dtype, scale=4.0)


def test_eps_zero_with_zero_variance_backward_is_nan_but_dbeta(rng):
    x = rng.standard_normal((6, 3))
    x[:, 1] = 2.0
    dy = rng.standard_normal((6, 3))
    _, mean, var = cbn.normalize_batch(x, eps=0, return_stats=True)
    dx, dgamma, dbeta = cbn.normalize_batch_backward(dy, x, mean, var, eps=0)
    assert np.isnan(dx[:, 1]).all() and np.isnan(dgamma[1])
    np.testing.assert_allclose(dbeta, dy.sum(0), rtol=1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        dx_ref, dgamma_ref, _ = backward_ref(dy, x, mean, var, eps=0)
    assert_close(dx[:, [0, 2]], dx_ref[:, [0, 2]], scale=4.0)
    assert_close(dgamma[[0, 2]], dgamma_ref[[0, 2]], scale=10.0)


# NaN and Inf at every level and through the split paths ---------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", list(PATHS))
def test_nan_or_inf_poisons_only_its_feature_on_every_path(level, threads, path, dtype,
                                                           bad, rng):
    shape, axis, nt = PATHS[path]
    threads(nt)
    x = rng.standard_normal(shape).astype(dtype)
    poisoned = feature_index(shape, axis)
    x[poisoned].flat[len(x[poisoned].flat) // 2] = bad  # a view: writes x
    y, mean, var = cbn.normalize_batch(x, axis=axis, return_stats=True)
    assert np.isnan(y[poisoned]).all() and not np.isfinite(var.flat[0])
    clean = np.ones(shape, bool)
    clean[poisoned] = False
    assert np.isfinite(y[clean]).all()
    with np.errstate(invalid="ignore"):
        y_ref = normalize_ref(x, axis=axis)[0]
    assert_close(y[clean], y_ref[clean], dtype=dtype, scale=4.0)


# More than 2**31 elements -------------------------------------------------

BIG = 2**31 + 17   # = 5 * 23 * 67 * 109 * 2557


def mem_available():
    """Bytes the kernel says a new process could use (MemAvailable), or 0."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def chunked_stats(x2d, rows=1 << 22):
    """Mean and biased variance of each column of x2d, in float64, two
    passes over row chunks (the oracle, for arrays too big to widen at once)."""
    n = x2d.shape[0]
    s = np.zeros(x2d.shape[1])
    for i in range(0, n, rows):
        s += x2d[i:i + rows].sum(axis=0, dtype=np.float64)
    mean = s / n
    q = np.zeros(x2d.shape[1])
    for i in range(0, n, rows):
        d = x2d[i:i + rows].astype(np.float64) - mean
        q += np.einsum("ij,ij->j", d, d)
    return mean, q / n


def skip_unless_huge_allowed(need):
    """Skip, saying why, unless CBN_TEST_HUGE=1 and MemAvailable >= need bytes.

    The test takes about two minutes and 10 GiB, so the ordinary runs of the
    suite (the serial build, the wheels) leave it out; .ci/run runs it once
    on its own."""
    reason = None
    if os.environ.get("CBN_TEST_HUGE") != "1":
        reason = "set CBN_TEST_HUGE=1 to run it (about 2 minutes, 14 GiB)"
    elif mem_available() < need:
        reason = (f"needs {need / 2**30:.0f} GiB of available memory, "
                  f"MemAvailable is {mem_available() / 2**30:.1f} GiB")
    if reason:
        print(f"skipped: {reason}")
        pytest.skip(reason)


@pytest.mark.slow
def test_more_than_2_to_the_31_elements_normalized_in_place():
    skip_unless_huge_allowed(14 * 2**30)  # the array (8 GiB), chunk temporaries
    x = np.empty(BIG, np.float32)
    rng = np.random.default_rng(5)
    step = 1 << 26
    for i in range(0, BIG, step):  # mean 3, std 2, different per chunk a bit
        rng.standard_normal(out=x[i:i + step], dtype=np.float32)
        x[i:i + step] *= 2.0
        x[i:i + step] += 3.0 + (i // step) * 1e-3
    # Few features, each over 4e8 rows: element indices pass 2**31.
    a = x.reshape(BIG // 5, 5)
    mean_ref, var_ref = chunked_stats(a)
    around = slice(2**31 // 5 - 3, 2**31 // 5 + 4)  # the rows around element 2**31
    before = {"first": a[:4].astype(np.float64), "around": a[around].astype(np.float64),
              "last": a[-4:].astype(np.float64)}
    y, mean, var = cbn.normalize_batch(a, out=a, return_stats=True)
    assert y is a
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-11)
    np.testing.assert_allclose(var, var_ref, rtol=1e-11)
    invstd = 1 / np.sqrt(var_ref + 1e-5)
    for name, rows in zip(before, (a[:4], a[around], a[-4:])):
        np.testing.assert_allclose(rows, (before[name] - mean_ref) * invstd,
                                   rtol=1e-5, atol=1e-5, err_msg=name)
    # Many features (839845 columns of 2557 values): the other loop shape.
    b = x.reshape(2557, BIG // 2557)
    mean_ref, var_ref = chunked_stats(b, rows=64)
    last = b[-2:].astype(np.float64)
    _, mean, var = cbn.normalize_batch(b, out=b, return_stats=True)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(var, var_ref, rtol=1e-9)
    np.testing.assert_allclose(b[-2:], (last - mean_ref) / np.sqrt(var_ref + 1e-5),
                               rtol=1e-5, atol=1e-5)
