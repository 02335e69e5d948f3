"""The backward under nan_policy (normalize_batch_backward(..., nan_policy=)):
'omit' against the float64 oracle (oracle.backward_omit_ref) and against
central differences of the forward under 'omit' itself; 'raise' refuses
before writing. The forward's and zscore's cases are in test_zscore.py."""
import numpy as np
import pytest

import cbn
from checks import assert_backward_close, assert_matches_finite_differences
from oracle import backward_omit_ref, batch_axes, central_difference

LAYOUTS = [((8, 3, 5, 5), (0, 2, 3)), ((40, 6), 0), ((6, 5, 4), (0, 1)), ((30, 1), 0)]
LAYOUT_IDS = ["nchw", "rows", "channels-last", "one-feature"]


def with_nan(rng, shape, dtype, fraction=0.15):
    """3 + N(0, 1) data of ``dtype`` with about ``fraction`` of it NaN."""
    x = (3.0 + rng.standard_normal(shape)).astype(dtype)
    x[rng.random(shape) < fraction] = np.nan
    return x


def filled(x, dy, mean, axis):
    """x with its NaN replaced by the feature's mean and dy zeroed there: the
    data the omitted elements would be if they did not count, so that the
    tolerance scales (terms of the sums) ignore them."""
    keep = ~np.isnan(x)
    m = np.expand_dims(np.nan_to_num(mean), batch_axes(x.ndim, axis))
    return np.where(keep, x, m).astype(x.dtype), np.where(keep, dy, 0).astype(dy.dtype)


@pytest.mark.parametrize("batch_stats", [True, False], ids=["batch-stats", "frozen"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", LAYOUTS, ids=LAYOUT_IDS)
def test_backward_omit_matches_oracle(rng, shape, axis, dtype, batch_stats):
    x = with_nan(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    F = np.shape(np.nanmean(x, axis=axis))
    gamma = rng.uniform(0.5, 2.0, F)
    _, mean, var = cbn.normalize_batch(x, gamma, axis=axis, nan_policy="omit",
                                       return_stats=True)
    got = cbn.normalize_batch_backward(dy, x, mean, var, gamma, axis=axis,
                                       batch_stats=batch_stats, nan_policy="omit")
    ref = backward_omit_ref(dy, x, mean, var, gamma, axis=axis, batch_stats=batch_stats)
    assert np.all(got[0][np.isnan(x)] == 0), "dx must be 0 where x is NaN"
    assert np.isfinite(var).all()  # every feature has values left
    xf, dyf = filled(x, dy, mean, axis)
    assert_backward_close(got, ref, dyf, xf, mean, var, axis, gamma=gamma,
                          batch_stats=batch_stats)


def test_backward_omit_of_an_all_nan_feature_is_zero(rng):
    x = rng.standard_normal((10, 3))
    x[:, 1] = np.nan
    dy = rng.standard_normal(x.shape)
    _, mean, var = cbn.normalize_batch(x, axis=0, nan_policy="omit", return_stats=True)
    dx, dgamma, dbeta = cbn.normalize_batch_backward(dy, x, mean, var, nan_policy="omit")
    assert np.all(dx[:, 1] == 0) and dgamma[1] == 0 and dbeta[1] == 0
    assert np.all(np.isfinite(dx))


@pytest.mark.parametrize("shape, axis", [((5, 3), 0), ((3, 2, 2, 2), (0, 2, 3))],
                         ids=["rows", "nchw"])
def test_backward_omit_matches_finite_differences(rng, shape, axis):
    # The gradient of sum(w * normalize_batch(x, gamma, beta, nan_policy='omit'))
    # with respect to the values of x that are not NaN, and to gamma and beta.
    x = 1.0 + rng.standard_normal(shape)
    x[rng.random(shape) < 0.25] = np.nan
    F = np.shape(np.nanmean(x, axis=axis))
    gamma = rng.uniform(0.5, 2.0, F)
    beta = rng.standard_normal(F)
    w = rng.standard_normal(shape)

    def loss():
        y = cbn.normalize_batch(x, gamma, beta, axis=axis, nan_policy="omit")
        return float(np.nansum(w * y))

    _, mean, var = cbn.normalize_batch(x, gamma, beta, axis=axis, nan_policy="omit",
                                       return_stats=True)
    dx, dgamma, dbeta = cbn.normalize_batch_backward(w, x, mean, var, gamma, axis=axis,
                                                     nan_policy="omit")
    num = central_difference(loss, x)
    keep = ~np.isnan(x)
    assert_matches_finite_differences(dx[keep], num[keep])
    assert np.all(dx[~keep] == 0)
    assert_matches_finite_differences(dgamma, central_difference(loss, gamma))
    assert_matches_finite_differences(dbeta, central_difference(loss, beta))


@pytest.mark.parametrize("shape, axis", LAYOUTS[:2], ids=LAYOUT_IDS[:2])
def test_backward_raise_refuses_nan_and_writes_nothing(rng, shape, axis):
    x = with_nan(rng, shape, np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    F = np.shape(np.nanmean(x, axis=axis))
    mean, var = np.zeros(F), np.ones(F)
    out = np.full(shape, 7.0, np.float32)
    with pytest.raises(ValueError, match=r"contains NaN \(nan_policy='raise'\)"):
        cbn.normalize_batch_backward(dy, x, mean, var, axis=axis, out=out,
                                     nan_policy="raise")
    assert np.all(out == 7.0)
    clean = np.nan_to_num(x)
    a = cbn.normalize_batch_backward(dy, clean, mean, var, axis=axis, nan_policy="raise")
    b = cbn.normalize_batch_backward(dy, clean, mean, var, axis=axis)
    for u, v in zip(a, b):
        assert u.tobytes() == v.tobytes()


def test_backward_omit_without_nan_is_the_plain_backward(rng):
    x = rng.standard_normal((16, 4, 3, 3)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    _, mean, var = cbn.normalize_batch(x, axis=(0, 2, 3), return_stats=True)
    a = cbn.normalize_batch_backward(dy, x, mean, var, axis=(0, 2, 3), nan_policy="omit")
    b = cbn.normalize_batch_backward(dy, x, mean, var, axis=(0, 2, 3))
    for u, v in zip(a, b):
        assert u.tobytes() == v.tobytes()


def test_backward_omit_in_place_reads_dy_before_writing(rng):
    # out=dy: the features with NaN read dy again, so dx goes elsewhere first.
    x = with_nan(rng, (12, 3), np.float64)
    dy = rng.standard_normal(x.shape)
    _, mean, var = cbn.normalize_batch(x, nan_policy="omit", return_stats=True)
    expected = cbn.normalize_batch_backward(dy, x, mean, var, nan_policy="omit")
    got = cbn.normalize_batch_backward(dy, x, mean, var, out=dy, nan_policy="omit")
    assert got[0] is dy
    for u, v in zip(got, expected):
        assert u.tobytes() == v.tobytes()


def test_backward_unknown_nan_policy_raises():
    with pytest.raises(ValueError, match=r"^nan_policy must be"):
        cbn.normalize_batch_backward(np.ones((3, 2)), np.ones((3, 2)), np.zeros(2),
                                     np.ones(2), nan_policy="ignore")
