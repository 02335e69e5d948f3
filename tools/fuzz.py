"""Coverage-guided fuzzing of cbn's public API with atheris (libFuzzer).

Each input is a byte string that this harness decodes into one call: which
function or layer method, the array's shape (0-5 dimensions), dtype (every
one cbn accepts and some it must refuse), memory layout (transposed,
strided, reversed, byte-swapped, unaligned, read-only), values (raw bit
patterns, so NaN, Inf, subnormals and extremes all occur, or scaled normal
noise), ``axis`` in every form valid or not, ``eps``, ``momentum``,
``gamma``/``beta``/``mean``/``var`` of right or wrong shape and type, and
``out``, which may also overlap the inputs (shifted, reversed, transposed or
strided views of one buffer, and per-feature arguments that live inside it).
A call passes when it either

* raises the documented exception type (ValueError, AxisError, TypeError;
  RuntimeError only for backward() before forward()), having modified none
  of its arguments and none of the layer's state, or
* returns results of the documented shapes and dtypes that match the float64
  oracle (tests/oracle.py, tolerances of tests/checks.py) on every feature
  whose values are finite and below 1e150, while a feature holding NaN or
  Inf comes out all NaN (training) -- it poisons only itself.

A call with an overlapping ``out`` passes when it gives bit for bit what the
same call gives on copies of its arguments, or raises what that call raises,
having modified nothing.

Anything else (another exception, a wrong result, a crash) stops the run
with the input that caused it, which libFuzzer saves as crash-<sha1>.

Run from the repository root, with cbn built in place::

    python tools/fuzz.py -max_total_time=60          # bounded time, as in CI
    python tools/fuzz.py -runs=100000 corpus_dir/    # a run count, a corpus

libFuzzer prints the number of inputs tried ("Done N runs in T second(s)")
at the end.

Coverage comes from the Python code atheris instruments: this decoder's
branches (which shape, layout, dtype, error path was reached), cbn's Python
modules and the oracle. The compiled core is not instrumented: a clang
build with -fsanitize-coverage loads only when atheris' libFuzzer is
visible to it, which the PyPI wheel of atheris does not arrange (building
atheris from source with its sanitizer runtimes does).
"""
import operator
import os
import sys

import numpy as np

try:
    import atheris
except ImportError:  # pragma: no cover - the message is the point
    sys.exit("tools/fuzz.py needs atheris: pip install -e '.[fuzz]'")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

with atheris.instrument_imports():
    import cbn
    from checks import (TOLERANCE, W, assert_matches, check_backward, check_stats,
                        expand, offset_ratio)
    from oracle import BatchNormRef, backward_ref, batch_axes, feature_shape, normalize_ref

ACCEPTED = [np.float64, np.float32, np.float16, np.int8, np.uint8, np.int16,
            np.int32, np.uint32, np.int64, np.uint64, np.bool_]
REFUSED = [np.complex64, np.complex128, object, "U2", "S2", "datetime64[s]"]
DOCUMENTED = (ValueError, TypeError)  # AxisError is a ValueError
BIG = 1e150   # beyond this the float64 oracle's own squares overflow


