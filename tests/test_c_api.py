"""The C core's contract (src_c/cbn.h), called directly through ctypes.

cbn.kernels is the extension module linked with the C core, so its shared
library exports the cbn_* symbols. These tests pin the parts of the contract
the Python API does not reach: the statistics entry point, status codes,
NULL-able outputs and the running-statistics update.
"""
import ctypes

import numpy as np
import pytest

import cbn.kernels
from checks import assert_rounding_close, assert_stats_close
from oracle import normalize_ref

LIB = ctypes.CDLL(cbn.kernels.__file__)
I64 = ctypes.c_int64
DP = ctypes.POINTER(ctypes.c_double)
CBN_OK, CBN_ERR_ARG, CBN_ERR_EMPTY, CBN_ERR_EPS = 0, -1, -2, -3

LIB.cbn_status_message.restype = ctypes.c_char_p
LIB.cbn_status_message.argtypes = [ctypes.c_int]
for sfx, ct in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
    TP = ctypes.POINTER(ct)
    getattr(LIB, f"cbn_stats_{sfx}").argtypes = [TP, I64, I64, I64, DP, DP]
    getattr(LIB, f"cbn_forward_train_{sfx}").argtypes = [
        TP, TP, I64, I64, I64, DP, DP, ctypes.c_double, DP, DP]
    getattr(LIB, f"cbn_forward_infer_{sfx}").argtypes = [
        TP, TP, I64, I64, I64, DP, DP, DP, DP, ctypes.c_double]
    getattr(LIB, f"cbn_backward_{sfx}").argtypes = [
        TP, TP, TP, I64, I64, I64, DP, DP, DP, ctypes.c_double, ctypes.c_int,
        DP, DP]
    getattr(LIB, f"cbn_update_running_{sfx}").argtypes = [
        TP, TP, DP, DP, I64, I64, ctypes.c_double]

SFX = {np.float32: "f32", np.float64: "f64"}


def ptr(a, ctype=None):
    if a is None:
        return None
    ctype = ctype or np.ctypeslib.as_ctypes_type(a.dtype)
    return a.ctypes.data_as(ctypes.POINTER(ctype))


def fn(name, dtype):
    return getattr(LIB, f"cbn_{name}_{SFX[dtype]}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block", [(5, 3, 7), (40, 6, 1), (1, 4, 33), (3, 1, 1)])
def test_stats_match_oracle(dtype, block):
    outer, C, inner = block
    x = np.random.default_rng(0).normal(3, 2, block).astype(dtype)
    mean, var = np.empty(C), np.empty(C)
    assert fn("stats", dtype)(ptr(x), outer, C, inner, ptr(mean), ptr(var)) == CBN_OK
    _, mref, vref = normalize_ref(x, axis=(0, 2))
    assert_stats_close(mean, var, mref, vref, exact=True)


def test_forward_train_with_null_stats_outputs_and_in_place():
    x = np.random.default_rng(1).normal(size=(6, 4, 5))
    yref, _, _ = normalize_ref(x, axis=(0, 2))
    rc = LIB.cbn_forward_train_f64(ptr(x), ptr(x), 6, 4, 5, None, None, 1e-5,
                                   None, None)
    assert rc == CBN_OK
    assert_rounding_close(x, yref, scale=1e-2)  # atol 1e-14: y of order one, in double


