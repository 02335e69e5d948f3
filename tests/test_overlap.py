"""Outputs that share memory with inputs: the answer computed on copies.

An ``out=`` array may overlap any argument: ``x`` (in place, reversed,
transposed, strided, shifted by some elements), and the per-feature arrays
(``gamma=x[0], out=x``). The kernels read per-feature arrays while other
threads already write their part of the output, and read a block of ``x``
while writing another, so every overlap must be detected and buffered, as
NumPy's ufuncs do. Each case is compared, bit for bit, with the same call on
copies of the arguments: the kernels' results do not depend on addresses.

Sizes cover one-thread calls (6 x 6) and calls of at least
``cbn.kernels.PARALLEL_MIN_WORK`` elements, from which the kernels use OpenMP
threads, in the rows, planes (NCHW) and split-batch (few features) paths.
"""
import numpy as np
import pytest

import cbn
from cbn.kernels import PARALLEL_MIN_WORK

# (shape, axis): a small block (one thread), and above PARALLEL_MIN_WORK
# rows (N x C), NCHW planes, few features.
CASES = {
    "small": ((6, 6), 0),
    "rows": ((PARALLEL_MIN_WORK // 16, 64), 0),
    "nchw": ((8, 16, 24, 24), (0, 2, 3)),
    "few-features": ((PARALLEL_MIN_WORK, 2), 0),
}


def test_cases_other_than_small_use_threads():
    for name, (shape, _) in CASES.items():
        assert (np.prod(shape) >= PARALLEL_MIN_WORK) == (name != "small"), name

# How out is made from a buffer holding x: name -> (x view, out view) of a
# buffer of x's shape (the buffer for "shifted" and "strided" is larger).
VIEWS = {
    "same": lambda b: (b, b),
    "reversed-first-axis": lambda b: (b, b[::-1]),
    "reversed-last-axis": lambda b: (b, b[..., ::-1]),
    "reversed-all": lambda b: (b, b[(slice(None, None, -1),) * b.ndim]),
    "transposed": lambda b: (b, _same_shape_transpose(b)),
    "shifted-ahead": lambda b: (_flat_view(b, 0), _flat_view(b, 1)),
    "shifted-behind": lambda b: (_flat_view(b, 1), _flat_view(b, 0)),
    "strided": lambda b: (_strided_view(b, 0), _strided_view(b, 2)),
    # no element in common, but interleaved: only their extents overlap
    "interleaved": lambda b: (_strided_view(b, 0), _strided_view(b, 1)),
}


def _same_shape_transpose(b):
    """A transposed view of ``b`` with ``b``'s shape: swap two axes of equal
    length (all of them square here), else reverse the order of the rows."""
    for i in range(b.ndim):
        for j in range(i + 1, b.ndim):
            if b.shape[i] == b.shape[j]:
                return np.swapaxes(b, i, j)
    return b[::-1]


def _flat_view(b, k):
    """A view of ``b``'s shape starting ``k`` elements into a buffer one
    element longer than b (b is that buffer's first view, k=0)."""
    return b.base_buffer[k:k + b.size].reshape(b.shape)


def _strided_view(b, k):
    """Every other element of a buffer about twice b's size, from element k."""
    return b.strided_buffer[k:k + 2 * b.size - 1:2].reshape(b.shape)


class _Buffers(np.ndarray):
    """An ndarray carrying the larger buffers the views are cut from."""


def buffers(rng, shape, dtype):
    n = int(np.prod(shape))
    flat = rng.normal(3.0, 2.0, 2 * n + 2).astype(dtype)
    b = flat[:n].reshape(shape).view(_Buffers)
    b.base_buffer = flat[:n + 1]
    b.strided_buffer = flat
    return b


def xy_pair(rng, case, view, dtype):
    """(x, out) for one case and view kind, both plain ndarrays."""
    shape, axis = CASES[case]
    b = buffers(rng, shape, dtype)
    x, out = VIEWS[view](b)
    return np.asarray(x), np.asarray(out), axis


def test_the_views_overlap():
    """Each view kind really shares memory with x (the tests below would
    pass trivially otherwise), and has x's shape."""
    rng = np.random.default_rng(0)
    for case in CASES:
        for view in VIEWS:
            x, out, _ = xy_pair(rng, case, view, np.float64)
            assert out.shape == x.shape
            if view == "interleaved":
                assert np.may_share_memory(x, out) and not np.shares_memory(x, out)
            else:
                assert np.shares_memory(x, out), (case, view)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["train", "infer"])
def test_out_overlapping_x(rng, case, view, dtype, mode):
    x, out, axis = xy_pair(rng, case, view, dtype)
    kw = {}
    if mode == "infer":
        _, m, v = cbn.normalize_batch(x, axis=axis, return_stats=True)
        kw = dict(mean=m + 0.25, var=v * 1.5)
    gamma = 1.5
    want = cbn.normalize_batch(x.copy(), gamma, -0.5, axis=axis, **kw)
    got = cbn.normalize_batch(x, gamma, -0.5, axis=axis, out=out, **kw)
    assert got is out
    np.testing.assert_array_equal(out, want)


def _feature_views(out, axis):
    """Per-feature views of ``out`` (float64, feature shape): the first
    feature row, a reversed one and a strided one."""
    fshape = np.delete(np.array(out.shape), np.atleast_1d(axis)).tolist()
    size = int(np.prod(fshape))
    flat = out.reshape(-1)
    return {
        "first": flat[:size].reshape(fshape),
        "middle": flat[flat.size // 2:flat.size // 2 + size].reshape(fshape),
        "reversed": flat[size - 1::-1][:size].reshape(fshape) if size > 1
        else flat[:1].reshape(fshape),
        "strided": flat[:2 * size:2].reshape(fshape),
    }


@pytest.mark.parametrize("which", ["gamma", "beta", "mean", "var"])
@pytest.mark.parametrize("place", ["first", "middle", "reversed", "strided"])
@pytest.mark.parametrize("case", list(CASES))
def test_per_feature_arguments_that_are_views_of_out(rng, case, place, which):
    """gamma, beta, mean or var living inside out (x itself: in place)."""
    shape, axis = CASES[case]
    x = rng.normal(3.0, 2.0, shape)
    np.abs(x, out=x)  # positive: any piece of x is a valid var
    fshape = np.delete(np.array(shape), np.atleast_1d(axis)).tolist()
    kw = {"gamma": np.full(fshape, 1.5), "beta": np.full(fshape, -0.5)}
    if which in ("mean", "var"):
        kw["mean"] = np.full(fshape, 2.0)
        kw["var"] = np.full(fshape, 3.0)
    kw[which] = _feature_views(x, axis)[place]
    copies = {k: np.array(v) for k, v in kw.items()}
    want = cbn.normalize_batch(x.copy(), axis=axis, return_stats=True, **copies)
    got = cbn.normalize_batch(x, axis=axis, out=x, return_stats=True, **kw)
    assert got[0] is x
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


BACKWARD_VIEWS = ["same", "reversed-first-axis", "reversed-last-axis",
                  "transposed", "shifted-ahead", "shifted-behind", "strided",
                  "interleaved"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("view", BACKWARD_VIEWS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("target", ["dy", "x"])
@pytest.mark.parametrize("batch_stats", [True, False])
def test_backward_out_overlapping_dy_or_x(rng, case, view, dtype, target, batch_stats):
    """dx written over (a view of) dy or x."""
    shape, axis = CASES[case]
    b = buffers(rng, shape, dtype)
    a, out = (np.asarray(v) for v in VIEWS[view](b))
    other = rng.normal(size=shape).astype(dtype)
    dy, x = (a, other) if target == "dy" else (other, a)
    _, m, v = cbn.normalize_batch(x, axis=axis, return_stats=True)
    want = cbn.normalize_batch_backward(dy.copy(), x.copy(), m, v, 1.5, axis=axis,
                                        batch_stats=batch_stats)
    got = cbn.normalize_batch_backward(dy, x, m, v, 1.5, axis=axis,
                                       batch_stats=batch_stats, out=out)
    assert got[0] is out
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("which", ["gamma", "mean", "var"])
@pytest.mark.parametrize("place", ["first", "middle", "reversed", "strided"])
@pytest.mark.parametrize("case", list(CASES))
def test_backward_per_feature_arguments_that_are_views_of_out(rng, case, place, which):
    """gamma, mean or var living inside dy, which dx overwrites."""
    shape, axis = CASES[case]
    x = rng.normal(size=shape)
    dy = np.abs(rng.normal(2.0, 1.0, shape))
    _, m, v = cbn.normalize_batch(x, axis=axis, return_stats=True)
    kw = {"mean": m, "var": v, "gamma": np.full(m.shape, 1.5)}
    kw[which] = _feature_views(dy, axis)[place]
    copies = {k: np.array(val) for k, val in kw.items()}
    want = cbn.normalize_batch_backward(dy.copy(), x, axis=axis, **copies)
    got = cbn.normalize_batch_backward(dy, x, axis=axis, out=dy, **kw)
    assert got[0] is dy
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
