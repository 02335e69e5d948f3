"""Property tests: any array cbn accepts gives the float64 oracle's answer.

Hypothesis draws the whole argument space at once: shapes of 0 to 5
dimensions with sizes 0 to 17 (and a few large ones that take the threaded
and streaming paths), every form of ``axis`` (None, an int, a tuple, in any
order and sign, sometimes out of range or repeated), every input dtype cbn
accepts (bool, signed and unsigned integers, float16/32/64) in both byte
orders, memory that is transposed, strided, reversed, unaligned (a view one
byte into a uint8 buffer) or read-only, and values of scale 1e-30 to 1e30
around offsets of up to 1e6 times that scale. Each call must either match
the oracle (tests/oracle.py) within the tolerances of tests/checks.py
(which also says why they are what they are) or raise the documented
error; nothing else passes.

Examples per CI run: 800 + 500 + 300 + 450 + 20 = 2070, derandomized (the
same every run) with no example database, so CI is reproducible.
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from numpy.exceptions import AxisError  # noqa: E402

import cbn  # noqa: E402
from checks import (TOLERANCE, W, assert_matches, check_backward,  # noqa: E402
                    check_normalize, check_stats, offset_ratio)
from oracle import (BatchNormRef, backward_ref, batch_axes, feature_shape,  # noqa: E402
                    normalize_ref, result_dtype)


def profile(n):
    """Settings for a property with ``n`` examples, the same every run."""
    return settings(max_examples=n, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
          np.int64, np.uint64, np.float16, np.float32, np.float64]

LARGE_SHAPES = [
    ((70000, 3), 0),                # rows, batch shared by threads
    ((3, 2, 12000), (0, 2)),        # planes, batch shared by threads
    ((4, 70, 300), (0, 2)),         # planes, one feature per thread
    ((900, 80), 0),                 # rows, one column block
    ((40, 2100), 0),                # rows, three column blocks
    ((2, 3, 4, 4000), (0, 2, 3)),   # NCHW
    ((16, 8, 8, 130), (0, 1, 2)),   # NHWC
]


# ------------------------------------------------------------- strategies --

@st.composite
def shapes(draw, min_dims=0):
    """0-5 dimensions of size 0-17, at most ~6000 elements (sizes are halved
    until they fit), or sometimes one of the large shapes."""
    ndim = draw(st.integers(min_dims, 5))
    shape = [draw(st.integers(0, 17)) for _ in range(ndim)]
    while np.prod(shape, dtype=np.int64) > 6000:
        i = int(np.argmax(shape))
        shape[i] //= 2
    return tuple(shape)


@st.composite
def axes(draw, ndim):
    """An ``axis`` argument: valid more often than not, in every form numpy
    accepts (None, int, tuple; negative; any order), sometimes invalid."""
    kind = draw(st.sampled_from(["none", "int", "tuple", "tuple", "bad"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, max(ndim - 1, -ndim))) if ndim else \
            draw(st.sampled_from([0, -1]))
    if kind == "tuple" and ndim:
        chosen = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
        return tuple(a - ndim if draw(st.booleans()) else a for a in chosen)
    if kind == "tuple":
        return ()
    # invalid: out of range, or repeated (possibly as a negative alias)
    if ndim and draw(st.booleans()):
        a = draw(st.integers(0, ndim - 1))
        return (a, a - ndim)
    return draw(st.sampled_from([ndim, -ndim - 1, ndim + 3]))


def axis_is_valid(axis, ndim):
    items = () if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    if any(not -ndim <= a < ndim for a in items):
        return False
    return len({a % ndim for a in items}) == len(items)


@st.composite
def values(draw, shape, dtype):
    """float64 values for ``dtype``: for floats, scale * (noise + offset)
    with scale 1e-30..1e30 and |offset| up to 1e6 (less for float16, whose
    range and precision are small); integers anywhere in their range; and
    now and then a constant feature or repeated values."""
    dtype = np.dtype(dtype).newbyteorder("=")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype == np.bool_:
        return rng.random(shape) < draw(st.sampled_from([0.0, 0.5, 1.0]))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = max(int(info.min), -2**62), min(int(info.max), 2**62)
        width = draw(st.sampled_from([1, 10, 1000, hi - lo]))
        start = draw(st.integers(lo, hi - min(width, hi - lo)))
        return rng.integers(start, start + width, shape, endpoint=True)
    if dtype == np.float16:
        scale = 10.0 ** draw(st.integers(-4, 1))
        offset = draw(st.sampled_from([0.0, 1.0, -3.0, 100.0]))
    else:
        scale = 10.0 ** draw(st.integers(-30, 30))
        offset = draw(st.sampled_from([0.0, 0.0, 1.0, -5.0, 1e3, -1e6, 1e6]))
    v = np.array(scale * (rng.standard_normal(shape) + offset))  # 0-d stays an array
    pattern = draw(st.sampled_from(["noise", "noise", "noise", "constant", "few"]))
    if pattern == "constant":
        v[...] = scale * offset + scale
    elif pattern == "few":  # only a handful of distinct values
        v = np.array(scale * (rng.integers(-2, 3, shape) + offset))
    return v


@st.composite
def arrays(draw, shape, dtype):
    """An array of ``shape`` and ``dtype`` holding ``values``, in memory drawn
    at random: transposed, strided (step 2 or 3, forwards or backwards), in
    the other byte order, unaligned, read-only; any combination."""
    dtype = np.dtype(dtype)
    ndim = len(shape)
    if dtype.itemsize > 1 and draw(st.booleans()):
        dtype = dtype.newbyteorder()
    perm = tuple(draw(st.permutations(range(ndim)))) if ndim else ()
    steps = [draw(st.sampled_from([1, 1, 2, -1, -3])) for _ in range(ndim)]
    storage_shape = tuple(shape[p] * abs(steps[p]) for p in perm)
    nbytes = int(np.prod(storage_shape, dtype=np.int64)) * dtype.itemsize
    if dtype.itemsize > 1 and draw(st.booleans()):
        buf = np.zeros(nbytes + 1, np.uint8)[1:]
        storage = buf.view(dtype).reshape(storage_shape)
    else:
        storage = np.zeros(storage_shape, dtype)
    x = storage
    if ndim:  # (indexing a 0-d array with () would give a scalar)
        x = storage.transpose(np.argsort(perm))[tuple(slice(None, None, s) for s in steps)]
    assert x.shape == tuple(shape)
    x[...] = draw(values(shape, dtype))
    if draw(st.integers(0, 4)) == 0:
        x.flags.writeable = False
    return x


def per_feature(draw, F, scalar_ok=True):
    """None, a scalar or an array of shape F, of order one."""
    kind = draw(st.sampled_from(["none", "scalar", "array"] if scalar_ok else ["array"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "none":
        return None
    if kind == "scalar":
        return float(rng.uniform(-2, 2))
    return rng.uniform(-2, 2, F)


def oracle_eps(x64, rel):
    """eps relative to the data's spread (eps is in x's units squared)."""
    spread = np.ptp(x64) if x64.size else 0.0
    return rel * (spread * spread if spread > 0 else 1.0)


# ---------------------------------------------------------------- properties --

@profile(800)
@given(st.data())
def test_normalize_batch_matches_oracle_or_raises(data):
    draw = data.draw
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if draw(st.integers(0, 40)) == 0:
        shape, axis = draw(st.sampled_from(LARGE_SHAPES))
    else:
        shape = draw(shapes())
        axis = draw(axes(len(shape)))
    x = draw(arrays(shape, dtype))
    x_before = x.copy()
    ndim = x.ndim
    x64 = x.astype(np.float64)
    eps = oracle_eps(x64, draw(st.sampled_from([0.0, 1e-5, 1e-2, 1.0])))
    in_place = draw(st.integers(0, 3)) == 0
    if not axis_is_valid(axis, ndim):
        with pytest.raises(AxisError):
            cbn.normalize_batch(x, axis=axis, eps=eps)
        np.testing.assert_array_equal(x, x_before)
        return
    F = feature_shape(shape, axis)
    gamma, beta = per_feature(draw, F), per_feature(draw, F)
    m = int(np.prod([shape[a] for a in batch_axes(ndim, axis)], dtype=np.int64))
    rdt = result_dtype(dtype)
    out = x if in_place else None
    if in_place and (rdt != dtype.newbyteorder("=") or not x.flags.writeable):
        # out must have the result dtype and be writable
        exc = ValueError if rdt == dtype.newbyteorder("=") else TypeError
        with pytest.raises(exc):
            cbn.normalize_batch(x, gamma, beta, axis=axis, eps=eps, out=out)
        np.testing.assert_array_equal(x, x_before)
        return
    if m == 0 and int(np.prod(F, dtype=np.int64)) != 0:
        with pytest.raises(ValueError, match="empty batch"):
            cbn.normalize_batch(x, gamma, beta, axis=axis, eps=eps, out=out,
                                return_stats=True)
        np.testing.assert_array_equal(x, x_before)
        return
    y, mean, var = cbn.normalize_batch(x, gamma, beta, axis=axis, eps=eps, out=out,
                                       return_stats=True)
    if in_place:
        assert y is x
    else:
        np.testing.assert_array_equal(x, x_before)  # the input is left alone
    assert y.shape == shape and y.dtype.newbyteorder("=") == rdt  # out keeps its order
    assert mean.shape == F and var.shape == F and mean.dtype == np.float64
    check_normalize(x64, y, mean, var, gamma, beta, axis, eps)


@profile(300)
@given(st.data())
def test_normalize_batch_with_given_statistics_matches_oracle(data):
    draw = data.draw
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(shapes(min_dims=1))
    axis = draw(axes(len(shape)))
    if not axis_is_valid(axis, len(shape)):
        return  # covered above
    x = draw(arrays(shape, dtype))
    x64 = x.astype(np.float64)
    F = feature_shape(shape, axis)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spread = np.abs(x64).max(initial=1.0) or 1.0
    mean = x64.mean(axis=batch_axes(x.ndim, axis)) if x.size and all(F) else np.zeros(F)
    mean = mean + spread * rng.standard_normal(F) * 0.01
    var = (spread * rng.uniform(0.1, 2.0, F)) ** 2
    eps = draw(st.sampled_from([0.0, 1e-5]))
    gamma, beta = per_feature(draw, F), per_feature(draw, F)
    y = cbn.normalize_batch(x, gamma, beta, axis=axis, eps=eps, mean=mean, var=var)
    with np.errstate(all="ignore"):
        y_ref = normalize_ref(x64, gamma, beta, axis=axis, eps=eps, mean=mean, var=var)[0]
    rdt = result_dtype(dtype)
    r = offset_ratio(mean, var, eps, gamma, x.ndim, axis)
    assert y.dtype == rdt
    assert_matches(y, y_ref, TOLERANCE[rdt][0], W * r, "y", rdt)


@profile(500)
@given(st.data())
def test_normalize_batch_backward_matches_oracle_or_raises(data):
    draw = data.draw
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(shapes())
    axis = draw(axes(len(shape)))
    x = draw(arrays(shape, dtype))
    dy = draw(arrays(shape, draw(st.sampled_from([dtype, np.float32, np.float64]))))
    ndim = x.ndim
    x64 = x.astype(np.float64)
    batch_stats = draw(st.booleans())
    eps = oracle_eps(x64, draw(st.sampled_from([1e-5, 1e-2, 1.0])))
    if not axis_is_valid(axis, ndim):
        with pytest.raises(AxisError):
            cbn.normalize_batch_backward(dy, x, 0.0, 1.0, axis=axis, eps=eps)
        return
    F = feature_shape(shape, axis)
    m = int(np.prod([shape[a] for a in batch_axes(ndim, axis)], dtype=np.int64))
    if m and x.size:
        _, mean, var = normalize_ref(x64, axis=axis)
    else:
        mean, var = np.zeros(F), np.ones(F)
    gamma = per_feature(draw, F)
    dy_before, x_before = dy.copy(), x.copy()
    if batch_stats and m == 0 and int(np.prod(F, dtype=np.int64)) != 0:
        with pytest.raises(ValueError, match="empty batch"):
            cbn.normalize_batch_backward(dy, x, mean, var, gamma, axis=axis, eps=eps,
                                         batch_stats=batch_stats)
        return
    with np.errstate(over="ignore"):  # float16 results may overflow, see assert_matches
        dx, dgamma, dbeta = cbn.normalize_batch_backward(dy, x, mean, var, gamma, axis=axis,
                                                         eps=eps, batch_stats=batch_stats)
    np.testing.assert_array_equal(dy, dy_before)
    np.testing.assert_array_equal(x, x_before)
    rdt = result_dtype(dtype)
    assert dx.shape == shape and dx.dtype == rdt
    assert dgamma.shape == F and dbeta.shape == F and dgamma.dtype == rdt
    with np.errstate(all="ignore"):
        dx_ref, dgamma_ref, dbeta_ref = backward_ref(dy, x64, mean, var, gamma, axis=axis,
                                                     eps=eps, batch_stats=batch_stats)
    check_backward(dx, dgamma, dbeta, dx_ref, dgamma_ref, dbeta_ref, dy, x64, mean, var,
                   gamma, axis, eps, batch_stats, TOLERANCE[rdt][0])


@profile(450)
@given(st.data())
def test_layer_forward_and_backward_match_reference(data):
    draw = data.draw
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    shape = draw(shapes(min_dims=1))
    ndim = len(shape)
    feature_axis = draw(st.integers(-ndim - 1, ndim))
    kwargs = dict(eps=draw(st.sampled_from([1e-5, 1e-3, 1.0])),
                  momentum=draw(st.sampled_from([0.1, 0.5, None])),
                  affine=draw(st.booleans()),
                  track_running_stats=draw(st.booleans()))
    training = draw(st.booleans())
    if not -ndim <= feature_axis < ndim or shape[feature_axis] == 0:
        layer = cbn.BatchNorm(3, feature_axis=feature_axis, dtype=dtype, **kwargs)
        with pytest.raises(ValueError):
            layer(draw(arrays(shape, dtype)))
        return
    C = shape[feature_axis]
    layer = cbn.BatchNorm(C, feature_axis=feature_axis, dtype=dtype, **kwargs)
    ref = BatchNormRef(C, feature_axis=feature_axis, **kwargs)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if layer.affine:
        layer.gamma = rng.uniform(0.5, 2.0, C)
        layer.beta = rng.standard_normal(C)
        ref.gamma, ref.beta = layer.gamma.astype(np.float64), layer.beta.astype(np.float64)
    layer.train(training)
    ref.training = training
    x = draw(arrays(shape, dtype))
    x64 = x.astype(np.float64)
    m = x.size // C
    use_batch = training or not layer.track_running_stats
    if ndim < 2 or (use_batch and m == 0) or (training and m == 1):
        with pytest.raises(ValueError):
            layer(x)
        assert layer.num_batches_tracked == 0
        return
    y = layer(x)
    with np.errstate(all="ignore"):
        y_ref = ref.forward(x64)
    _, mean, var, axis, _ = ref._saved
    u = TOLERANCE[dtype][0]
    assert y.dtype == dtype and y.shape == shape
    r = offset_ratio(mean, var, layer.eps, ref.gamma, ndim, axis)
    assert_matches(y, y_ref, u, W * r)
    if layer.track_running_stats:
        assert layer.num_batches_tracked == ref.num_batches_tracked
        assert_matches(layer.running_mean, ref.running_mean, u, W * np.abs(mean) * 2)
        assert_matches(layer.running_var, ref.running_var, u, 0.0)
    dy = draw(arrays(shape, dtype))
    dx = layer.backward(dy)
    with np.errstate(all="ignore"):
        dx_ref = ref.backward(dy)
    if layer.affine:
        check_backward(dx, layer.dgamma, layer.dbeta, dx_ref, ref.dgamma, ref.dbeta, dy, x64,
                       mean, var, ref.gamma, axis, layer.eps, use_batch, u)
    else:
        dgamma_ref, dbeta_ref = ref.dgamma, ref.dbeta
        check_backward(dx, dgamma_ref, dbeta_ref, dx_ref, dgamma_ref, dbeta_ref, dy, x64,
                       mean, var, None, axis, layer.eps, use_batch, u)


@profile(20)
@given(st.data())
def test_large_arrays_match_oracle(data):
    """The threaded and split paths, on the shapes that take them."""
    draw = data.draw
    shape, axis = draw(st.sampled_from(LARGE_SHAPES))
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64, np.float16, np.int16])))
    x = draw(arrays(shape, dtype))
    x64 = x.astype(np.float64)
    y, mean, var = cbn.normalize_batch(x, 1.5, -0.5, axis=axis, return_stats=True)
    y_ref, mean_ref, var_ref = normalize_ref(x64, 1.5, -0.5, axis=axis)
    rdt = result_dtype(dtype)
    check_stats(mean, var, mean_ref, var_ref)
    r = offset_ratio(mean_ref, var_ref, 1e-5, 1.5, x.ndim, axis)
    assert_matches(y, y_ref, TOLERANCE[rdt][0], W * r, "y", rdt)
