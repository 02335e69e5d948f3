"""The fused forward: normalize_batch(..., residual=r, relu=True).

Two oracles: the separate steps on the compute dtype, ``numpy.maximum(
normalize_batch(x) + r, 0)``, which the fused pass must equal bit for bit
(every level, every loop shape, 1 and 2 threads); and the float64 batch norm
of tests/oracle.py followed by the same steps in float64.
"""
import numpy as np
import pytest

import cbn
from checks import assert_close
from oracle import normalize_ref
from test_simd import CASES


def unfused(x, axis, r, relu, **kw):
    """The separate steps, each on the compute dtype."""
    y = cbn.normalize_batch(x, 1.5, -0.25, axis=axis, **kw)
    if r is not None:
        y = y + r
    return np.maximum(y, 0) if relu else y


def given_stats(x, axis):
    s = cbn.batch_stats(x, axis=axis)
    return {"mean": s.mean + 0.125, "var": s.var() * 1.5}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_fused_is_bitwise_the_separate_steps(simd_level, threads, case, dtype):
    shape, axis = CASES[case]
    rng = np.random.default_rng(17)
    x = rng.normal(1.0, 3.0, shape).astype(dtype)
    r = rng.normal(0.0, 2.0, shape).astype(dtype)
    for nt in (1, 2):
        threads(nt)
        for stats in ({}, given_stats(x, axis)):
            for res, relu in ((r, False), (None, True), (r, True)):
                got = cbn.normalize_batch(x, 1.5, -0.25, axis=axis, residual=res, relu=relu,
                                          **stats)
                want = unfused(x, axis, res, relu, **stats)
                assert got.dtype == want.dtype
                assert got.tobytes() == want.tobytes(), (nt, bool(stats), res is None, relu)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["planes-short", "rows-blocks", "channels-last"])
def test_fused_matches_the_float64_oracle(case, dtype):
    shape, axis = CASES[case]
    rng = np.random.default_rng(18)
    x = rng.normal(-2.0, 3.0, shape).astype(dtype)
    r = rng.normal(0.5, 1.0, shape).astype(dtype)
    y_ref = normalize_ref(x, 1.5, -0.25, axis=axis)[0]
    want = np.maximum(y_ref + r.astype(np.float64), 0)
    got = cbn.normalize_batch(x, 1.5, -0.25, axis=axis, residual=r, relu=True)
    assert_close(got, want, scale=4.0)
    assert (got >= 0).all()


def test_relu_keeps_nan_and_turns_negative_zero_positive(simd_level):
    # A constant feature with gamma = -1 and beta = -0.0 normalizes to -0.0
    # exactly: 0 * (negative scale) + (-0.0).
    x = np.zeros((6, 3, 4), np.float32)
    x[:, 0] = np.nan
    x[:, 1] = 3.0
    x[:, 2] = np.arange(24, dtype=np.float32).reshape(6, 4)
    plain = cbn.normalize_batch(x, -1.0, -0.0, axis=(0, 2))
    assert np.signbit(plain[:, 1]).all() and (plain[:, 1] == 0).all()
    fused = cbn.normalize_batch(x, -1.0, -0.0, axis=(0, 2), relu=True)
    assert np.isnan(fused[:, 0]).all()
    assert (fused[:, 1] == 0).all() and not np.signbit(fused[:, 1]).any()
    assert fused.tobytes() == np.maximum(plain, 0).tobytes()
    # values exactly at 0 after the residual are 0 (positive), as numpy's;
    # NaN + NaN is a NaN, but which one (sign, payload) the compiler's
    # operand order decides, in numpy as here
    r = -plain
    zero = cbn.normalize_batch(x, -1.0, -0.0, axis=(0, 2), residual=r, relu=True)
    want = np.maximum(plain + r, 0)
    nan = np.isnan(want)
    assert (np.isnan(zero) == nan).all() and nan[:, 0].all()
    assert zero[~nan].tobytes() == want[~nan].tobytes()