class Decoder:
    """Draws the pieces of a call from the fuzzer's bytes."""

    def __init__(self, data):
        self.fdp = atheris.FuzzedDataProvider(data)

    def int(self, lo, hi):
        return self.fdp.ConsumeIntInRange(lo, hi)

    def pick(self, options):
        return options[self.int(0, len(options) - 1)]

    def bool(self):
        return self.fdp.ConsumeBool()

    def float(self):
        """Any double: NaN, Inf, negative, subnormal, huge."""
        return self.fdp.ConsumeFloat()

    def shape(self, min_dims=0):
        shape = [self.int(0, 7) for _ in range(self.int(min_dims, 5))]
        while np.prod(shape, dtype=np.int64) > 600:
            shape[int(np.argmax(shape))] //= 2
        return tuple(shape)

    def axis(self, ndim):
        kind = self.int(0, 6)
        if kind == 0:
            return None
        if kind <= 2:
            return self.int(-ndim - 2, ndim + 1)
        if kind <= 5:
            return tuple(self.int(-ndim - 1, ndim) for _ in range(self.int(0, ndim + 1)))
        return self.pick([1.5, "0", [0], np.int64(0), True, (0.0,)])

    def values(self, shape, dtype):
        n = int(np.prod(shape, dtype=np.int64))
        dtype = np.dtype(dtype)
        if self.bool():  # raw bit patterns
            raw = self.fdp.ConsumeBytes(n * dtype.itemsize)
            raw = raw + bytes(n * dtype.itemsize - len(raw))
            return np.frombuffer(raw, dtype).reshape(shape)
        rng = np.random.default_rng(self.int(0, 2**32 - 1))
        if dtype.kind == "b":
            return rng.random(shape) < 0.5
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return rng.integers(max(int(info.min), -2**62), min(int(info.max), 2**62),
                                shape, endpoint=True).astype(dtype)
        top = max(1.0, np.log10(np.finfo(dtype).max) - 7)
        scale = 10.0 ** self.int(-int(top), int(top))
        offset = self.pick([0.0, 1.0, -1e3, 1e6])
        with np.errstate(over="ignore"):
            return (scale * (rng.standard_normal(shape) + offset)).astype(dtype)

    def array(self, shape, dtype):
        """Values of ``shape`` in memory laid out as the bytes say."""
        dtype = np.dtype(dtype)
        vals = self.values(shape, dtype)
        if dtype.itemsize > 1 and dtype.kind != "O" and self.bool():
            dtype = dtype.newbyteorder()
        ndim = len(shape)
        perm = list(range(ndim))
        for i in range(ndim - 1, 0, -1):  # a permutation from the bytes
            j = self.int(0, i)
            perm[i], perm[j] = perm[j], perm[i]
        steps = [self.pick([1, 1, 2, -1, -2]) for _ in range(ndim)]
        storage_shape = tuple(shape[p] * abs(steps[p]) for p in perm)
        count = int(np.prod(storage_shape, dtype=np.int64))
        if dtype.kind != "O" and dtype.itemsize > 1 and self.bool():
            buf = np.zeros(count * dtype.itemsize + 1, np.uint8)[1:]
            storage = buf.view(dtype).reshape(storage_shape)
        else:
            storage = np.zeros(storage_shape, dtype)
        x = storage
        if ndim:
            x = storage.transpose(np.argsort(perm))[tuple(slice(None, None, s)
                                                           for s in steps)]
        x[...] = vals
        if self.int(0, 5) == 0:
            x.flags.writeable = False
        return x

    def per_feature(self, F, scalar_ok=True):
        """None, a scalar, an array of shape F, or something wrong."""
        kind = self.int(0, 9)
        if kind <= 2:
            return None
        if kind <= 4 and scalar_ok:
            return self.pick([self.float(), float(self.int(-3, 3)), 0.5])
        if kind <= 8:
            v = self.values(F, np.float64) if self.int(0, 3) == 0 else \
                np.random.default_rng(self.int(0, 99)).uniform(-2, 2, F)
            return v.astype(self.pick([np.float64, np.float32, np.int32]))
        return self.pick([np.ones(tuple(s + 1 for s in F) or (2,)), "a",
                          np.ones(F, np.complex128), [1.0] * 3, np.ones(())])

    def eps(self):
        return self.pick([1e-5, 0.0, 1e-3, 1.0]) if self.bool() else \
            self.pick([self.float(), -1e-5, float("nan"), "x", None, 1e300])


# --------------------------------------------------------- overlapping out --

def overlapping(d, a, shape):
    """(a2, out): a2 holds ``a``'s values as a native float array that lives
    in one buffer with ``out`` (a2's shape and dtype), laid out as the bytes
    say: the same memory, shifted by some elements, reversed along an axis,
    two axes swapped, or every other element (interleaved or sharing)."""
    dtype = np.dtype(a.dtype).newbyteorder("=")
    if dtype not in (np.float32, np.float64):
        dtype = np.dtype(np.float64)
    n = int(np.prod(shape, dtype=np.int64))
    kind = d.pick(["shift", "reverse", "swap", "stride"])
    k1, k2 = d.int(0, 3), d.int(0, 3)
    step = 2 if kind == "stride" else 1
    buf = np.zeros(step * (n + 3) + 4, dtype)
    a2 = buf[k1:k1 + step * n:step][:n].reshape(shape)
    out = buf[k2:k2 + step * n:step][:n].reshape(shape)
    if kind == "reverse" and shape:
        out = np.flip(a2, d.int(0, len(shape) - 1))
    elif kind == "swap":
        pairs = [(i, j) for i in range(len(shape)) for j in range(i + 1, len(shape))
                 if shape[i] == shape[j]]
        out = np.swapaxes(a2, *d.pick(pairs)) if pairs else a2[::-1] if shape else a2
    a2[...] = a
    return a2, out


