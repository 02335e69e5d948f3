"""cbn_backward_dx (src_c/cbn.h): backward's dx from given gradient sums.

Synchronized batch norm splits a batch over processes: each computes its
part's gradient sums with cbn_backward (batch_stats zero), the sums are added
up, and each part's dx comes from the totals. These tests call the entry
point through ctypes and check that the parts' dx are the slices of the
oracle's dx over the whole batch, on every SIMD level and thread count.
"""
import ctypes

import numpy as np
import pytest

import cbn
import cbn.kernels
from cbn.kernels import CHUNK, ROW_BLOCK, SEG_CHUNKS
from checks import assert_rounding_close
from oracle import backward_ref, normalize_ref

LIB = ctypes.CDLL(cbn.kernels.__file__)
I64 = ctypes.c_int64
DP = ctypes.POINTER(ctypes.c_double)
CBN_OK, CBN_ERR_ARG, CBN_ERR_EPS = 0, -1, -3
for _sfx, _ct in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
    _tp = ctypes.POINTER(_ct)
    getattr(LIB, f"cbn_backward_dx_{_sfx}").argtypes = [
        _tp, _tp, _tp, I64, I64, I64, DP, DP, DP, ctypes.c_double, I64, DP, DP]
    getattr(LIB, f"cbn_backward_{_sfx}").argtypes = [
        _tp, _tp, _tp, I64, I64, I64, DP, DP, DP, ctypes.c_double, ctypes.c_int,
        DP, DP]
SFX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def ptr(a):
    return None if a is None else a.ctypes.data_as(
        ctypes.POINTER(np.ctypeslib.as_ctypes_type(a.dtype)))


def part_sums(dy, x, mean, var, gamma, eps):
    """(dgamma, dbeta) of one (outer, C, inner) part, from cbn_backward."""
    C = x.shape[1]
    dg, db = np.empty(C), np.empty(C)
    rc = getattr(LIB, f"cbn_backward_{SFX[x.dtype]}")(
        ptr(dy), ptr(x), None, *x.shape, ptr(mean), ptr(var), ptr(gamma), eps,
        0, ptr(dg), ptr(db))
    assert rc == CBN_OK
    return dg, db


def dx_of_part(dy, x, mean, var, gamma, eps, m, dg, db):
    dx = np.full_like(x, np.nan)
    rc = getattr(LIB, f"cbn_backward_dx_{SFX[x.dtype]}")(
        ptr(dy), ptr(x), ptr(dx), *x.shape, ptr(mean), ptr(var), ptr(gamma),
        eps, m, ptr(dg), ptr(db))
    assert rc == CBN_OK
    return dx


# (outer, C, inner) blocks reaching planes (runs short, longer than a chunk, short
# runs over several segments) and rows (narrow, one column block, several
# with a tail), split along outer.
SEGMENT = SEG_CHUNKS * CHUNK
BLOCKS = [(12, 5, 33), (6, 3, 2 * CHUNK + 904), (SEGMENT // 700 + 2, 2, 700), (900, 7, 1),
          (300, 300, 1), (40, 2 * ROW_BLOCK + 3, 1)]


def test_blocks_reach_what_they_name():
    assert BLOCKS[1][2] > CHUNK
    assert BLOCKS[2][2] < CHUNK < SEGMENT < BLOCKS[2][0] * BLOCKS[2][2]
    assert BLOCKS[4][1] < ROW_BLOCK < 2 * ROW_BLOCK < BLOCKS[5][1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block", BLOCKS)
def test_parts_give_slices_of_whole_batch_dx(simd_level, dtype, block):
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 2.0, block).astype(dtype)
    dy = rng.normal(0.5, 1.0, block).astype(dtype)
    gamma = rng.uniform(0.5, 2.0, block[1])
    eps = 1e-3
    _, mean, var = normalize_ref(x, axis=(0, 2))
    dx_ref, _, _ = backward_ref(dy, x, mean, var, gamma, axis=(0, 2), eps=eps)
    cuts = [0, 1, block[0] // 3, block[0]]   # an empty part, uneven parts
    parts = [(x[a:b], dy[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    sums = [part_sums(np.ascontiguousarray(d), np.ascontiguousarray(p), mean,
                      var, gamma, eps) for p, d in parts]
    dg = sum(s[0] for s in sums)
    db = sum(s[1] for s in sums)
    m = block[0] * block[2]
    dx = np.concatenate([dx_of_part(np.ascontiguousarray(d), np.ascontiguousarray(p),
                                    mean, var, gamma, eps, m, dg, db)
                         for p, d in parts])
    assert_rounding_close(dx, dx_ref, scale=np.abs(dx_ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_own_sums_reproduce_backward(dtype):
    """With the block's own sums and size it is cbn_backward's dx."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(9, 4, 300)).astype(dtype)
    dy = rng.normal(size=x.shape).astype(dtype)
    mean, var = x.mean(axis=(0, 2), dtype=np.float64), x.var(axis=(0, 2), dtype=np.float64)
    dg, db = part_sums(dy, x, mean, var, None, 1e-5)
    dx = dx_of_part(dy, x, mean, var, None, 1e-5, 9 * 300, dg, db)
    want = cbn.normalize_batch_backward(dy, x, mean, var, axis=(0, 2))[0]
    np.testing.assert_allclose(dx, want, rtol=1e-12 if dtype == np.float64 else 1e-5,
                               atol=1e-12 if dtype == np.float64 else 1e-6)


def test_results_do_not_depend_on_threads():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 3, 4000))
    dy = rng.normal(size=x.shape)
    mean, var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    dg, db = part_sums(dy, x, mean, var, None, 1e-5)
    results = []
    try:
        for n in (1, 2, 3):
            cbn.set_num_threads(n)
            results.append(dx_of_part(dy, x, mean, var, None, 1e-5, 10**6, dg, db))
    finally:
        cbn.set_num_threads(0)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_bad_arguments_are_rejected_and_nothing_written():
    x = np.ones((4, 3, 2))
    dx = np.full_like(x, 7.0)
    v = np.ones(3)
    f = LIB.cbn_backward_dx_f64
    good = (ptr(x), ptr(x), ptr(dx), 4, 3, 2, ptr(v), ptr(v), None, 1e-5, 8,
            ptr(v), ptr(v))

    def with_(i, value):
        return good[:i] + (value,) + good[i + 1:]

    assert f(*with_(10, 7)) == CBN_ERR_ARG         # m below the block's size
    assert f(*with_(10, 0)) == CBN_ERR_ARG
    assert f(*with_(2, None)) == CBN_ERR_ARG       # no dx
    assert f(*with_(11, None)) == CBN_ERR_ARG      # no dgamma
    assert f(*with_(9, -1.0)) == CBN_ERR_EPS
    assert f(*with_(3, -1)) == CBN_ERR_ARG
    assert (dx == 7.0).all()
    empty = np.empty((0, 3, 2))
    assert f(ptr(empty), ptr(empty), ptr(empty), 0, 3, 2, ptr(v), ptr(v), None,
             1e-5, 5, ptr(v), ptr(v)) == CBN_OK
