"""Tests of `cbn.zscore`, and of ``ddof``, ``nan_policy`` and masked arrays in
`cbn.normalize_batch` and `cbn.batch_stats` / `cbn.merge_stats`.

The oracle is SciPy, called at run time on the same data:

* ``scipy.stats.zscore`` for `cbn.zscore` (a drop-in for it) and for
  ``cbn.normalize_batch(x, eps=0, ...)``, which must equal it;
* ``scipy.stats.mstats.zscore`` (the same function under its masked-array
  name) and ``scipy.stats.zscore(x.filled(nan), nan_policy='omit')`` for
  ``numpy.ma.MaskedArray`` input;
* ``numpy.nanmean`` / ``numpy.nanvar`` (float64) for the statistics that
  ``return_stats`` and `cbn.batch_stats` give under ``nan_policy='omit'``.

The first part ports SciPy's own zscore test cases -- their data, and their
literal expected values where SciPy's tests state them:
scipy/stats/tests/test_stats.py (``TestZscore``; ``TestZmap``, whose
``zmap(x, x)`` is ``zscore(x)``), test_mstats_basic.py
(``TestVariability.test_zscore``, ``TestCompareWithStats.test_zscore``),
test_marray.py (``test_zscore``: a masked array against NaN-filled data under
'omit') and test_device_dtype.py (``test_zscore``: the dtype is kept). The
rest covers the shapes, axes, ddof values, dtypes, NaN patterns and masks
SciPy's cases leave out, random cases against SciPy (fixed seeds), the bad
arguments (the error type, and that ``out`` is left as it was) and the
merge of statistics computed with NaNs omitted.

Where cbn's specification and SciPy 1.17 differ, the specification wins and
the test says so:

* ddof must be a non-negative integer (SciPy takes -1 and 1.5);
* a masked array's result has exactly the input's mask (SciPy unmasks the
  NaN it writes over a constant or fully masked feature), and with ddof > 0
  its divisor is the number of *unmasked* values minus ddof (SciPy's masked
  path subtracts ddof from the full length), i.e. the 'omit' result;
* cbn need not warn on constant input (SciPy's "Precision loss occurred").

Tolerances: float64 rtol = atol = 1e-12, float32 2e-6, float16 1e-3 (one
float16 rounding step, against the float64 result rounded to float16); NaN
must be exactly where the oracle has NaN. The module needs SciPy (a test
extra, not a dependency of cbn) and is skipped without it.
"""
import warnings
import zlib

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

pytest.importorskip("scipy")
import scipy.stats  # noqa: E402
import scipy.stats.mstats  # noqa: E402

import cbn  # noqa: E402

#: (rtol = atol) of a result against the oracle, by result dtype.
TOL = {
    np.dtype(np.float64): 1e-12,
    np.dtype(np.float32): 2e-6,
    np.dtype(np.float16): 1e-3,
}

#: A value no computation here produces: an ``out`` still full of it after a
#: refused call was not written.
SENTINEL = -12345.0

SEEDS = list(range(20))


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def sp_zscore(a, **kwargs):
    """``scipy.stats.zscore``, quiet: SciPy warns on constant input
    ("Precision loss occurred") and on all-NaN slices; those warnings are
    SciPy's, and cbn is not required to give them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scipy.stats.zscore(a, **kwargs)


def sp_mstats_zscore(a, **kwargs):
    """``scipy.stats.mstats.zscore``, quiet (see sp_zscore)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scipy.stats.mstats.zscore(a, **kwargs)