def feature_view(d, out, F, v):
    """``v``, or (sometimes) a view of ``out`` of shape F holding v's values,
    so that a per-feature argument lives in the output's memory."""
    size = int(np.prod(F, dtype=np.int64))
    if (not isinstance(v, np.ndarray) or v.shape != tuple(F) or v.dtype != out.dtype
            or size == 0 or size > out.size or d.int(0, 2)):
        return v
    flat = out.reshape(-1)  # a view: out is a slice of one buffer
    if not np.shares_memory(flat, out):
        return v
    start = d.int(0, out.size - size)
    w = flat[start:start + size].reshape(F)
    w[...] = v
    return w


def same_as_on_copies(what, func, args, kwargs, out):
    """Call ``func`` on copies of every argument (the oracle for overlap:
    the kernels' results do not depend on addresses), then on the arguments
    themselves with ``out``; the two must agree bit for bit (NaN as NaN)."""
    copies = [np.array(a) if isinstance(a, np.ndarray) else a for a in args]
    kw = {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    try:
        want = func(*copies, **kw)
    except DOCUMENTED:
        want = None
    saved = frozen((*args, *kwargs.values(), out))
    try:
        got = func(*args, out=out, **kwargs)
    except DOCUMENTED:
        assert_unmodified(saved, what)
        return None
    assert want is not None, f"{what}: refused only with an overlapping out"
    assert got[0] is out
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w, err_msg=f"{what} with an overlapping out")
    return got


# ------------------------------------------------------------- bookkeeping --

def frozen(args):
    """Copies of every ndarray among ``args``, to check a failed call by."""
    return [(a, a.copy()) for a in args if isinstance(a, np.ndarray)]


def assert_unmodified(saved, what):
    for a, before in saved:
        assert a.tobytes() == before.tobytes(), f"{what}: an argument was modified"


def layer_state(layer):
    s = layer.state_dict()
    s["training"] = layer.training
    s["dgamma"] = None if layer.dgamma is None else layer.dgamma.copy()
    s["dbeta"] = None if layer.dbeta is None else layer.dbeta.copy()
    return s


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].tobytes() == b[k].tobytes(), f"failed call changed {k}"
        else:
            assert a[k] == b[k], f"failed call changed {k}"


def call(what, func, *args, allowed=DOCUMENTED, **kwargs):
    """``func(*args, **kwargs)``; on a documented error, check nothing changed
    and return None."""
    saved = frozen((*args, *kwargs.values()))
    try:
        return func(*args, **kwargs)
    except allowed:
        assert_unmodified(saved, what)
        return None


def clean_features(x64, axis):
    """Per feature (shape F): whether its values are finite and below BIG."""
    b = batch_axes(x64.ndim, axis)
    with np.errstate(invalid="ignore"):
        return (np.abs(x64) < BIG).all(axis=b)


def on_features(mask, ndim, axis, shape):
    return np.broadcast_to(np.expand_dims(mask, batch_axes(ndim, axis)), shape)


def features(shape, axis):
    """The feature shape F for ``axis`` as cbn reads it (operator.index on
    each item), or ``shape`` when cbn must refuse the axis anyway."""
    try:
        if axis is not None:
            items = axis if isinstance(axis, tuple) else (axis,)
            axis = tuple(operator.index(a) for a in items)
        return feature_shape(shape, axis)
    except (TypeError, ZeroDivisionError):
        return shape


def moderate(v):
    return v is None or (np.issubdtype(np.asarray(v).dtype, np.number)
                         and (np.abs(np.asarray(v, np.float64)) < 1e6).all())


# ------------------------------------------------------------------- calls --

