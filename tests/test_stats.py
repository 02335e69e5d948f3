"""Mergeable statistics: batch_stats, merge_stats, BatchStats."""
import functools
import pickle

import numpy as np
import pytest

import cbn
from checks import assert_stats_close
from oracle import normalize_ref

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError


def oracle_stats(x, axis):
    """(count, mean, M2) in float64 straight from the definitions."""
    x = np.asarray(x, dtype=np.float64)
    _, mean, var = normalize_ref(x, axis=axis)
    count = x.size // max(mean.size, 1) if x.size else 0
    return count, mean, var * count


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.float16, bool])
@pytest.mark.parametrize("shape,axis", [
    ((50, 7), 0), ((6, 3, 5, 4), (0, 2, 3)), ((5, 4, 3, 6), (0, 1, 2)),
    ((4, 9, 5), -1), ((3, 4, 5), (2, 0)), ((30,), None), ((4, 5, 6), None),
])
def test_batch_stats_match_oracle(dtype, shape, axis):
    x = (np.random.default_rng(1).normal(3.0, 2.0, shape) * 10).astype(dtype)
    s = cbn.batch_stats(x, axis=axis)
    count, mean, m2 = oracle_stats(x.astype(np.float64) if dtype != np.float16
                                   else x.astype(np.float32), axis)
    assert s.count == count
    assert s.mean.dtype == s.m2.dtype == np.float64
    assert s.mean.shape == mean.shape
    # read-only, whichever way the kernel's features were ordered
    assert not (s.mean.flags.writeable or s.m2.flags.writeable)
    # M2 = count * var, to the variance's relative bound
    assert_stats_close(s.mean, s.m2, mean, m2, exact=True)
    assert_stats_close(None, s.var(), None, m2 / count, exact=True)


def test_statistics_are_those_normalize_batch_uses():
    x = np.random.default_rng(2).normal(size=(8, 3, 5, 5)).astype(np.float32)
    _, mean, var = cbn.normalize_batch(x, axis=(0, 2, 3), return_stats=True)
    s = cbn.batch_stats(x, axis=(0, 2, 3))
    np.testing.assert_array_equal(s.mean, mean)
    np.testing.assert_allclose(s.var(), var, rtol=1e-15, atol=0)


def chunked(rng, n_chunks):
    """Data far from zero in uneven chunks, some of them empty."""
    sizes = rng.integers(0, 40, n_chunks)
    sizes[::17] = 0
    return [rng.normal(1e4, 3.0, (k, 6)) * rng.uniform(0.5, 2.0, 6)
            for k in sizes]


@pytest.mark.parametrize("how", ["merge_stats", "streaming"])
def test_100_chunks_equal_one_shot_statistics(how):
    chunks = chunked(np.random.default_rng(3), 100)
    parts = [cbn.batch_stats(c) for c in chunks]
    if how == "merge_stats":
        total = cbn.merge_stats(*parts)
    else:  # what a loop over data too big for memory does
        total = functools.reduce(cbn.BatchStats.merge, parts)
    whole = np.concatenate(chunks)
    count, mean, m2 = oracle_stats(whole, 0)
    one_shot = cbn.batch_stats(whole)
    assert total.count == count == one_shot.count
    for got in (total, one_shot):
        assert_stats_close(got.mean, got.m2, mean, m2, exact=True)
    np.testing.assert_allclose(total.mean, one_shot.mean, rtol=1e-12, atol=0)
    np.testing.assert_allclose(total.m2, one_shot.m2, rtol=1e-12, atol=0)
    np.testing.assert_allclose(total.var(ddof=1), whole.var(axis=0, ddof=1), rtol=1e-12)


def test_float32_chunks_are_merged_in_float64():
    rng = np.random.default_rng(4)
    chunks = [rng.normal(300.0, 0.01, (1000, 2)).astype(np.float32) for _ in range(100)]
    total = cbn.merge_stats(*[cbn.batch_stats(c) for c in chunks])
    count, mean, m2 = oracle_stats(np.concatenate(chunks), 0)
    assert_stats_close(total.mean, total.m2, mean, m2)