def nan_stats(x, axis, ddof):
    """float64 nanmean and nanvar(ddof) over ``axis``, quiet (an all-NaN
    feature, or one with no more values than ddof, gives NaN)."""
    x = np.asarray(x, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (np.nanmean(x, axis=axis),
                np.nanvar(x, axis=axis, ddof=ddof))


def result_dtype(dtype):
    """The dtype rule of zscore: float16/32/64 kept, anything else float64."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def assert_values(res, ref, dtype):
    """``res`` (an array of ``dtype``) is NaN exactly where ``ref`` is, and
    elsewhere within the dtype's tolerance of ``ref``."""
    res = np.asarray(res)
    ref = np.asarray(ref, dtype=np.float64)
    assert res.dtype == np.dtype(dtype), (res.dtype, dtype)
    assert res.shape == ref.shape, (res.shape, ref.shape)
    assert_array_equal(np.isnan(res), np.isnan(ref),
                       err_msg="NaN positions differ from the oracle's")
    tol = TOL[np.dtype(dtype)]
    assert_allclose(res.astype(np.float64), ref, rtol=tol, atol=tol,
                    equal_nan=True)


def assert_zscore(res, ref, dtype):
    """``res`` is a plain ndarray (not a subclass) of ``dtype`` matching
    ``ref`` (see assert_values)."""
    assert type(res) is np.ndarray, type(res)
    assert_values(res, ref, dtype)


def assert_masked(res, a, ref, dtype):
    """``res`` is a MaskedArray of ``dtype`` with exactly ``a``'s mask, and
    its unmasked values match ``ref`` there (``ref``'s values under the mask
    are not looked at: they are undefined)."""
    assert isinstance(res, np.ma.MaskedArray), type(res)
    assert res.dtype == np.dtype(dtype), (res.dtype, dtype)
    mask = np.ma.getmaskarray(a)
    assert_array_equal(np.ma.getmaskarray(res), mask,
                       err_msg="the result's mask is not the input's")
    keep = ~mask
    assert_values(np.ma.getdata(res)[keep],
                  np.asarray(np.ma.getdata(ref), dtype=np.float64)[keep], dtype)


def omit_ref(a, axis=0, ddof=0):
    """The oracle for a masked array: SciPy's 'omit' zscore of its data with
    the masked values replaced by NaN, as float64."""
    filled = np.ma.getdata(a).astype(np.float64)
    filled[np.ma.getmaskarray(a)] = np.nan
    return sp_zscore(filled, axis=axis, ddof=ddof, nan_policy="omit")


def case_rng(*key):
    """A generator seeded from a parametrized case's values, the same in
    every run (``hash`` of a str is salted per process; crc32 is not)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def sentinel_out(shape, dtype=np.float64):
    return np.full(shape, SENTINEL, dtype=dtype)


def assert_untouched(out):
    assert_array_equal(out, SENTINEL, err_msg="a refused call wrote into out")


# --------------------------------------------------------------------------
# SciPy's TestZscore (scipy/stats/tests/test_stats.py), ported
# --------------------------------------------------------------------------

def test_zscore():
    # scipy: test_zscore -- "not in R, so tested by using
    # (testcase[i] - mean(testcase)) / sqrt(var(testcase) * 3/4)". An int list:
    # the result is float64.
    y = cbn.zscore([1, 2, 3, 4])
    desired = [-1.3416407864999, -0.44721359549996,
               0.44721359549996, 1.3416407864999]
    assert_zscore(y, desired, np.float64)
    assert_zscore(y, sp_zscore([1, 2, 3, 4]), np.float64)


# The data of scipy's test_zscore_axis / test_zmap_axis, with its expected
# values.
_T1 = 1.0 / (2.0 / 3) ** 0.5
_T2 = 3 ** 0.5 / 3
_T3 = 2 ** 0.5
AXIS_X = np.array([[0.0, 0.0, 1.0, 1.0],
                   [1.0, 1.0, 1.0, 2.0],
                   [2.0, 0.0, 2.0, 0.0]])
AXIS_Z0 = [[-_T1, -_T3 / 2, -_T3 / 2, 0.0],
           [0.0, _T3, -_T3 / 2, _T1],
           [_T1, -_T3 / 2, _T3, -_T1]]
AXIS_Z1 = [[-1.0, -1.0, 1.0, 1.0],
           [-_T2, -_T2, -_T2, 3 ** 0.5],
           [1.0, -1.0, 1.0, -1.0]]


@pytest.mark.parametrize("axis, expected", [(0, AXIS_Z0), (1, AXIS_Z1),
                                            (-2, AXIS_Z0), (-1, AXIS_Z1)])
def test_zscore_axis(axis, expected):
    # scipy: test_zscore_axis (and TestZmap.test_zmap_axis), plus the same
    # axes counted from the end.
    z = cbn.zscore(AXIS_X, axis=axis)
    assert_zscore(z, expected, np.float64)
    assert_zscore(z, sp_zscore(AXIS_X, axis=axis), np.float64)


def test_zscore_ddof():
    # scipy: test_zscore_ddof (and TestZmap.test_zmap_ddof).
    x = np.array([[0.0, 0.0, 1.0, 1.0],
                  [0.0, 1.0, 2.0, 3.0]])
    z = cbn.zscore(x, axis=1, ddof=1)
    expected = [np.array([-0.5, -0.5, 0.5, 0.5]) / (1.0 / 3 ** 0.5),
                np.array([-1.5, -0.5, 0.5, 1.5]) / (5.0 / 3) ** 0.5]
    assert_zscore(z, expected, np.float64)
    assert_zscore(z, sp_zscore(x, axis=1, ddof=1), np.float64)


def test_zscore_nan_propagate():
    # scipy: test_zscore_nan_propagate -- one NaN makes the whole feature NaN.
    x = np.array([1, 2, np.nan, 4, 5])
    z = cbn.zscore(x, nan_policy="propagate")
    assert_zscore(z, np.full(x.shape, np.nan), np.float64)
    # The default policy is 'propagate'.
    assert_zscore(cbn.zscore(x), np.full(x.shape, np.nan), np.float64)


def test_zscore_nan_omit():
    # scipy: test_zscore_nan_omit.
    x = np.array([1, 2, np.nan, 4, 5])
    z = cbn.zscore(x, nan_policy="omit")
    expected = [-1.2649110640673518, -0.6324555320336759, np.nan,
                0.6324555320336759, 1.2649110640673518]
    assert_zscore(z, expected, np.float64)


def test_zscore_nan_omit_with_ddof():
    # scipy: test_zscore_nan_omit_with_ddof -- the divisor is the number of
    # non-NaN values minus ddof, so 'omit' equals zscore of the non-NaN part.
    x = np.array([np.nan, 1.0, 3.0, 5.0, 7.0, 9.0])
    z = cbn.zscore(x, ddof=1, nan_policy="omit")
    expected = np.concatenate([[np.nan], sp_zscore(x[1:], ddof=1)])
    assert_zscore(z, expected, np.float64)
    assert_zscore(z, sp_zscore(x, ddof=1, nan_policy="omit"), np.float64)


def test_zscore_nan_raise():
    # scipy: test_zscore_nan_raise. The input is not touched either.
    x = np.array([1, 2, np.nan, 4, 5])
    before = x.copy()
    with pytest.raises(ValueError):
        cbn.zscore(x, nan_policy="raise")
    assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_zscore_constant_input_1d(dtype):
    # scipy: test_zscore_constant_input_1d -- -0.087 is not exact in binary,
    # so a naive mean leaves round-off residues; the result must still be
    # NaN (0/0), not +-1 of noise.
    x = np.array([-0.087] * 3, dtype=dtype)
    z = cbn.zscore(x)
    assert_zscore(z, np.full(x.shape, np.nan), dtype)
    assert_zscore(z, sp_zscore(x), dtype)


def test_zscore_constant_input_2d():
    # scipy: test_zscore_constant_input_2d.
    x = np.array([[10.0, 10.0, 10.0, 10.0],
                  [10.0, 11.0, 12.0, 13.0]])
    z0 = cbn.zscore(x, axis=0)
    assert_zscore(z0, [[np.nan, -1.0, -1.0, -1.0],
                       [np.nan, 1.0, 1.0, 1.0]], np.float64)
    z1 = cbn.zscore(x, axis=1)
    assert_zscore(z1, np.stack([np.full(4, np.nan), sp_zscore(x[1, :])]),
                  np.float64)
    z = cbn.zscore(x, axis=None)
    assert_zscore(z, sp_zscore(x.reshape(-1)).reshape(x.shape), np.float64)
    y = np.ones((3, 6))
    assert_zscore(cbn.zscore(y, axis=None), np.full_like(y, np.nan), np.float64)


def test_zscore_constant_input_2d_nan_policy_omit():
    # scipy: test_zscore_constant_input_2d_nan_policy_omit -- a feature that
    # is constant over its non-NaN values is NaN throughout.
    x = np.array([[10.0, 10.0, 10.0, 10.0],
                  [10.0, 11.0, 12.0, np.nan],
                  [10.0, 12.0, np.nan, 10.0]])
    s = (3 / 2) ** 0.5
    s2 = 2 ** 0.5
    z0 = cbn.zscore(x, nan_policy="omit", axis=0)
    assert_zscore(z0, [[np.nan, -s, -1.0, np.nan],
                       [np.nan, 0, 1.0, np.nan],
                       [np.nan, s, np.nan, np.nan]], np.float64)
    z1 = cbn.zscore(x, nan_policy="omit", axis=1)
    assert_zscore(z1, [[np.nan, np.nan, np.nan, np.nan],
                       [-s, 0, s, np.nan],
                       [-s2 / 2, s2, np.nan, -s2 / 2]], np.float64)


def test_zscore_2d_all_nan_row():
    # scipy: test_zscore_2d_all_nan_row -- an all-NaN feature under 'omit'.
    x = np.array([[np.nan, np.nan, np.nan, np.nan],
                  [10.0, 10.0, 12.0, 12.0]])
    z = cbn.zscore(x, nan_policy="omit", axis=1)
    assert_zscore(z, [[np.nan, np.nan, np.nan, np.nan],
                      [-1.0, -1.0, 1.0, 1.0]], np.float64)


def test_zscore_2d_all_nan():
    # scipy: test_zscore_2d_all_nan -- all NaN, axis=None, 'omit'.
    y = np.full((2, 3), np.nan)
    z = cbn.zscore(y, nan_policy="omit", axis=None)
    assert_zscore(z, y, np.float64)


@pytest.mark.parametrize("x", [np.array([]), np.zeros((3, 0, 5))],
                         ids=["empty-1d", "3x0x5"])
def test_zscore_empty_input(x):
    # scipy: test_zscore_empty_input -- an empty array comes back empty, of
    # the same shape; no error even though the 1-D batch is empty (m = 0).
    z = cbn.zscore(x)
    assert_zscore(z, sp_zscore(x), np.float64)
    assert z.shape == x.shape


def test_zscore_masked_element_0_gh19039():
    # scipy: test_zscore_masked_element_0_gh19039 -- zscore returned all NaN
    # when the 0th element was masked (its value was taken as the shift).
    rng = np.random.default_rng(8675309)
    x = rng.standard_normal(10)
    y = np.ma.masked_array(x, np.zeros_like(x))
    y.mask[0] = True
    ref = sp_zscore(x[1:])
    assert not np.any(np.isnan(ref))
    expected = np.concatenate([[np.nan], ref])  # position 0 is masked
    for axis in (0, None):
        res = cbn.zscore(y, axis=axis)
        assert_masked(res, y, expected, np.float64)
    # The unmasked values all equal: NaN (0/0) there, whatever the masked
    # value 0 is.
    y[1:] = y[1]
    for axis in (0, None):
        res = cbn.zscore(y, axis=axis)
        assert_masked(res, y, np.full(10, np.nan), np.float64)


# --------------------------------------------------------------------------
# SciPy's TestZmap cases that are zscore's (zmap(x, x) is zscore(x))
# --------------------------------------------------------------------------

@pytest.mark.parametrize("ddof", [0, 2])
def test_zmap_nan_policy_omit(ddof):
    # scipy: TestZmap.test_zmap_nan_policy_omit -- with scores = compare it
    # is zscore: the NaN is left out of the statistics and stays NaN.
    compare = np.array([-8, -3, 2, 7, 12, np.nan])
    z = cbn.zscore(compare, ddof=ddof, nan_policy="omit")
    expected = np.concatenate([sp_zscore(compare[:5], ddof=ddof), [np.nan]])
    assert_zscore(z, expected, np.float64)


@pytest.mark.parametrize("ddof", [0, 2])
def test_zmap_nan_policy_omit_with_axis(ddof):
    # scipy: TestZmap.test_zmap_nan_policy_omit_with_axis -- each row against
    # the zscore of its own non-NaN values.
    compare = np.reshape(np.linspace(-8, 6, 24), (2, -1))
    compare[0, 4] = np.nan
    compare[0, 6] = np.nan
    compare[1, 1] = np.nan
    z = cbn.zscore(compare, nan_policy="omit", axis=1, ddof=ddof)
    expected = np.full_like(compare, np.nan)
    for i in range(2):
        ok = ~np.isnan(compare[i])
        expected[i, ok] = sp_zscore(compare[i, ok], ddof=ddof)
    assert_zscore(z, expected, np.float64)
    assert_zscore(z, sp_zscore(compare, nan_policy="omit", axis=1, ddof=ddof),
                  np.float64)


# --------------------------------------------------------------------------
# SciPy's mstats, test_marray and test_device_dtype zscore cases, ported
# --------------------------------------------------------------------------

def test_mstats_variability_zscore():
    # scipy test_mstats_basic.py: TestVariability.test_zscore -- the NaN is
    # masked by fix_invalid (its data replaced by the fill value 1e20, which
    # must not enter the statistics).
    testcase = np.ma.fix_invalid([1, 2, 3, 4, np.nan])
    y = cbn.zscore(testcase)
    desired = [-1.3416407864999, -0.44721359549996,
               0.44721359549996, 1.3416407864999, np.nan]
    assert_masked(y, testcase, desired, np.float64)
    assert_array_equal(np.ma.getmaskarray(y), [False] * 4 + [True])
    assert_masked(y, testcase, sp_mstats_zscore(testcase), np.float64)


def _xy_sample(n):
    # scipy test_mstats_basic.py: TestCompareWithStats.generate_xy_sample --
    # x, y = x + noise, and copies padded with 5 masked values of 1e16.
    rs = np.random.RandomState(1234567)
    x = rs.randn(n)
    y = x + rs.randn(n)
    xm = np.full(n + 5, 1e16)
    ym = np.full(n + 5, 1e16)
    xm[:n] = x
    ym[:n] = y
    mask = xm > 9e15
    return x, y, np.ma.array(xm, mask=mask), np.ma.array(ym, mask=mask)


@pytest.mark.parametrize("n", [1000, 100, 10, 5])
def test_mstats_compare_with_stats_zscore(n):
    # scipy test_mstats_basic.py: TestCompareWithStats.test_zscore -- the
    # masked array padded with 1e16 gives the plain array's z-scores.
    x, y, xm, ym = _xy_sample(n)
    for plain, masked in ((x, xm), (y, ym)):
        ref = (plain - plain.mean()) / plain.std()
        assert_zscore(cbn.zscore(plain), ref, np.float64)
        assert_zscore(cbn.zscore(plain), sp_zscore(plain), np.float64)
        res = cbn.zscore(masked)
        assert_masked(res, masked, np.concatenate([ref, np.full(5, np.nan)]),
                      np.float64)
        assert_masked(res, masked, sp_mstats_zscore(masked), np.float64)


@pytest.mark.parametrize("n", [100, 10, 5])
def test_mstats_compare_with_stats_zscore_2d(n):
    # scipy test_mstats_basic.py: generate_xy_sample2D -- columns of such
    # samples, padded with 5 rows masked (their data NaN).
    nx = 3
    x = np.column_stack([_xy_sample(n)[0] for _ in range(nx)])
    xm = np.full((n + 5, nx), np.nan)
    xm[:n] = x
    xm = np.ma.array(xm, mask=np.isnan(xm))
    res = cbn.zscore(xm, axis=0)
    ref = np.concatenate([sp_zscore(x, axis=0), np.full((5, nx), np.nan)])
    assert_masked(res, xm, ref, np.float64)


def _marray_case(shape=(7, 8), seed=84912165484321):
    # scipy test_marray.py: get_arrays -- uniform data, about a quarter of it
    # masked.
    rng = np.random.default_rng(seed)
    data = rng.random(size=shape)
    mask = rng.random(size=shape) > 0.75
    return np.ma.masked_array(data, mask=mask)


@pytest.mark.parametrize("axis", [0, 1, None])
def test_marray_zscore(axis):
    # scipy test_marray.py: test_zscore -- a masked array's result equals the
    # 'omit' result on the data with NaN where masked, and keeps the mask.
    a = _marray_case()
    res = cbn.zscore(a, axis=axis)
    assert_masked(res, a, omit_ref(a, axis=axis), np.float64)
    assert_masked(res, a, sp_mstats_zscore(a, axis=axis), np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_dtype_zscore(dtype):
    # scipy test_device_dtype.py: test_zscore -- the float dtype is kept
    # (data 10 * uniform, 30 values).
    x = (10 * np.random.default_rng(84912165484321).random(30)).astype(dtype)
    res = cbn.zscore(x)
    ref = sp_zscore(x)
    assert ref.dtype == dtype  # the oracle's own rule
    assert_zscore(res, ref, dtype)


# --------------------------------------------------------------------------
# zscore: shapes, axes, ddof, dtypes
# --------------------------------------------------------------------------

SHAPE_AXIS = [
    ((7,), 0), ((7,), -1), ((7,), None), ((7,), (0,)),
    ((5, 4), 0), ((5, 4), 1), ((5, 4), -1), ((5, 4), None), ((5, 4), (0, 1)),
    ((5, 4), (1,)),
    ((3, 4, 5), 0), ((3, 4, 5), 1), ((3, 4, 5), -1), ((3, 4, 5), None),
    ((3, 4, 5), (0, 2)), ((3, 4, 5), (-1, 0)), ((3, 4, 5), (1, 2)),
    ((2, 3, 2, 3), (0, 2, 3)),
]


@pytest.mark.parametrize("ddof", [0, 1, 2])
@pytest.mark.parametrize("shape, axis", SHAPE_AXIS)
def test_zscore_shapes_axes_ddof(shape, axis, ddof):
    rng = case_rng(shape, axis, ddof)
    x = rng.normal(3.0, 2.0, shape)
    z = cbn.zscore(x, axis=axis, ddof=ddof)
    assert_zscore(z, sp_zscore(x, axis=axis, ddof=ddof), np.float64)


@pytest.mark.parametrize("shape, axis, ddof", [
    ((3, 4), 0, 3), ((3, 4), 0, 4), ((3, 4), 1, 7), ((5,), 0, 5),
    ((2, 3, 2), (0, 2), 4), ((2, 3), None, 6), ((1, 4), 0, 1),
])
def test_zscore_ddof_at_least_m_is_nan(shape, axis, ddof):
    # m - ddof <= 0: the variance is undefined; NaN everywhere, no error
    # (as scipy, and unlike normalize_batch in training).
    x = np.random.default_rng(1).normal(size=shape)
    z = cbn.zscore(x, axis=axis, ddof=ddof)
    assert_zscore(z, np.full(shape, np.nan), np.float64)
    assert_zscore(z, sp_zscore(x, axis=axis, ddof=ddof), np.float64)


@pytest.mark.parametrize("ddof", [0, 1, 2, 3])
def test_zscore_omit_count_at_most_ddof_is_nan(ddof):
    # Under 'omit' the count is per feature: a column with no more non-NaN
    # values than ddof is NaN, the others are normalized.
    x = np.array([[1.0, np.nan, 3.0, 2.0],
                  [np.nan, np.nan, 4.0, 5.0],
                  [2.0, 5.0, np.nan, 1.0],
                  [7.0, np.nan, np.nan, 9.0]])
    z = cbn.zscore(x, ddof=ddof, nan_policy="omit")
    ref = sp_zscore(x, ddof=ddof, nan_policy="omit")
    assert_zscore(z, ref, np.float64)
    counts = (~np.isnan(x)).sum(axis=0)
    assert np.isnan(z[:, counts <= ddof]).all()


INT_DTYPES = [np.int8, np.int32, np.int64, np.uint8, np.bool_]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16] + INT_DTYPES)
@pytest.mark.parametrize("axis", [0, 1, None])
def test_zscore_dtypes(dtype, axis):
    rng = np.random.default_rng(7)
    if np.dtype(dtype).kind == "b":
        x = rng.random((9, 6)) > 0.5
    elif np.dtype(dtype).kind in "iu":
        x = rng.integers(0, 100, (9, 6)).astype(dtype)
    else:
        x = rng.normal(2.0, 3.0, (9, 6)).astype(dtype)
    z = cbn.zscore(x, axis=axis)
    want = result_dtype(dtype)
    # SciPy's dtype rule is the same; its values, computed on the float64
    # copy of the same numbers, are the reference (cbn computes the
    # statistics in double for every dtype).
    assert sp_zscore(x, axis=axis).dtype == want
    ref = sp_zscore(x.astype(np.float64), axis=axis)
    assert_zscore(z, ref, want)
    if want == np.float32:
        # And float32 against SciPy's own float32 computation.
        assert_zscore(z, sp_zscore(x, axis=axis), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_zscore_small_floats_with_nan(dtype, nan_policy):
    x = np.random.default_rng(3).normal(1.0, 2.0, (8, 5)).astype(dtype)
    x[2, 1] = x[5, 3] = x[0, 3] = np.nan
    x[:, 4] = np.nan
    z = cbn.zscore(x, nan_policy=nan_policy)
    ref = sp_zscore(x.astype(np.float64), nan_policy=nan_policy)
    assert_zscore(z, ref, dtype)


def test_zscore_raise_without_nan_is_propagate():
    x = np.random.default_rng(4).normal(size=(6, 3))
    z = cbn.zscore(x, axis=1, ddof=1, nan_policy="raise")
    assert_zscore(z, sp_zscore(x, axis=1, ddof=1, nan_policy="raise"), np.float64)
    assert_zscore(z, cbn.zscore(x, axis=1, ddof=1), np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_zscore_raise_on_nan_in_other_feature(dtype):
    # One NaN anywhere refuses the whole call, not only its feature.
    x = np.random.default_rng(5).normal(size=(6, 3)).astype(dtype)
    x[5, 2] = np.nan
    with pytest.raises(ValueError):
        cbn.zscore(x, nan_policy="raise")
    with pytest.raises(ValueError):
        cbn.zscore(x, axis=None, nan_policy="raise")


@pytest.mark.parametrize("ddof", [np.int64(1), np.int32(2), np.uint8(1)])
def test_zscore_numpy_integer_ddof(ddof):
    # ddof is any integer (with __index__), numpy's included.
    x = np.random.default_rng(6).normal(size=(6, 3))
    assert_zscore(cbn.zscore(x, ddof=ddof), sp_zscore(x, ddof=int(ddof)),
                  np.float64)


@pytest.mark.parametrize("nan_policy", ["propagate", "omit", "raise"])
@pytest.mark.parametrize("masked", [False, True])
def test_zscore_leaves_input_alone(nan_policy, masked):
    x = np.random.default_rng(8).normal(size=(5, 4))
    if nan_policy != "raise":
        x[1, 2] = np.nan
    a = np.ma.masked_array(x, mask=x > 1.0) if masked else x
    data_before = np.ma.getdata(a).copy()
    mask_before = np.ma.getmaskarray(a).copy()
    res = cbn.zscore(a, nan_policy=nan_policy)
    assert res is not a
    assert not np.shares_memory(np.ma.getdata(res), np.ma.getdata(a))
    assert_array_equal(np.ma.getdata(a), data_before)
    assert_array_equal(np.ma.getmaskarray(a), mask_before)


# --------------------------------------------------------------------------
# zscore: bad arguments
# --------------------------------------------------------------------------

@pytest.mark.parametrize("ddof", [-1, -2, np.int64(-1)])
def test_zscore_negative_ddof(ddof):
    # SciPy accepts ddof=-1 (divisor m + 1); cbn refuses it.
    with pytest.raises(ValueError):
        cbn.zscore(np.arange(6.0), ddof=ddof)


@pytest.mark.parametrize("ddof", [1.5, "1", None, 1j, [1]])
def test_zscore_non_integer_ddof(ddof):
    # SciPy accepts 1.5 and fails on "1" / None with whatever NumPy raises;
    # cbn says TypeError for anything that is not an integer.
    with pytest.raises(TypeError):
        cbn.zscore(np.arange(6.0), ddof=ddof)


@pytest.mark.parametrize("nan_policy", ["foobar", "", "OMIT"])
@pytest.mark.parametrize("with_nan", [False, True])
def test_zscore_unknown_nan_policy(nan_policy, with_nan):
    # scipy's nan_policy check: ValueError for an unknown policy, whether or
    # not the data contain NaN (scipy: TestSEM's nan_policy='foobar').
    x = np.arange(6.0)
    if with_nan:
        x[2] = np.nan
    with pytest.raises(ValueError):
        cbn.zscore(x, nan_policy=nan_policy)


# --------------------------------------------------------------------------
# zscore: masked arrays
# --------------------------------------------------------------------------

def _mask_patterns():
    """(name, 2-D mask of shape (6, 5)) -- nothing, one value, a column, a
    row, a column with one value left, a quarter at random, everything."""
    rng = np.random.default_rng(11)
    none = np.zeros((6, 5), bool)
    one = none.copy()
    one[0, 0] = True
    col = none.copy()
    col[:, 2] = True
    row = none.copy()
    row[3, :] = True
    single = none.copy()
    single[1:, 4] = True
    rand = rng.random((6, 5)) > 0.75
    return [("none", none), ("one", one), ("column", col), ("row", row),
            ("one-left", single), ("random", rand),
            ("all", np.ones((6, 5), bool))]


MASKS = _mask_patterns()


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1, None])
@pytest.mark.parametrize("name, mask", MASKS, ids=[m[0] for m in MASKS])
def test_zscore_masked_2d(name, mask, axis, ddof):
    x = np.random.default_rng(12).normal(4.0, 2.0, mask.shape)
    a = np.ma.masked_array(x, mask=mask)
    res = cbn.zscore(a, axis=axis, ddof=ddof)
    assert_masked(res, a, omit_ref(a, axis=axis, ddof=ddof), np.float64)
    if ddof == 0:
        # SciPy's masked path is the oracle too where it is right: with
        # ddof = 0 (it subtracts ddof from the full length, masked values
        # included, which the spec does not follow).
        assert_masked(res, a, sp_mstats_zscore(a, axis=axis), np.float64)


def test_zscore_masked_fully_masked_column_stays_masked():
    # SciPy writes an unmasked NaN over a fully masked feature; cbn keeps the
    # input's mask exactly, and the other columns are unaffected.
    x = np.arange(12.0).reshape(4, 3) ** 1.5
    a = np.ma.masked_array(x, mask=[[0, 0, 1], [0, 1, 1], [0, 0, 1], [1, 0, 1]])
    res = cbn.zscore(a)
    assert_array_equal(np.ma.getmaskarray(res)[:, 2], True)
    assert_masked(res, a, omit_ref(a), np.float64)


@pytest.mark.parametrize("name, mask", [("nomask", np.ma.nomask),
                                        ("all-false", np.zeros(8, bool))])
def test_zscore_masked_nothing_masked(name, mask):
    # A MaskedArray with nothing masked (nomask or an all-False mask) is still
    # a MaskedArray on the way out, with values of the plain array's.
    x = np.random.default_rng(13).normal(size=8)
    a = np.ma.masked_array(x, mask=mask)
    res = cbn.zscore(a)
    assert_masked(res, a, sp_zscore(x), np.float64)
    assert not np.ma.getmaskarray(res).any()


@pytest.mark.parametrize("axis", [0, (0, 2), None, -1])
def test_zscore_masked_3d(axis):
    rng = np.random.default_rng(14)
    x = rng.normal(size=(4, 3, 5))
    mask = rng.random(x.shape) > 0.7
    mask[:, 1, :] = True  # a whole feature of axis=(0, 2)
    a = np.ma.masked_array(x, mask=mask)
    res = cbn.zscore(a, axis=axis, ddof=1)
    assert_masked(res, a, omit_ref(a, axis=axis, ddof=1), np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.float16])
def test_zscore_masked_dtypes(dtype):
    rng = np.random.default_rng(15)
    x = rng.normal(10.0, 3.0, (7, 4))
    x = x.astype(dtype) if np.dtype(dtype).kind == "f" else np.round(x).astype(dtype)
    mask = rng.random(x.shape) > 0.7
    a = np.ma.masked_array(x, mask=mask)
    res = cbn.zscore(a)
    assert_masked(res, a, omit_ref(a), result_dtype(dtype))


@pytest.mark.parametrize("nan_policy", ["propagate", "omit", "raise"])
def test_zscore_masked_nan_under_the_mask_is_ignored(nan_policy):
    # A masked value is not data, even a NaN (scipy gh-17755: a masked NaN at
    # position 0 made the result all NaN): no NaN spreads from it and
    # 'raise' does not refuse it, as scipy.stats.zscore on the masked array.
    x = np.array([np.nan, 1.0, 2.0, 3.0, np.nan, 7.0])
    a = np.ma.masked_invalid(x)
    res = cbn.zscore(a, nan_policy=nan_policy)
    assert_masked(res, a, omit_ref(a), np.float64)
    assert_masked(res, a, sp_zscore(a, nan_policy=nan_policy), np.float64)


# --------------------------------------------------------------------------
# zscore: random cases against scipy (fixed seeds)
# --------------------------------------------------------------------------

def _random_case(seed):
    """A random shape (1-D to 3-D, sides 1 to 5), axis (int, negative int,
    tuple or None), ddof (0 to 2) and float64 data with an offset."""
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 4))
    shape = tuple(int(n) for n in rng.integers(1, 6, ndim))
    kind = rng.integers(0, 4)
    if kind == 0:
        axis = None
    elif kind == 1:
        axis = int(rng.integers(-ndim, ndim))
    else:
        k = int(rng.integers(1, ndim + 1))
        axis = tuple(int(a) - (ndim if rng.random() < 0.5 else 0)
                     for a in rng.permutation(ndim)[:k])
    ddof = int(rng.integers(0, 3))
    x = rng.normal(rng.uniform(-5, 5), rng.uniform(0.1, 10), shape)
    return rng, x, axis, ddof


def _nan_mask(rng, shape):
    """True at random positions (0 to 50 %), and half the time at a whole
    index of the last axis (so, for many axes, a feature with no value)."""
    mask = rng.random(shape) < rng.uniform(0, 0.5)
    if rng.random() < 0.5:
        mask[..., int(rng.integers(0, shape[-1]))] = True
    return mask


@pytest.mark.parametrize("seed", SEEDS)
def test_random_zscore_omit(seed):
    rng, x, axis, ddof = _random_case(seed)
    x[_nan_mask(rng, x.shape)] = np.nan
    z = cbn.zscore(x, axis=axis, ddof=ddof, nan_policy="omit")
    assert_zscore(z, sp_zscore(x, axis=axis, ddof=ddof, nan_policy="omit"),
                  np.float64)
    # NaN in, NaN out, under 'omit' as under the other policies.
    assert np.isnan(z[np.isnan(x)]).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_random_zscore_propagate(seed):
    rng, x, axis, ddof = _random_case(seed)
    if rng.random() < 0.7:
        x[rng.random(x.shape) < 0.1] = np.nan
    z = cbn.zscore(x, axis=axis, ddof=ddof)
    assert_zscore(z, sp_zscore(x, axis=axis, ddof=ddof), np.float64)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_zscore_float32_omit(seed):
    rng, x, axis, ddof = _random_case(seed)
    x = x.astype(np.float32)
    x[_nan_mask(rng, x.shape)] = np.nan
    z = cbn.zscore(x, axis=axis, ddof=ddof, nan_policy="omit")
    ref = sp_zscore(x.astype(np.float64), axis=axis, ddof=ddof, nan_policy="omit")
    assert_zscore(z, ref, np.float32)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_zscore_masked(seed):
    rng, x, axis, ddof = _random_case(seed)
    a = np.ma.masked_array(x, mask=_nan_mask(rng, x.shape))
    res = cbn.zscore(a, axis=axis, ddof=ddof)
    assert_masked(res, a, omit_ref(a, axis=axis, ddof=ddof), np.float64)


# --------------------------------------------------------------------------
# normalize_batch: ddof, nan_policy, masked arrays
# --------------------------------------------------------------------------

@pytest.mark.parametrize("ddof", [0, 1, 2])
@pytest.mark.parametrize("shape, axis", SHAPE_AXIS)
def test_normalize_batch_eps0_is_zscore(shape, axis, ddof):
    rng = case_rng(shape, axis, ddof, "normalize_batch")
    x = rng.normal(-2.0, 3.0, shape)
    y, mean, var = cbn.normalize_batch(x, axis=axis, eps=0, ddof=ddof,
                                       return_stats=True)
    assert_zscore(y, sp_zscore(x, axis=axis, ddof=ddof), np.float64)
    # The returned variance is the ddof one too.
    assert_values(mean, np.mean(x, axis=axis), np.float64)
    assert_values(var, np.var(x, axis=axis, ddof=ddof), np.float64)


@pytest.mark.parametrize("ddof", [0, 1, 2])
def test_normalize_batch_ddof_with_gamma_beta_eps(ddof):
    rng = np.random.default_rng(21)
    x = rng.normal(1.0, 2.0, (6, 3, 4))
    gamma = rng.uniform(0.5, 2.0, 3)
    beta = rng.uniform(-1.0, 1.0, 3)
    y = cbn.normalize_batch(x, gamma, beta, axis=(0, 2), eps=1e-3, ddof=ddof)
    k = (1, 3, 1)
    mean = x.mean(axis=(0, 2)).reshape(k)
    var = x.var(axis=(0, 2), ddof=ddof).reshape(k)
    ref = (x - mean) / np.sqrt(var + 1e-3) * gamma.reshape(k) + beta.reshape(k)
    assert_zscore(y, ref, np.float64)


@pytest.mark.parametrize("shape, axis, ddof", [
    ((3, 4), 0, 3), ((3, 4), 0, 5), ((1, 4), 0, 1), ((2, 3, 2), (0, 2), 4),
    ((3, 4), None, 12),
])
def test_normalize_batch_ddof_at_least_m_raises(shape, axis, ddof):
    # Batch norm needs a variance: in training, m - ddof <= 0 is an error
    # (not the NaN zscore gives), and out is left alone.
    x = np.random.default_rng(22).normal(size=shape)
    out = sentinel_out(shape)
    with pytest.raises(ValueError):
        cbn.normalize_batch(x, axis=axis, ddof=ddof, out=out)
    assert_untouched(out)


@pytest.mark.parametrize("ddof", [1, 2])
def test_normalize_batch_omit_count_at_most_ddof(ddof):
    # Under 'omit' the count is per feature: a feature with no more non-NaN
    # values than ddof is NaN, stats included, without an error; the batch
    # itself (m = 5) is larger than ddof.
    x = np.random.default_rng(23).normal(2.0, 1.0, (5, 4))
    x[1:, 0] = np.nan        # one value left
    x[2:, 1] = np.nan        # two left
    x[:, 2] = np.nan         # none
    y, mean, var = cbn.normalize_batch(x, eps=0, ddof=ddof, nan_policy="omit",
                                       return_stats=True)
    assert_zscore(y, sp_zscore(x, ddof=ddof, nan_policy="omit"), np.float64)
    ref_mean, ref_var = nan_stats(x, 0, ddof)
    assert_values(var, ref_var, np.float64)
    counts = (~np.isnan(x)).sum(axis=0)
    assert np.isnan(var[counts <= ddof]).all()
    assert np.isnan(y[:, counts <= ddof]).all()
    # The mean of a feature with a value or more is defined whatever ddof.
    assert_values(mean[counts > 0], ref_mean[counts > 0], np.float64)
    assert np.isnan(mean[counts == 0]).all()


def check_omit_stats(x, axis, ddof):
    """normalize_batch(nan_policy='omit', return_stats=True) of float64 x
    against scipy's zscore and numpy's nanmean/nanvar."""
    y, mean, var = cbn.normalize_batch(x, axis=axis, eps=0, ddof=ddof,
                                       nan_policy="omit", return_stats=True)
    assert_zscore(y, sp_zscore(x, axis=axis, ddof=ddof, nan_policy="omit"),
                  np.float64)
    ref_mean, ref_var = nan_stats(x, axis, ddof)
    assert_values(mean, ref_mean, np.float64)
    assert_values(var, ref_var, np.float64)


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, (0, 2), None])
def test_normalize_batch_omit_stats(axis, ddof):
    rng = np.random.default_rng(24)
    x = rng.normal(3.0, 2.0, (6, 5, 4))
    x[rng.random(x.shape) < 0.3] = np.nan
    check_omit_stats(x, axis, ddof)


def test_normalize_batch_omit_with_gamma_beta_eps():
    # The NaN inputs stay NaN after the scale and shift; the others use
    # their feature's nanmean and nanvar.
    rng = np.random.default_rng(25)
    x = rng.normal(size=(8, 3))
    x[[0, 3, 5], [1, 1, 2]] = np.nan
    gamma = np.array([1.5, -0.5, 2.0])
    beta = np.array([0.25, 1.0, -3.0])
    y = cbn.normalize_batch(x, gamma, beta, eps=1e-5, ddof=1, nan_policy="omit")
    mean, var = nan_stats(x, 0, 1)
    ref = (x - mean) / np.sqrt(var + 1e-5) * gamma + beta
    assert_zscore(y, ref, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nan_policy", ["propagate", "raise", "omit"])
def test_normalize_batch_policies_without_nan_agree(nan_policy, dtype):
    x = np.random.default_rng(26).normal(size=(7, 3)).astype(dtype)
    y = cbn.normalize_batch(x, eps=0, nan_policy=nan_policy)
    assert_zscore(y, sp_zscore(x.astype(np.float64)), dtype)


def test_normalize_batch_propagate_nan_feature():
    x = np.random.default_rng(27).normal(size=(7, 3))
    x[4, 1] = np.nan
    y = cbn.normalize_batch(x, eps=0, nan_policy="propagate")
    assert_zscore(y, sp_zscore(x, nan_policy="propagate"), np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normalize_batch_raise_leaves_out(dtype):
    x = np.random.default_rng(28).normal(size=(5, 3)).astype(dtype)
    x[3, 0] = np.nan
    out = sentinel_out(x.shape, dtype)
    with pytest.raises(ValueError):
        cbn.normalize_batch(x, nan_policy="raise", out=out)
    assert_untouched(out)
    # In place: x itself is the out, and it must come back as it was.
    before = x.copy()
    with pytest.raises(ValueError):
        cbn.normalize_batch(x, nan_policy="raise", out=x)
    assert_array_equal(x, before)


@pytest.mark.parametrize("kwargs, error", [
    ({"ddof": -1}, ValueError),
    ({"ddof": 1.5}, TypeError),
    ({"ddof": "1"}, TypeError),
    ({"ddof": None}, TypeError),
    ({"nan_policy": "foobar"}, ValueError),
])
def test_normalize_batch_bad_arguments_leave_out(kwargs, error):
    x = np.random.default_rng(29).normal(size=(5, 3))
    out = sentinel_out(x.shape)
    with pytest.raises(error):
        cbn.normalize_batch(x, out=out, **kwargs)
    assert_untouched(out)


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, None])
@pytest.mark.parametrize("name, mask", MASKS, ids=[m[0] for m in MASKS])
def test_normalize_batch_masked(name, mask, axis, ddof):
    x = np.random.default_rng(30).normal(4.0, 2.0, mask.shape)
    a = np.ma.masked_array(x, mask=mask)
    # The batch (m = 5, 6 or 30) is larger than ddof: no error, even for a
    # fully masked feature, which is NaN under the mask.
    y = cbn.normalize_batch(a, axis=axis, eps=0, ddof=ddof)
    assert_masked(y, a, omit_ref(a, axis=axis, ddof=ddof), np.float64)


@pytest.mark.parametrize("ddof", [0, 1])
def test_normalize_batch_masked_stats(ddof):
    # return_stats on a masked array: the statistics of the unmasked values
    # (no feature here is fully masked, so every one is defined).
    rng = np.random.default_rng(31)
    x = rng.normal(2.0, 3.0, (9, 4))
    mask = rng.random(x.shape) > 0.7
    mask[0] = False
    mask[1] = False
    mask[2] = False
    a = np.ma.masked_array(x, mask=mask)
    y, mean, var = cbn.normalize_batch(a, eps=0, ddof=ddof, return_stats=True)
    assert_masked(y, a, omit_ref(a, ddof=ddof), np.float64)
    filled = np.where(mask, np.nan, x)
    ref_mean, ref_var = nan_stats(filled, 0, ddof)
    assert_values(np.ma.getdata(mean), ref_mean, np.float64)
    assert_values(np.ma.getdata(var), ref_var, np.float64)


def test_normalize_batch_masked_with_gamma_beta():
    rng = np.random.default_rng(32)
    x = rng.normal(size=(6, 3))
    mask = np.zeros(x.shape, bool)
    mask[[1, 4], [0, 2]] = True
    a = np.ma.masked_array(x, mask=mask)
    gamma = np.array([2.0, 0.5, -1.0])
    beta = np.array([1.0, 0.0, 3.0])
    y = cbn.normalize_batch(a, gamma, beta, eps=1e-5)
    filled = np.where(mask, np.nan, x)
    mean, var = nan_stats(filled, 0, 0)
    ref = (filled - mean) / np.sqrt(var + 1e-5) * gamma + beta
    assert_masked(y, a, ref, np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normalize_batch_masked_with_out_is_refused(dtype):
    # A masked x and out= together: where would the mask go? TypeError, and
    # out is left alone.
    x = np.random.default_rng(33).normal(size=(5, 3)).astype(dtype)
    a = np.ma.masked_array(x, mask=x > 0.5)
    out = sentinel_out(x.shape, dtype)
    with pytest.raises(TypeError):
        cbn.normalize_batch(a, out=out)
    assert_untouched(out)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_normalize_batch_omit(seed):
    rng, x, axis, ddof = _random_case(seed)
    ax = tuple(range(x.ndim)) if axis is None else (
        axis if isinstance(axis, tuple) else (axis,))
    m = int(np.prod([x.shape[a] for a in ax]))
    ddof = min(ddof, m - 1)  # training needs m > ddof
    x[_nan_mask(rng, x.shape)] = np.nan
    check_omit_stats(x, axis, ddof)


# --------------------------------------------------------------------------
# batch_stats / merge_stats under nan_policy='omit'
# --------------------------------------------------------------------------

def _assert_omit_stats(s, x, axis):
    """``s`` holds the per-feature non-NaN count (int64 array), nanmean and
    M2 = nanvar * count of ``x`` over ``axis``; NaN where the count is 0."""
    assert isinstance(s, cbn.BatchStats)
    count = np.asarray(s.count)
    assert isinstance(s.count, np.ndarray) and count.dtype == np.int64
    ref_count = (~np.isnan(x)).sum(axis=axis)
    assert count.shape == np.shape(ref_count)
    assert_array_equal(count, ref_count)
    ref_mean, ref_var = nan_stats(x, axis, 0)
    assert_values(s.mean, ref_mean, np.float64)
    assert_values(s.m2, ref_var * ref_count, np.float64)
    for ddof in (0, 1, 2):
        assert_values(s.var(ddof=ddof), nan_stats(x, axis, ddof)[1], np.float64)


@pytest.mark.parametrize("axis", [0, 1, (0, 2), None])
def test_batch_stats_omit(axis):
    rng = np.random.default_rng(40)
    x = rng.normal(3.0, 2.0, (7, 4, 3))
    x[rng.random(x.shape) < 0.3] = np.nan
    x[:, 1, :] = np.nan  # a feature (axis 0, (0, 2)) with count 0
    s = cbn.batch_stats(x, axis=axis, nan_policy="omit")
    _assert_omit_stats(s, x, axis)


def test_batch_stats_omit_without_nan():
    # Under 'omit' the count is an array even when no value is NaN.
    x = np.random.default_rng(41).normal(size=(5, 3))
    s = cbn.batch_stats(x, nan_policy="omit")
    _assert_omit_stats(s, x, 0)
    assert_array_equal(s.count, [5, 5, 5])


def test_batch_stats_policies():
    x = np.random.default_rng(42).normal(size=(5, 3))
    x[2, 1] = np.nan
    with pytest.raises(ValueError):
        cbn.batch_stats(x, nan_policy="raise")
    with pytest.raises(ValueError):
        cbn.batch_stats(x, nan_policy="foobar")
    # 'propagate' keeps the plain statistics: the NaN feature is NaN.
    s = cbn.batch_stats(x)
    assert s.count == 5
    assert np.isnan(s.mean[1]) and not np.isnan(s.mean[[0, 2]]).any()


def _split3(x, axis, cuts):
    return np.split(x, cuts, axis=axis)


MERGE_CASES = [
    # (shape, batch axes, the axis split along, cut points)
    ((13, 4), 0, 0, [2, 7]),
    ((4, 13), 1, 1, [5, 6]),
    ((11, 3, 5), (0, 2), 0, [1, 8]),
    ((5, 3, 11), (0, 2), 2, [4, 10]),
]


@pytest.mark.parametrize("shape, axis, split_axis, cuts", MERGE_CASES)
def test_merge_omit_stats_equals_whole(shape, axis, split_axis, cuts):
    rng = np.random.default_rng(43)
    x = rng.normal(3.0, 2.0, shape)
    x[rng.random(shape) < 0.25] = np.nan
    feat = [i for i in range(len(shape)) if i not in np.atleast_1d(axis)][0]
    sl = [slice(None)] * len(shape)
    sl[feat] = 0
    x[tuple(sl)] = np.nan            # a feature with no value anywhere
    pieces = _split3(x, split_axis, cuts)
    # ... and one with no value in the first piece only, which the merge
    # must skip there instead of taking its NaN mean.
    sl[feat] = 1
    pieces[0][tuple(sl)] = np.nan
    x = np.concatenate(pieces, axis=split_axis)
    a, b, c = (cbn.batch_stats(p, axis=axis, nan_policy="omit") for p in pieces)
    for merged in (cbn.merge_stats(a, b, c), a.merge(b).merge(c),
                   a.merge(b, c), cbn.merge_stats(c, a, b)):
        _assert_omit_stats(merged, x, axis)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_merge_omit_stats(seed):
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(3, 20))
    f = int(rng.integers(1, 5))
    x = rng.normal(rng.uniform(-10, 10), rng.uniform(0.1, 5), (n, f))
    x[rng.random(x.shape) < rng.uniform(0, 0.6)] = np.nan
    cuts = np.sort(rng.choice(np.arange(1, n), size=2, replace=False))
    pieces = _split3(x, 0, cuts)
    stats = [cbn.batch_stats(p, nan_policy="omit") for p in pieces]
    merged = cbn.merge_stats(*stats)
    _assert_omit_stats(merged, x, 0)


def test_merge_omit_stats_with_empty_piece():
    # A piece of no rows has count 0 everywhere and merges as nothing.
    x = np.random.default_rng(44).normal(size=(6, 3))
    x[1, 2] = np.nan
    a = cbn.batch_stats(x[:4], nan_policy="omit")
    e = cbn.batch_stats(x[4:4], nan_policy="omit")
    b = cbn.batch_stats(x[4:], nan_policy="omit")
    assert_array_equal(e.count, [0, 0, 0])
    _assert_omit_stats(cbn.merge_stats(a, e, b), x, 0)
    _assert_omit_stats(cbn.merge_stats(e, a, b), x, 0)