def fuzz_normalize(d):
    dtype = d.pick(ACCEPTED) if d.int(0, 9) else d.pick(REFUSED)
    shape = d.shape()
    x = d.array(shape, dtype) if np.dtype(dtype).kind not in "OUSM" else \
        np.zeros(shape, dtype)
    axis = d.axis(len(shape))
    F = features(shape, axis)
    gamma, beta, eps = d.per_feature(F), d.per_feature(F), d.eps()
    given = d.int(0, 3) == 0
    mean = d.per_feature(F, scalar_ok=False) if given else None
    var = d.per_feature(F, scalar_ok=False) if given else None
    out = d.pick([None, None, "x", "new", "overlap"])
    if out == "overlap" and np.dtype(dtype).kind in "biuf":
        x, out = overlapping(d, x, shape)
        gamma, beta = feature_view(d, out, F, gamma), feature_view(d, out, F, beta)
        mean, var = feature_view(d, out, F, mean), feature_view(d, out, F, var)
        same_as_on_copies("normalize_batch", cbn.normalize_batch, (x, gamma, beta),
                          dict(axis=axis, eps=eps, mean=mean, var=var, return_stats=True),
                          out)
        return
    if out == "x":
        out = x
    elif out == "new":
        out = np.full(shape, 7.0, d.pick([np.float64, np.float32, np.float16]))
    elif out == "overlap":
        out = None
    r = call("normalize_batch", cbn.normalize_batch, x, gamma, beta, axis=axis, eps=eps,
             mean=mean, var=var, out=out, return_stats=True)
    if r is None or given:
        return
    y, m, v = r
    if out is not None:
        assert y is out
    assert y.shape == shape and m.shape == v.shape == tuple(F)
    if not (moderate(gamma) and moderate(beta) and isinstance(eps, float)
            and eps < 1e100):
        return
    x64 = np.asarray(x, np.float64) if out is not x else None
    if x64 is None:
        return  # x was overwritten by the call itself
    ok = clean_features(x64, axis)
    y64 = np.asarray(y, np.float64)
    poisoned = on_features(~ok & ~np.isfinite(x64).all(axis=batch_axes(x64.ndim, axis)),
                           x64.ndim, axis, shape)
    assert np.isnan(y64[poisoned]).all(), "NaN/Inf must make its whole feature NaN"
    if not ok.any():
        return
    xc = np.where(on_features(ok, x64.ndim, axis, shape), x64, 0.0)
    with np.errstate(all="ignore"):
        y_ref, m_ref, v_ref = normalize_ref(xc, gamma, beta, axis=axis, eps=eps)
    check_stats(np.asarray(m)[ok], np.asarray(v)[ok], m_ref[ok], v_ref[ok])
    rdt = y.dtype.newbyteorder("=")
    keep = on_features(ok & ~((np.asarray(v) == 0) & (eps == 0)), x64.ndim, axis, shape)
    slack = np.broadcast_to(W * offset_ratio(m_ref, v_ref, eps, gamma, x64.ndim, axis),
                            shape)
    assert_matches(y64[keep], y_ref[keep], TOLERANCE[rdt][0], slack[keep], "y", rdt)


def fuzz_backward(d):
    dtype = d.pick(ACCEPTED)
    shape = d.shape()
    x = d.array(shape, dtype)
    dy = d.array(shape if d.int(0, 9) else d.shape(), d.pick([dtype, np.float32]))
    axis = d.axis(len(shape)) if d.int(0, 4) == 0 else 0 if shape else None
    F = features(shape, axis)
    mean, var = d.per_feature(F, False), d.per_feature(F, False)
    if isinstance(var, np.ndarray) and var.dtype.kind in "fiu" and d.bool():
        var = np.abs(var.astype(np.float64))
    gamma, eps, bs = d.per_feature(F), d.eps(), d.bool()
    if dy.shape == shape and d.int(0, 3) == 0:  # dx over (a view of) dy or x
        if d.bool():
            dy, out = overlapping(d, dy, shape)
        else:
            x, out = overlapping(d, x, shape)
        mean, var = feature_view(d, out, F, mean), feature_view(d, out, F, var)
        gamma = feature_view(d, out, F, gamma)
        same_as_on_copies("normalize_batch_backward", cbn.normalize_batch_backward,
                          (dy, x, mean, var, gamma),
                          dict(axis=axis, eps=eps, batch_stats=bs), out)
        return
    r = call("normalize_batch_backward", cbn.normalize_batch_backward, dy, x, mean, var,
             gamma, axis=axis, eps=eps, batch_stats=bs)
    if r is None:
        return
    dx, dgamma, dbeta = r
    assert dx.shape == shape and dgamma.shape == dbeta.shape == tuple(F)
    x64, dy64 = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    if not (moderate(gamma) and moderate(mean) and isinstance(eps, float) and eps < 1e6
            and (np.abs(x64) < 1e6).all() and (np.abs(dy64) < 1e6).all()
            and (np.asarray(var, np.float64) > 1e-6).all()
            and (np.asarray(var, np.float64) < 1e6).all()):
        return
    with np.errstate(all="ignore"):
        ref = backward_ref(dy64, x64, mean, var, gamma, axis=axis, eps=eps, batch_stats=bs)
    u = TOLERANCE[dx.dtype.newbyteorder("=")][0]
    check_backward(dx, dgamma, dbeta, *ref, dy64, x64, np.asarray(mean, np.float64),
                   np.asarray(var, np.float64), gamma, axis, eps, bs, u)