@pytest.mark.parametrize("layout", ["strided", "transposed", "fortran"])
def test_residual_in_any_memory_layout(layout):
    rng = np.random.default_rng(19)
    x = rng.normal(size=(6, 4, 5, 3)).astype(np.float32)
    base = rng.normal(size=(6, 4, 5, 6)).astype(np.float32)
    r = {"strided": base[..., ::2],
         "transposed": np.ascontiguousarray(base[..., :3].transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0),
         "fortran": np.asfortranarray(base[..., 1:4])}[layout]
    assert r.shape == x.shape
    got = cbn.normalize_batch(x, axis=(0, 2, 3), residual=r, relu=True)
    want = np.maximum(cbn.normalize_batch(x, axis=(0, 2, 3)) + r, 0)
    assert got.tobytes() == want.tobytes()


def test_residual_may_be_the_output_or_x():
    rng = np.random.default_rng(20)
    x = rng.normal(size=(16, 8)).astype(np.float32)
    r = rng.normal(size=(16, 8)).astype(np.float32)
    want = np.maximum(cbn.normalize_batch(x) + r, 0)
    buf = r.copy()
    got = cbn.normalize_batch(x, residual=buf, out=buf, relu=True)
    assert got is buf and buf.tobytes() == want.tobytes()
    xs = x.copy()
    got = cbn.normalize_batch(xs, residual=xs, out=xs)
    assert got.tobytes() == (cbn.normalize_batch(x) + x).tobytes()
    # a residual overlapping the output only in part is read before it is
    # overwritten
    both = rng.normal(size=(17, 8)).astype(np.float32)
    r_view, out_view = both[:16], both[1:]
    want = cbn.normalize_batch(x) + r_view
    cbn.normalize_batch(x, residual=r_view, out=out_view)
    assert out_view.tobytes() == want.tobytes()


def test_residual_dtypes_cast_safely():
    rng = np.random.default_rng(21)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    r16 = rng.normal(size=(10, 3)).astype(np.float16)
    got = cbn.normalize_batch(x, residual=r16)
    assert got.tobytes() == (cbn.normalize_batch(x) + r16.astype(np.float32)).tobytes()
    rint = np.arange(30, dtype=np.int8).reshape(10, 3)
    got = cbn.normalize_batch(x, residual=rint)
    assert got.tobytes() == (cbn.normalize_batch(x) + rint.astype(np.float32)).tobytes()
    # float16 data are computed in float32, the residual with them
    h = x.astype(np.float16)
    got = cbn.normalize_batch(h, residual=r16, relu=True)
    y32 = cbn.normalize_batch(h.astype(np.float32))
    assert got.dtype == np.float16
    assert got.tobytes() == np.maximum(y32 + r16.astype(np.float32), 0).astype(np.float16).tobytes()


def test_bad_residuals_are_refused_and_nothing_is_written():
    rng = np.random.default_rng(22)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    out = np.full_like(x, 7.0)
    bad = [((np.zeros((10, 4), np.float32)), ValueError, "residual has shape"),
           ((np.zeros((3,), np.float32)), ValueError, "residual has shape"),
           ((np.zeros((10, 3), np.float64)), TypeError, "cast safely"),
           ((np.zeros((10, 3), complex)), TypeError, "cast safely"),
           ((np.ma.masked_array(np.zeros((10, 3), np.float32))), TypeError, "MaskedArray")]
    for residual, error, message in bad:
        with pytest.raises(error, match=message):
            cbn.normalize_batch(x, residual=residual, relu=True, out=out)
        assert (out == 7.0).all()


def test_the_c_entry_points_are_the_plain_ones_without_an_epilogue():
    import ctypes
    import cbn.kernels
    lib = ctypes.CDLL(cbn.kernels.__file__)
    DP, FP, I64 = (ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_float),
                   ctypes.c_int64)
    f = lib.cbn_forward_train_fused_f32
    f.argtypes = [FP, FP, I64, I64, I64, DP, DP, ctypes.c_double, DP, DP, FP, ctypes.c_int]
    x = np.random.default_rng(23).normal(size=(5, 4, 7)).astype(np.float32)
    r = np.ones_like(x)
    y = np.empty_like(x)
    mean, var = np.empty(4), np.empty(4)
    ptr = (lambda a, t: a.ctypes.data_as(t))
    assert f(ptr(x, FP), ptr(y, FP), 5, 4, 7, None, None, 1e-5, ptr(mean, DP), ptr(var, DP),
             ptr(r, FP), 1) == 0
    want, m, v = cbn.normalize_batch(x, axis=(0, 2), return_stats=True)
    assert y.tobytes() == np.maximum(want + r, 0).tobytes()
    assert mean.tobytes() == m.tobytes() and var.tobytes() == v.tobytes()
    assert f(ptr(x, FP), ptr(y, FP), 5, 4, 7, None, None, -1.0, None, None, None, 0) == -3