def test_empty_parts_merge_as_nothing():
    x = np.random.default_rng(5).normal(size=(10, 3))
    empty = cbn.batch_stats(x[:0])
    assert empty.count == 0
    assert (empty.mean == 0).all() and (empty.m2 == 0).all()
    assert not (empty.mean.flags.writeable or empty.m2.flags.writeable)
    s = cbn.batch_stats(x)
    for merged in (empty.merge(s), s.merge(empty), cbn.merge_stats(empty, s, empty)):
        assert merged.count == 10
        np.testing.assert_array_equal(merged.mean, s.mean)
        np.testing.assert_array_equal(merged.m2, s.m2)
    nothing = cbn.merge_stats(empty, empty)
    assert nothing.count == 0 and nothing.mean.shape == (3,)
    assert np.isnan(nothing.var()).all()


def test_var_with_ddof_and_too_few_values():
    s = cbn.batch_stats(np.array([[1.0], [3.0]]))
    np.testing.assert_array_equal(s.var(), [1.0])
    np.testing.assert_array_equal(s.var(ddof=1), [2.0])
    assert np.isnan(s.var(ddof=2)).all()


def test_merge_order_changes_only_rounding():
    rng = np.random.default_rng(6)
    parts = [cbn.batch_stats(c) for c in chunked(rng, 20)]
    a = cbn.merge_stats(*parts)
    b = cbn.merge_stats(*parts[::-1])
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-14)
    np.testing.assert_allclose(a.m2, b.m2, rtol=1e-12)


def test_nan_stays_in_its_feature():
    x = np.random.default_rng(7).normal(size=(20, 3))
    x[5, 1] = np.nan
    s = cbn.batch_stats(x[:10]).merge(cbn.batch_stats(x[10:]))
    assert np.isnan(s.mean[1]) and np.isnan(s.m2[1])
    assert np.isfinite(s.mean[[0, 2]]).all() and np.isfinite(s.m2[[0, 2]]).all()


def test_stats_are_immutable_and_pickle():
    s = cbn.batch_stats(np.arange(12.0).reshape(4, 3))
    with pytest.raises(ValueError):
        s.mean[0] = 1.0
    with pytest.raises(AttributeError):
        s.count = 3
    t = pickle.loads(pickle.dumps(s))
    assert t.count == s.count
    np.testing.assert_array_equal(t.mean, s.mean)
    np.testing.assert_array_equal(t.m2, s.m2)
    assert "BatchStats(count=4" in repr(s)


def test_bad_input_is_rejected():
    s = cbn.batch_stats(np.ones((4, 3)))
    with pytest.raises(TypeError):
        cbn.merge_stats()
    with pytest.raises(TypeError, match="BatchStats"):
        cbn.merge_stats(s, (4, s.mean, s.m2))
    with pytest.raises(ValueError, match="feature shapes"):
        s.merge(cbn.batch_stats(np.ones((4, 2))))
    with pytest.raises(ValueError, match="count"):
        cbn.BatchStats(-1, [0.0], [0.0])
    with pytest.raises(ValueError, match="one shape"):
        cbn.BatchStats(2, [0.0, 1.0], [0.0])
    with pytest.raises(TypeError):
        cbn.batch_stats(np.ones((3, 2), complex))
    with pytest.raises(AxisError):
        cbn.batch_stats(np.ones((3, 2)), axis=2)
    with pytest.raises(AxisError):
        cbn.batch_stats(np.ones((3, 2)), axis=(0, 0))


@pytest.mark.parametrize("order", ["C", "F"])
def test_several_feature_axes_in_any_memory_order(order):
    x = np.asarray(np.random.default_rng(8).normal(size=(7, 4, 3, 5)), order=order)
    s = cbn.batch_stats(x, axis=(0, 3))
    _, mean, m2 = oracle_stats(x, (0, 3))
    assert s.mean.shape == (4, 3) and s.count == 35
    assert_stats_close(s.mean, s.m2, mean, m2, exact=True)