def fuzz_layer(d):
    dtype = d.pick([np.float32, np.float64])
    shape = d.shape(min_dims=1)
    ndim = len(shape)
    cls = d.pick([cbn.BatchNorm, cbn.BatchNorm1d, cbn.BatchNorm2d, cbn.BatchNorm3d])
    kwargs = dict(eps=d.eps(), momentum=d.pick([0.1, None, 1.0, d.float()]),
                  affine=d.bool(), track_running_stats=d.bool(), dtype=dtype)
    fa = d.int(-ndim - 1, ndim)
    if cls is cbn.BatchNorm:
        kwargs["feature_axis"] = fa
    else:
        fa = 1
    C = shape[fa] if -ndim <= fa < ndim and shape[fa] else d.int(-1, 4)
    try:
        layer = cls(C, **kwargs)
    except DOCUMENTED:
        return
    ref = BatchNormRef(C, feature_axis=fa, eps=layer.eps, momentum=layer.momentum,
                       affine=layer.affine, track_running_stats=layer.track_running_stats)
    for _ in range(d.int(1, 4)):
        step = d.int(0, 5)
        before = layer_state(layer)
        if step <= 2:  # forward, in the mode the bytes say
            layer.train(d.bool())
            ref.training = layer.training
            before = layer_state(layer)
            x = d.array(shape, dtype if d.int(0, 9) else np.float16)
            try:
                y = layer(x)
            except DOCUMENTED:
                assert_same_state(before, layer_state(layer))
                return
            x64 = np.asarray(x, np.float64)
            with np.errstate(all="ignore"):
                y_ref = ref.forward(x64)
                stored = [np.asarray(v, np.float64).astype(dtype)
                          for v in (ref.running_mean, ref.running_var)]
            if layer.track_running_stats:
                # The layer keeps its statistics in its dtype (they may
                # overflow float32); the reference follows what it stored.
                # Beyond BIG the float64 oracle's own squares overflow.
                # The batch statistics' own allowance (tests/checks.py,
                # check_stats) carries over, times at most m/(m - 1).
                _, mean, var, _, _ = ref._saved
                size = 2 * W * (np.abs(mean) + np.sqrt(var))
                slack = [np.nan_to_num(v, nan=0.0, posinf=0.0)  # NaN/Inf compare exactly
                         for v in (size, 2 * (1e-9 * var + size * size))]
                for name, want, extra in zip(("running_mean", "running_var"), stored,
                                             slack if (np.abs(x64) < BIG).all() else ()):
                    assert_matches(getattr(layer, name), want, TOLERANCE[np.dtype(dtype)][0],
                                   extra, name, dtype)
                ref.running_mean = layer.running_mean.astype(np.float64)
                ref.running_var = layer.running_var.astype(np.float64)
            if (np.abs(x64) < 1e6).all():
                _, mean, var, axes, _ = ref._saved
                r = np.broadcast_to(offset_ratio(mean, var, layer.eps, ref.gamma, ndim, axes),
                                    shape)
                # As in fuzz_normalize: where var + eps is 0 (subnormal data
                # whose variance underflows, eps=0), y is (x - mean)/0, NaN
                # or +-inf by whether x equals the mean, which a rounding tie
                # of the mean decides (x = [5e-324, 0]: 0 or 5e-324, both
                # half an ulp off). Those features are left out.
                with np.errstate(invalid="ignore"):
                    keep = np.broadcast_to(expand(np.asarray(var, np.float64) + layer.eps,
                                                  ndim, axes) != 0, shape)
                assert_matches(np.asarray(y)[keep], y_ref[keep], TOLERANCE[np.dtype(dtype)][0],
                               (W * r * 4)[keep], "layer y", dtype)
        elif step == 3:
            dy = d.array(shape, dtype)
            try:
                dx = layer.backward(dy)
            except DOCUMENTED + (RuntimeError,):
                assert_same_state(before, layer_state(layer))
                continue
            assert dx.shape == shape and dx.dtype == dtype
        elif step == 4:
            state = layer.state_dict()
            if state and d.bool():
                state[d.pick(sorted(state))] = d.pick([np.ones(C + 1), "x", np.ones(C) * np.nan,
                                                       np.array(-1)])
            try:
                layer.load_state_dict(state)
            except DOCUMENTED:
                assert_same_state(before, layer_state(layer))
            return  # the reference no longer follows
        else:
            name = d.pick(["eps", "momentum", "gamma", "running_var", "num_batches_tracked"])
            value = d.pick([d.float(), -1, np.ones(C + 1), "x", None, np.ones(C)])
            try:
                setattr(layer, name, value)
            except DOCUMENTED + (AttributeError,):
                assert_same_state(before, layer_state(layer))
                continue
            return  # the reference no longer follows


def one_input(data):
    d = Decoder(data)
    [fuzz_normalize, fuzz_backward, fuzz_layer][d.int(0, 2)](d)


def main():
    np.seterr(all="ignore")  # NaN and Inf are inputs here, not accidents
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