@pytest.mark.parametrize("shape,axis", [((4, 3, 37), (0, 2)), ((300, 7), 0),
                                        ((40, 1100), 0)])
def test_cold_features_take_the_epilogue_too(simd_level, shape, axis):
    # float32 subnormal data with eps = 0: coefficients float32 cannot hold,
    # computed in double (see core/cold.h), then the epilogue
    x = (np.arange(1, np.prod(shape) + 1).reshape(shape) % 97 * 1e-40).astype(np.float32)
    r = np.random.default_rng(24).normal(size=shape).astype(np.float32)
    for stats in ({}, {"mean": cbn.batch_stats(x, axis=axis).mean,
                       "var": cbn.batch_stats(x, axis=axis).var()}):
        got = cbn.normalize_batch(x, axis=axis, eps=0, residual=r, relu=True, **stats)
        plain = cbn.normalize_batch(x, axis=axis, eps=0, **stats)
        assert np.isfinite(plain).all()
        assert got.tobytes() == np.maximum(plain + r, 0).tobytes()


@pytest.mark.parametrize("shape,axis", [((64, 32, 64, 64), (0, 2, 3)),  # 33.5 MB planes
                                        ((65536, 65), 0)])              # 17 MB rows
def test_streamed_outputs_take_the_epilogue(shape, axis):
    # outputs this large are written with streaming stores (core/tuning.h)
    rng = np.random.default_rng(25)
    x = rng.normal(size=shape).astype(np.float32)
    r = rng.normal(size=shape).astype(np.float32)
    for stats in ({}, given_stats(x, axis)):
        got = cbn.normalize_batch(x, axis=axis, residual=r, relu=True, **stats)
        plain = cbn.normalize_batch(x, axis=axis, **stats)
        np.add(plain, r, out=plain)
        np.maximum(plain, 0, out=plain)
        assert got.tobytes() == plain.tobytes()


# ----------------------------------------------------------------- backward --

from checks import assert_matches_finite_differences  # noqa: E402
from oracle import central_difference  # noqa: E402


@pytest.mark.parametrize("shape,axis", [((5, 3, 4), (0, 2)), ((12, 4), 0)])
@pytest.mark.parametrize("batch_stats", [True, False])
def test_backward_through_residual_and_relu_matches_finite_differences(shape, axis,
                                                                      batch_stats):
    # f = sum(w * relu(BN(x; gamma, beta) + r)), in float64, with every
    # pre-activation at least 0.05 from the ReLU's kink
    rng = np.random.default_rng(30)
    x = rng.normal(1.0, 2.0, shape)
    F = np.asarray(cbn.batch_stats(x, axis=axis).mean).shape
    gamma, beta = rng.normal(1.0, 0.3, F), rng.normal(0.0, 0.5, F)
    r = rng.normal(size=shape)
    z = cbn.normalize_batch(x, gamma, beta, axis=axis) + r
    r += np.where(np.abs(z) < 0.05, 0.1, 0.0)
    w = rng.normal(size=shape)
    stats = None if batch_stats else given_stats(x, axis)

    def f():
        kw = {} if stats is None else stats
        return float(np.sum(w * cbn.normalize_batch(x, gamma, beta, axis=axis,
                                                     residual=r, relu=True, **kw)))

    y, mean, var = cbn.normalize_batch(x, gamma, beta, axis=axis, residual=r, relu=True,
                                       return_stats=True,
                                       **({} if stats is None else stats))
    dr = np.empty_like(w)
    dx, dgamma, dbeta = cbn.normalize_batch_backward(w, x, mean, var, gamma, axis=axis,
                                                     batch_stats=batch_stats, relu=True,
                                                     y=y, out_residual=dr)
    assert_matches_finite_differences(dx, central_difference(f, x), "dx")
    assert_matches_finite_differences(dgamma, central_difference(f, gamma), "dgamma")
    assert_matches_finite_differences(dbeta, central_difference(f, beta), "dbeta")
    assert_matches_finite_differences(dr, central_difference(f, r), "dresidual")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["planes-short", "rows-blocks", "channels-last"])
