"""Every SIMD level against the scalar reference, and the run-time configuration.

The kernels are one template compiled per instruction-set level; the scalar
level is plain C. Each level the CPU supports must agree with it (to rounding:
vector lanes sum in another order) on shapes that reach every code path:
short and long runs (more than one chunk, more than one segment), row blocks
wider than a vector and with tails, and both data types.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import cbn
from cbn import kernels
from cbn.kernels import CHUNK, INFER_COEFS, ROW_BLOCK, SEG_CHUNKS
from checks import (CANCELLED_DX_TOLERANCE, LARGE_DGAMMA_TOLERANCE, LARGE_STATS_TOLERANCE,
                    LARGE_Y_TOLERANCE, REDONE_STATS_TOLERANCE, REDONE_Y_TOLERANCE,
                    assert_rounding_close, assert_stats_close, assert_within)
from oracle import batch_axes, normalize_ref

LEVELS = kernels.simd_levels()

SEGMENT = SEG_CHUNKS * CHUNK   # values of one feature in one segment

# name -> (shape, batch axes), derived from the core's tuning constants so
# that each case keeps reaching its path when they change (checked by
# test_cases_reach_every_path): planes (inner > 1) shorter and longer than a
# chunk, features of several segments, more features than inference
# makes coefficients for at once; rows (inner == 1) with C below, at
# and above the column block, with a tail; odd sizes for vector tails.
CASES = {
    "planes-short": ((7, 5, 33), (0, 2)),
    "planes-long": ((3, 2, 2 * CHUNK + 904), (0, 2)),
    "planes-short-segments": ((SEGMENT // 700 + 18, 3, 700), (0, 2)),
    "planes-long-segments": ((9, 3, SEGMENT + 4232), (0, 2)),
    "planes-many-features": ((3, INFER_COEFS + 5, 9), (0, 2)),
    "rows-narrow": ((37, 19), 0),
    "rows-one-block": ((300, 300), 0),
    "rows-block-edge": ((40, ROW_BLOCK), 0),
    "rows-blocks": ((40, 2 * ROW_BLOCK + 3), 0),
    "rows-tall": ((1030, 5), 0),
    "rows-segments": ((3 * SEGMENT + 1696, 3), 0),
    "channels-last": ((5, 7, 9, 11), (0, 1, 2)),
}


def layout(shape, axis):
    """(C, inner, m): features, the length of a feature's contiguous runs
    (1: the rows layout), and the values per feature, as the core sees them."""
    batch = batch_axes(len(shape), axis)
    last_feature = max((i for i in range(len(shape)) if i not in batch), default=-1)
    C = int(np.prod([n for i, n in enumerate(shape) if i not in batch]))
    inner = int(np.prod(shape[last_feature + 1:]))
    return C, inner, int(np.prod(shape)) // C


def test_cases_reach_every_path():
    # The table must keep reaching every path when a tuning constant changes.
    planes = [layout(*c) for c in CASES.values() if layout(*c)[1] > 1]
    rows = [layout(*c) for c in CASES.values() if layout(*c)[1] == 1]
    assert any(inner < CHUNK and m > SEGMENT for _, inner, m in planes)
    assert any(CHUNK < inner < SEGMENT for _, inner, _ in planes)
    assert any(inner > SEGMENT for _, inner, _ in planes)
    # inference makes coefficients once per call up to INFER_COEFS features
    assert any(C <= INFER_COEFS and m > inner for C, inner, m in planes)
    assert any(C > INFER_COEFS for C, _, _ in planes)
    assert any(1 < C < ROW_BLOCK for C, _, _ in rows)
    assert any(C == ROW_BLOCK for C, _, _ in rows)
    assert any(C > 2 * ROW_BLOCK and C % ROW_BLOCK for C, _, _ in rows)
    assert any(m > SEGMENT for _, _, m in rows)


def run_all(x, axis, dy):
    y, mean, var = cbn.normalize_batch(x, 1.5, -0.5, axis=axis, return_stats=True)
    ye = cbn.normalize_batch(x, 1.5, -0.5, axis=axis, mean=mean + 0.25, var=var * 2)
    grads = cbn.normalize_batch_backward(dy, x, mean, var, 1.5, axis=axis)
    frozen = cbn.normalize_batch_backward(dy, x, mean, var, 1.5, axis=axis,
                                          batch_stats=False)
    return (y, mean, var, ye) + grads + frozen


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_level_matches_scalar_reference(simd_level, dtype, case):
    shape, axis = CASES[case]
    rng = np.random.default_rng(7)
    x = (rng.normal(size=shape) * 3 + 100).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    kernels.set_simd("scalar")  # the fixture restores the level afterwards
    ref = run_all(x, axis, dy)
    kernels.set_simd(simd_level)
    got = run_all(x, axis, dy)
    # statistics and outputs are computed in double (float32: also rounded
    # once to float32), so levels differ only by summation order
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    for r, g in zip(ref, got):
        assert g.dtype == r.dtype and g.shape == r.shape
        scale = max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(g, r, rtol=0, atol=rtol * scale)
    # and the reference itself is right
    yref = normalize_ref(x, 1.5, -0.5, axis=axis)[0]
    assert_rounding_close(ref[0], yref)


def test_level_results_do_not_depend_on_threads(simd_level):
    # C = 3 features of several segments each: with 2 threads the kernels
    # share each feature's segments between threads, with 1 they do not.
    rng = np.random.default_rng(3)
    outs = []
    for shape, axis in (CASES["planes-long-segments"], CASES["rows-segments"]):
        x = rng.normal(5, 2, size=shape).astype(np.float32)
        for n in (1, 2):
            cbn.set_num_threads(n)
            try:
                outs.append((n, run_all(x, axis, x[::-1].copy())))
            finally:
                cbn.set_num_threads(0)
    for (n1, a), (n2, b) in zip(outs[::2], outs[1::2]):
        for u, v in zip(a, b):
            assert u.tobytes() == v.tobytes()


def test_set_num_threads_round_trip():
    default = cbn.get_num_threads()
    serial = kernels.openmp_version() == 0  # a build without OpenMP: always 1
    try:
        cbn.set_num_threads(1)
        assert cbn.get_num_threads() == 1
        cbn.set_num_threads(3)
        assert cbn.get_num_threads() == (1 if serial else 3)
    finally:
        cbn.set_num_threads(0)
    assert cbn.get_num_threads() == default
    with pytest.raises(ValueError):
        cbn.set_num_threads(-1)


def test_unknown_level_is_rejected_and_nothing_changes():
    before = kernels.get_simd()
    with pytest.raises(ValueError, match="not available"):
        kernels.set_simd("avx9000")
    assert kernels.get_simd() == before
    assert LEVELS[0] == "scalar"
    if not os.environ.get("CBN_SIMD"):
        assert kernels.get_simd() == LEVELS[-1]  # the best level by default


def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(cbn.__file__)))


def test_environment_variable_forces_a_level():
    r = _python("import cbn.kernels as k; print(k.get_simd())", CBN_SIMD="scalar")
    assert r.returncode == 0 and r.stdout.strip() == "scalar"
    r = _python("import cbn.kernels as k; print(k.get_simd())", CBN_SIMD="nonsense")
    assert r.returncode == 0 and r.stdout.strip() == LEVELS[-1]
    assert "ignoring CBN_SIMD" in r.stderr


def test_show_config_reports_level_runtime_and_threads(capsys):
    cbn.show_config()
    out = capsys.readouterr().out
    assert kernels.get_simd() in out
    assert f"threads:            {cbn.get_num_threads()}" in out
    if kernels.openmp_version():
        threadpoolctl = pytest.importorskip("threadpoolctl")
        apis = [i["user_api"] for i in threadpoolctl.threadpool_info()]
        assert "openmp" in apis
        assert "OpenMP runtime" in out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((40, 3, 300), (0, 2)), ((5000, 7), 0)])
def test_statistics_exact_when_chunks_need_two_passes(simd_level, dtype,
                                                      shape, axis):
    # Chunks are summed once around a shift (the first value, then the running
    # mean) and redone with two passes when that would lose precision: an
    # outlier first value, and a ramp whose later chunks lie far from the
    # running mean, must both reach the two-pass accuracy.
    rng = np.random.default_rng(11)
    x = rng.normal(size=shape)
    first = (0, 0, 0) if len(shape) == 3 else (0, 0)
    x[first] = 1e7                                   # outlier first value
    ramp = np.linspace(0, 1e5, x.size).reshape(shape)
    for data in (x, x + ramp, np.sort(x, axis=0) * 1e3 + 1e6):
        data = data.astype(dtype)
        y, mean, var = cbn.normalize_batch(data, axis=axis, return_stats=True)
        yref, mref, vref = normalize_ref(data, axis=axis)
        assert_stats_close(mean, var, mref, vref, exact=True)
        # float64: (x - mean) cancels, so the error scales with the largest |y|
        scale = 1.0 if dtype == np.float32 else max(1.0, float(np.abs(yref).max()))
        assert_rounding_close(y, yref, scale=scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("jumping", [[5], [0, 17, 39], list(range(40))])
def test_rows_redo_only_the_columns_that_need_two_passes(simd_level, dtype,
                                                         jumping):
    # Rows layouts redo a chunk with two passes column by column when a few
    # columns' shifts are off, and the whole column block when many are
    # (more than one in eight): a level shift part-way through the batch
    # in one, three or all 40 columns must reach the two-pass accuracy
    # either way, and leave the other columns as they were.
    rng = np.random.default_rng(12)
    x = rng.normal(size=(3000, 40))
    x[1500:, jumping] += 1e5
    x = x.astype(dtype)
    y, mean, var = cbn.normalize_batch(x, axis=0, return_stats=True)
    yref, mref, vref = normalize_ref(x, axis=0)
    assert_stats_close(mean, var, mref, vref, bounds=REDONE_STATS_TOLERANCE)
    assert_within(y, yref, REDONE_Y_TOLERANCE)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_output_alignment(simd_level, dtype):
    # Stores are aligned by handling the first few elements one at a time;
    # those use an fma rounded like the vector lanes, so where the cut falls
    # (which depends on the output's address) must not change a bit.
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(6, 4, 77)) * 3 + 1e3).astype(dtype)
    dy = rng.normal(size=x.shape).astype(dtype)
    _, mean, var = cbn.normalize_batch(x, axis=(0, 2), return_stats=True)
    ys, dxs = [], []
    for offset in range(17):
        buf = np.empty(x.size + 17, dtype)
        out = buf[offset:offset + x.size].reshape(x.shape)
        ys.append(cbn.normalize_batch(x, 0.5, 2.0, axis=(0, 2), out=out).copy())
        out2 = np.empty(x.size + 17, dtype)[offset:offset + x.size].reshape(x.shape)
        dxs.append(cbn.normalize_batch_backward(dy, x, mean, var, 0.5, axis=(0, 2),
                                                out=out2)[0].copy())
    for y in ys[1:]:
        assert y.tobytes() == ys[0].tobytes()
    for dx in dxs[1:]:
        assert dx.tobytes() == dxs[0].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [1, 3, 20, 64, 100, 1000, ROW_BLOCK])
def test_rows_results_do_not_depend_on_alignment(simd_level, dtype, C):
    # Rows layouts whose columns fit one block run the elementwise passes over
    # the flat array, aligned to the output, with per-column coefficients
    # laid out periodically from the output's first aligned element (the
    # period, lcm(C, vector width), is too long for C = 1000 in float32,
    # which keeps the row loops). Wherever x, y and dx start, every bit must
    # be the same, and match the float64 oracle.
    rng = np.random.default_rng(C)
    rows = 67
    x = (rng.normal(size=(rows, C)) * 3 + 1e3).astype(dtype)
    dy = rng.normal(size=x.shape).astype(dtype)
    y0, mean, var = cbn.normalize_batch(x, 0.5, 2.0, axis=0, return_stats=True)
    yref = normalize_ref(x, 0.5, 2.0, axis=0)[0]
    assert_rounding_close(y0, yref)
    want = run_all(x, 0, dy)
    for offset in range(1, 17):
        def place(a):
            buf = np.empty(a.size + 17, dtype)
            v = buf[offset:offset + a.size].reshape(a.shape)
            v[...] = a
            return v
        xs, dys = place(x), place(dy)
        got = run_all(xs, 0, dys)
        for w, g in zip(want, got):
            assert g.tobytes() == w.tobytes()
        outs = [np.empty(x.size + 17, dtype)[offset:offset + x.size].reshape(x.shape)
                for _ in range(3)]
        y = cbn.normalize_batch(x, 1.5, -0.5, axis=0, out=outs[0])
        ye = cbn.normalize_batch(x, 1.5, -0.5, axis=0, mean=mean + 0.25,
                                 var=var * 2, out=outs[1])
        dx = cbn.normalize_batch_backward(dy, x, mean, var, 1.5, axis=0,
                                          out=outs[2])[0]
        for w, g in ((want[0], y), (want[3], ye), (want[4], dx)):
            assert g.tobytes() == w.tobytes()


@pytest.mark.slow
def test_streaming_stores_for_large_outputs_are_correct():
    # Outputs of 32 MiB and more are written with streaming stores (16 MiB
    # for training and backward); check such sizes against float64 per channel.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((17, 8, 128, 128), dtype=np.float32)  # 68 MiB
    x[:, 3] += 50.0
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    var = x.var(axis=(0, 2, 3), dtype=np.float64)
    y = cbn.normalize_batch(x, axis=(0, 2, 3), mean=mean, var=var)
    yt, m, v = cbn.normalize_batch(x, axis=(0, 2, 3), return_stats=True)
    assert_stats_close(m, v, mean, var)
    dx, _, _ = cbn.normalize_batch_backward(x, x, m, v, axis=(0, 2, 3),
                                            batch_stats=False)
    # batch statistics: dy = x + 1 gives dx = 0 up to rounding, through every
    # term of the formula (the sums are read with the next piece prefetched)
    dy = x + np.float32(1.0)
    dxb, dg, db = cbn.normalize_batch_backward(dy, x, m, v, axis=(0, 2, 3))
    n = x.size // x.shape[1]
    for c in range(x.shape[1]):
        xc = x[:, c].astype(np.float64)
        ref = (xc - mean[c]) / np.sqrt(var[c] + 1e-5)
        assert_rounding_close(y[:, c], ref)
        assert_rounding_close(yt[:, c], ref)
        assert_rounding_close(dx[:, c], xc / np.sqrt(v[c] + 1e-5))
        dyc = dy[:, c].astype(np.float64)
        assert_rounding_close(db[c], dyc.sum(), scale=0)
        assert_rounding_close(dg[c], (dyc * ref).sum(), scale=0)
        xhat = (xc - m[c]) / np.sqrt(v[c] + 1e-5)
        dref = (dyc - dyc.mean() - xhat * (dyc * xhat).mean()) / np.sqrt(v[c] + 1e-5)
        assert n == dyc.size
        assert_within(dxb[:, c], dref, CANCELLED_DX_TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("C", [20, 200])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prefetching_rows_loops_are_correct(dtype, C):
    # Rows layouts (features last) of 16 MiB and more prefetch rows ahead
    # (CBN_PREFETCH_MIN_BYTES), or, with several register strips a row (200
    # columns: several strips at every level), the next chunk in memory
    # order; either stops short of the last rows. Check such a size, with a
    # row count that is not a multiple of the chunking, against float64 per
    # feature.
    rng = np.random.default_rng(3)
    n = (16 << 20) // (C * np.dtype(dtype).itemsize) + 37
    x = rng.standard_normal((n, C)).astype(dtype)
    x[:, 5] += 1e3
    dy = rng.standard_normal((n, C)).astype(dtype)
    y, m, v = cbn.normalize_batch(x, axis=0, return_stats=True)
    ye = cbn.normalize_batch(x, axis=0, mean=m, var=v)
    dx, dg, db = cbn.normalize_batch_backward(dy, x, m, v, axis=0)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    mean, var = x64.mean(axis=0), x64.var(axis=0)
    assert_stats_close(m, v, mean, var, bounds=LARGE_STATS_TOLERANCE)
    xhat = (x64 - mean) / np.sqrt(var + 1e-5)
    assert_within(y, xhat, LARGE_Y_TOLERANCE)
    assert_within(ye, xhat, LARGE_Y_TOLERANCE)
    g = dy64.mean(axis=0)
    gx = (dy64 * xhat).mean(axis=0)
    dx_ref = (dy64 - g - xhat * gx) / np.sqrt(var + 1e-5)
    assert_rounding_close(dx, dx_ref)
    # dgamma, dbeta come back in x's dtype, summed in double
    assert_rounding_close(db, dy64.sum(axis=0), scale=0)
    assert_within(dg, (dy64 * xhat).sum(axis=0), LARGE_DGAMMA_TOLERANCE)