def test_backward_without_dx_gives_parameter_gradients():
    rng = np.random.default_rng(2)
    x, dy = rng.normal(size=(2, 16, 3, 4))[:]
    _, m, v = normalize_ref(x, axis=(0, 2))
    dg, db = np.empty(3), np.empty(3)
    rc = LIB.cbn_backward_f64(ptr(dy), ptr(x), None, 16, 3, 4, ptr(m), ptr(v),
                              None, 1e-5, 1, ptr(dg), ptr(db))
    assert rc == CBN_OK
    from oracle import backward_ref
    _, dgr, dbr = backward_ref(dy, x, m, v, axis=(0, 2))
    assert_rounding_close(dg, dgr, scale=0)
    assert_rounding_close(db, dbr, scale=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_update_running_is_unbiased_exponential_average(dtype):
    rm = np.array([0.0, 1.0, -2.0], dtype)
    rv = np.array([1.0, 2.0, 0.5], dtype)
    mean, var = np.array([1.0, 2.0, 3.0]), np.array([4.0, 0.0, 1.0])
    m, f = 10, 0.25
    want_m = (1 - f) * rm.astype(np.float64) + f * mean
    want_v = (1 - f) * rv.astype(np.float64) + f * var * m / (m - 1)
    rc = fn("update_running", dtype)(ptr(rm), ptr(rv), ptr(mean), ptr(var), 3, m, f)
    assert rc == CBN_OK
    np.testing.assert_array_equal(rm, want_m.astype(dtype))
    np.testing.assert_array_equal(rv, want_v.astype(dtype))


def test_status_codes_and_nothing_written_on_error():
    x = np.ones((4, 3, 2))
    y = np.full_like(x, 7.0)
    mean, var = np.full(3, 7.0), np.full(3, 7.0)
    cases = [
        (CBN_ERR_ARG, (ptr(x), ptr(y), -1, 3, 2, None, None, 1e-5, ptr(mean), ptr(var))),
        (CBN_ERR_ARG, (None, ptr(y), 4, 3, 2, None, None, 1e-5, ptr(mean), ptr(var))),
        (CBN_ERR_ARG, (ptr(x), ptr(y), 2**40, 2**20, 2**10, None, None, 1e-5, None, None)),
        (CBN_ERR_EPS, (ptr(x), ptr(y), 4, 3, 2, None, None, -1.0, ptr(mean), ptr(var))),
        (CBN_ERR_EPS, (ptr(x), ptr(y), 4, 3, 2, None, None, float("nan"), ptr(mean), ptr(var))),
        (CBN_ERR_EMPTY, (ptr(x), ptr(y), 0, 3, 2, None, None, 1e-5, ptr(mean), ptr(var))),
    ]
    for want, args in cases:
        assert LIB.cbn_forward_train_f64(*args) == want
        assert (y == 7.0).all() and (mean == 7.0).all() and (var == 7.0).all()
        assert LIB.cbn_status_message(want) != LIB.cbn_status_message(CBN_OK)
    # momentum outside [0, 1] and m < 2 are rejected by the running update
    rm, rv = np.zeros(3), np.ones(3)
    assert LIB.cbn_update_running_f64(ptr(rm), ptr(rv), ptr(mean), ptr(var), 3, 1, 0.1) == CBN_ERR_ARG
    assert LIB.cbn_update_running_f64(ptr(rm), ptr(rv), ptr(mean), ptr(var), 3, 5, 1.5) == CBN_ERR_ARG
    assert (rm == 0).all() and (rv == 1).all()


def test_inference_and_backward_accept_empty_batch():
    x = np.empty((0, 3, 2))
    mean, var = np.zeros(3), np.ones(3)
    assert LIB.cbn_forward_infer_f64(ptr(x), ptr(x), 0, 3, 2, ptr(mean), ptr(var),
                                     None, None, 1e-5) == CBN_OK
    dg, db = np.full(3, 7.0), np.full(3, 7.0)
    assert LIB.cbn_backward_f64(ptr(x), ptr(x), ptr(x), 0, 3, 2, ptr(mean), ptr(var),
                                None, 1e-5, 0, ptr(dg), ptr(db)) == CBN_OK
    assert (dg == 0).all() and (db == 0).all()
    assert LIB.cbn_backward_f64(ptr(x), ptr(x), ptr(x), 0, 3, 2, ptr(mean), ptr(var),
                                None, 1e-5, 1, ptr(dg), ptr(db)) == CBN_ERR_EMPTY