def test_the_mask_recomputed_from_beta_is_the_forwards(case, dtype):
    shape, axis = CASES[case]
    rng = np.random.default_rng(31)
    x = rng.normal(0.3, 2.0, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    y, mean, var = cbn.normalize_batch(x, 1.5, -0.25, axis=axis, relu=True,
                                       return_stats=True)
    from_y = cbn.normalize_batch_backward(dy, x, mean, var, 1.5, axis=axis, relu=True, y=y)
    from_beta = cbn.normalize_batch_backward(dy, x, mean, var, 1.5, axis=axis, relu=True,
                                             beta=-0.25)
    unfused = cbn.normalize_batch_backward(np.where(y > 0, dy, 0), x, mean, var, 1.5,
                                           axis=axis)
    for a, b, c in zip(from_y, from_beta, unfused):
        assert a.tobytes() == b.tobytes() == c.tobytes()


def test_no_gradient_where_the_output_was_zero_or_nan():
    y = np.array([[0.0, 1.0], [np.nan, 2.0], [3.0, -0.0], [4.0, 5.0]])
    x = np.arange(8.0).reshape(4, 2)
    mean, var = x.mean(axis=0), x.var(axis=0)
    dr = np.full_like(x, 9.0)
    _, _, dbeta = cbn.normalize_batch_backward(np.ones_like(x), x, mean, var, relu=True,
                                               y=y, out_residual=dr)
    np.testing.assert_array_equal(dbeta, [2.0, 3.0])  # the entries of y > 0
    np.testing.assert_array_equal(dr, (y > 0).astype(float))


def test_bad_relu_arguments_are_refused_and_nothing_is_written():
    rng = np.random.default_rng(32)
    x = rng.normal(size=(6, 3))
    dy = rng.normal(size=(6, 3))
    mean, var = x.mean(axis=0), x.var(axis=0)
    out, dr = np.full_like(x, 7.0), np.full_like(x, 7.0)
    bad = [({"relu": True}, ValueError, "needs the forward's output y"),
           ({"relu": True, "y": np.zeros((6, 4))}, ValueError, "y has shape"),
           ({"relu": True, "y": np.zeros((6, 3), complex)}, TypeError, "real"),
           ({"relu": True, "beta": np.zeros(4)}, ValueError, "beta"),
           ({"relu": True, "y": x, "out_residual": np.zeros((6, 4))}, ValueError,
            "out_residual has shape"),
           ({"relu": True, "y": x, "out_residual": np.zeros((6, 3), int)}, TypeError,
            "does not cast"),
           ({"relu": True, "y": x, "out_residual": [0.0] * 18}, TypeError, "ndarray")]
    for kw, error, message in bad:
        kw.setdefault("out_residual", dr)
        with pytest.raises(error, match=message):
            cbn.normalize_batch_backward(dy, x, mean, var, out=out, **kw)
        assert (out == 7.0).all() and (dr == 7.0).all()


# ------------------------------------------------------------ gated backward --
# The backward kernels gate dy as they read it (cbn_backward_gated): from the
# forward's output y, or from a bit mask. Oracle: the ungated backward of
# numpy.where(y > 0, dy, 0), which the gated one must equal bit for bit.

import ctypes  # noqa: E402

import cbn.kernels  # noqa: E402

_LIB = ctypes.CDLL(cbn.kernels.__file__)
_DP = ctypes.POINTER(ctypes.c_double)
_BP = ctypes.POINTER(ctypes.c_uint8)
for _sfx, _ct in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
    _TP = ctypes.POINTER(_ct)
    getattr(_LIB, f"cbn_backward_gated_{_sfx}").argtypes = [
        _TP, _TP, _TP, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, _DP, _DP, _DP,
        ctypes.c_double, ctypes.c_int, _DP, _DP, _TP, _BP]


def _ptr(a, ctype=None):
    if a is None:
        return None
    return a.ctypes.data_as(ctypes.POINTER(ctype or np.ctypeslib.as_ctypes_type(a.dtype)))


def gated_c(dy, x, y, bits, mean, var, gamma, batch_stats, dx=None):
    """cbn_backward_gated on a C-contiguous (outer, C, inner) block."""
    outer, C, inner = x.shape
    sfx = "f32" if x.dtype == np.float32 else "f64"
    dx = np.full_like(x, 7.0) if dx is None else dx
    dg, db = np.full(C, 7.0), np.full(C, 7.0)
    status = getattr(_LIB, f"cbn_backward_gated_{sfx}")(
        _ptr(dy), _ptr(x), _ptr(dx), outer, C, inner, _ptr(mean), _ptr(var), _ptr(gamma),
        1e-5, int(batch_stats), _ptr(dg), _ptr(db), _ptr(y), _ptr(bits, ctypes.c_uint8))
    return status, dx, dg, db


def as_block(a, axis):
    """``a`` as the C core's (outer, C, inner) block, for the CASES (whose
    batch axes lead or trail)."""
    C, inner, _ = layout(a.shape, axis)
    return np.ascontiguousarray(a).reshape(-1, C, inner)


from test_simd import layout  # noqa: E402


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_gated_backward_is_bitwise_the_masked_one(simd_level, threads, case, dtype):
    shape, axis = CASES[case]
    rng = np.random.default_rng(33)
    x = rng.normal(0.5, 2.0, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    r = rng.normal(size=shape).astype(dtype)
    y = cbn.normalize_batch(x, 1.5, -0.25, axis=axis, residual=r, relu=True)
    y.reshape(-1)[::7] = np.nan   # NaN and exact zeros do not pass
    y.reshape(-1)[3::11] = 0.0
    dy.reshape(-1)[5::13] = np.nan  # a NaN in dy passes where the gate does
    mask = y > 0
    xb, dyb, yb = as_block(x, axis), as_block(dy, axis), as_block(y, axis)
    bits = np.packbits(as_block(mask, axis).reshape(-1), bitorder="little")
    C = xb.shape[1]
    mean = rng.normal(0.5, 0.1, C)
    var = rng.uniform(3.0, 5.0, C)
    gamma = rng.normal(1.0, 0.2, C)
    masked = np.where(as_block(mask, axis), dyb, dtype(0))
    for nt in (1, 2):
        threads(nt)
        for batch_stats in (True, False):
            want = gated_c(masked, xb, None, None, mean, var, gamma, batch_stats)
            assert want[0] == 0
            for gate in ({"y": yb, "bits": None}, {"y": None, "bits": bits}):
                got = gated_c(dyb, xb, mean=mean, var=var, gamma=gamma,
                              batch_stats=batch_stats, **gate)
                assert got[0] == 0
                for a, b in zip(got[1:], want[1:]):
                    assert a.tobytes() == b.tobytes(), (nt, batch_stats, gate["y"] is None)
            # in place: dx may be dy
            inplace = dyb.copy()
            got = gated_c(inplace, xb, None, bits, mean, var, gamma, batch_stats, dx=inplace)
            assert inplace.tobytes() == want[1].tobytes()


def test_gated_backward_cold_features(simd_level):
    # float32 subnormal data with eps = 0 (see core/cold.h): dx in double
    x = (np.arange(1, 4 * 3 * 37 + 1).reshape(4, 3, 37) % 97 * 1e-40).astype(np.float32)
    dy = np.random.default_rng(34).normal(size=x.shape).astype(np.float32)
    y, mean, var = cbn.normalize_batch(x, axis=(0, 2), eps=0, return_stats=True)
    assert np.isfinite(y).all() and (y > 0).any() and (y <= 0).any()
    for batch_stats in (True, False):
        got = cbn.normalize_batch_backward(dy, x, mean, var, axis=(0, 2), eps=0,
                                           batch_stats=batch_stats, relu=True, y=y)
        want = cbn.normalize_batch_backward(np.where(y > 0, dy, 0), x, mean, var,
                                            axis=(0, 2), eps=0, batch_stats=batch_stats)
        for a, b in zip(got, want):
            assert a.tobytes() == b.tobytes()


def test_gated_backward_refuses_two_gates_or_no_dx():
    x = np.ones((2, 3, 4))
    y = np.ones_like(x)
    bits = np.packbits(y.reshape(-1) > 0, bitorder="little")
    mean, var = np.zeros(3), np.ones(3)
    status, dx, dg, db = gated_c(x, x, y, bits, mean, var, None, True)
    assert status == -1 and (dx == 7.0).all() and (dg == 7.0).all()
    sfx_fn = _LIB.cbn_backward_gated_f64
    dg = np.full(3, 7.0)
    assert sfx_fn(_ptr(x), _ptr(x), None, 2, 3, 4, _ptr(mean), _ptr(var), None, 1e-5, 1,
                  _ptr(dg), None, _ptr(y), None) == -1
    assert (dg == 7.0).all()
    # neither gate: cbn_backward itself, dx optional
    assert sfx_fn(_ptr(x), _ptr(x), None, 2, 3, 4, _ptr(mean), _ptr(var), None, 1e-5, 1,
                  _ptr(dg), None, None, None) == 0


def test_function_backward_with_out_aliasing_x_or_y():
    # dx may not be written over x or the gate while the kernel reads them:
    # such an out gets a result computed elsewhere, then copied
    rng = np.random.default_rng(35)
    for shape, axis in (((6, 5), 0), ((4, 3, 10), (0, 2))):
        x = rng.normal(size=shape)
        dy = rng.normal(size=shape)
        y, mean, var = cbn.normalize_batch(x, axis=axis, relu=True, return_stats=True)
        want = cbn.normalize_batch_backward(np.where(y > 0, dy, 0), x, mean, var, axis=axis)
        for target in ("x", "y", "dy"):
            xx, yy, dd = x.copy(), y.copy(), dy.copy()
            out = {"x": xx, "y": yy, "dy": dd}[target]
            got = cbn.normalize_batch_backward(dd, xx, mean, var, axis=axis, relu=True,
                                               y=yy, out=out)
            assert got[0] is out
            for a, b in zip(got, want):
                assert a.tobytes() == b.tobytes(), target


for _sfx, _ct in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
    getattr(_LIB, f"cbn_relu_mask_{_sfx}").argtypes = [ctypes.POINTER(_ct), ctypes.c_int64, _BP]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_mask_is_numpys_packbits(simd_level, threads, dtype):
    # every tail length of a byte and of a vector, values at 0, -0.0, NaN,
    # infinities and the smallest subnormals of either sign
    rng = np.random.default_rng(36)
    specials = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf], dtype)
    tiny = np.finfo(dtype).smallest_subnormal
    fn = getattr(_LIB, f"cbn_relu_mask_{'f32' if dtype == np.float32 else 'f64'}")
    for nt in (1, 2):
        threads(nt)
        for n in list(range(0, 40)) + [1000, 4099, 70001]:
            y = rng.normal(size=n).astype(dtype)
            y[::5] = rng.choice(np.concatenate([specials, [tiny, -tiny]]), y[::5].shape)
            bits = np.full((n + 7) // 8, 0xAA, np.uint8)
            assert fn(_ptr(y), n, _ptr(bits, ctypes.c_uint8)) == 0
            want = np.packbits(y > 0, bitorder="little")
            assert bits.tobytes() == want.tobytes(), (nt, n)


def test_relu_mask_refuses_bad_arguments():
    y = np.ones(9, np.float32)
    bits = np.zeros(2, np.uint8)
    assert _LIB.cbn_relu_mask_f32(_ptr(y), -1, _ptr(bits, ctypes.c_uint8)) == -1
    assert _LIB.cbn_relu_mask_f32(None, 9, _ptr(bits, ctypes.c_uint8)) == -1
    assert _LIB.cbn_relu_mask_f32(_ptr(y), 9, None) == -1
    assert (bits == 0).all()
    assert _LIB.cbn_relu_mask_f32(None, 0, None) == 0
