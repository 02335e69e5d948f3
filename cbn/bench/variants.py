"""The timed statements of a case: the copy floor, cbn and, when it imports, torch.

For every case :func:`build_variants` times

- ``floor``: ``numpy.copyto(dst, x)``;
- ``cbn_train``: ``cbn.normalize_batch(x, axis=AX, out=y)``;
- ``cbn_eval``: ``cbn.normalize_batch(x, axis=AX, mean=m, var=v, out=y)``;
- ``cbn_stats``: ``cbn.batch_stats(x, axis=AX)``, the statistics alone (a
  read-only pass, which can run at about half the copy);
- ``cbn_bwd``: ``cbn.normalize_batch_backward(dy, x, m, v, axis=AX, out=dx)``,
  with the float64 ``m, v`` of ``return_stats``;
- with torch: ``torch_train``, ``torch_eval`` and ``torch_bwd``, the ATen
  operators behind ``torch.nn.functional.batch_norm`` and its autograd:
  ``aten.native_batch_norm.out`` in training and in evaluation mode (the same
  kernel as ``F.batch_norm(xt, None, None, training=True)`` and
  ``F.batch_norm(xt, rm, rv, training=False)``, but writing into a
  preallocated output as cbn does) and ``aten.native_batch_norm_backward.out``
  with ``save_mean``/``save_invstd`` from ``aten.native_batch_norm``;
  ``torch_stats`` is ``torch.var_mean(xt, dims, correction=0)``, the same
  numbers as ``batch_stats``' mean and variance.
  Channels-last cases give torch a ``channels_last`` tensor over the same
  memory, 2-D cases an (N, C) tensor.

With ``--fused``, the fused forward of a CNN block against its NumPy steps
(not on the tiny case): ``cbn_relu`` (``relu=True``), ``cbn_res_relu``
(``residual=r, relu=True``), ``np_relu`` (the training forward, then
``numpy.maximum(y, 0, out=y)``) and ``np_res_relu`` (then also
``numpy.add(y, r, out=y)`` before the maximum); and the backward through
the ReLU: ``cbn_bwd_relu`` (``normalize_batch_backward(..., relu=True,
y=yr)``, the gated kernels) and ``np_bwd_relu`` (``dy * (yr > 0)`` into a
buffer, then the plain backward); and a layer's backward, whose forward kept
the ReLU's mask as bits: ``layer_bwd_relu`` (``cbn.BatchNorm(C,
activation="relu")``) against ``layer_bwd`` (the plain layer), both
allocating dx.

With ``--nan``, the missing-value policies (not on the tiny case):
``cbn_omit`` (``nan_policy="omit"`` on x, which holds no NaN),
``cbn_omit_nan`` (the same on a copy of x with 10% of its values NaN, at
random), ``cbn_raise`` (``nan_policy="raise"``, into ``out``) and
``cbn_raise_alloc`` against ``cbn_train_alloc`` (both allocating y);
``zscore`` (``cbn.zscore(x, axis=AX)``) and, when scipy imports,
``scipy_zscore`` (``scipy.stats.zscore`` of the same).

With ``--compile``, :func:`compiled_timers` adds ``compile_train`` and
``compile_fb``: ``torch.compile`` (inductor's generated C++ on the CPU) of
``F.batch_norm(xt, None, None, w, b, training=True)``, alone and followed by
``torch.autograd.grad`` of x, w and b (forward + backward, AOTAutograd
compiling both). Compiled code allocates its outputs; no ``out=`` exists.
They are compiled afresh for each case and thread count, since inductor
fixes the thread count of its OpenMP loops when it generates them.

The ``tiny`` (16, 32) case measures the fixed cost of a call instead, so it
times what a user calls, allocation included: ``cbn.normalize_batch(x)``
without ``out``, ``F.batch_norm`` and the allocating
``aten.native_batch_norm_backward``; its row is in µs per call.

Design notes
------------
- Loops run through :class:`timeit.Timer` with ``time.perf_counter``: the
  statement is compiled inline (no extra Python call per iteration, which
  would matter for the tiny case) and the garbage collector is off while
  timing.
- Results are checked against torch's once per case (maximum absolute
  difference in the JSON), so the two libraries are known to compute the
  same thing.
"""
import time
import timeit

import numpy as np

#: Variants of a case, in table order; ``torch_*`` only when torch imports.
CBN_VARIANTS = ("cbn_train", "cbn_eval", "cbn_stats", "cbn_bwd")
TORCH_VARIANTS = ("torch_train", "torch_eval", "torch_stats", "torch_bwd")
#: The fused forward and its NumPy steps, with ``--fused`` only.
FUSED_VARIANTS = ("cbn_relu", "cbn_res_relu", "np_relu", "np_res_relu",
                  "cbn_bwd_relu", "np_bwd_relu", "layer_bwd", "layer_bwd_relu")
#: The missing-value policies and zscore, with ``--nan`` only.
NAN_VARIANTS = ("cbn_omit", "cbn_omit_nan", "cbn_raise", "cbn_raise_alloc",
                "cbn_train_alloc", "zscore", "scipy_zscore")
#: ``torch.compile`` variants, with ``--compile`` only.
COMPILE_VARIANTS = ("compile_train", "compile_fb")
#: The operations, the suffixes of the variant names.
OPERATIONS = ("train", "eval", "stats", "bwd")

EPS = 1e-5


def import_torch():
    """torch, or None when it does not import (it is never required)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def cbn_set_num_threads():
    """cbn's function that sets its thread count (``cbn.set_num_threads``,
    or ``cbn.kernels.set_num_threads`` where the top level lacks it)."""
    import cbn

    return getattr(cbn, "set_num_threads", None) or cbn.kernels.set_num_threads


def _torch_view(torch, a, case):
    """A torch tensor over the memory of `a`, in torch's layout for `case`.

    NHWC arrays become NCHW tensors in ``channels_last`` memory format: the
    same bytes, so both libraries read the same values from the same place.
    """
    t = torch.from_numpy(a)
    if case.layout == "NHWC":
        t = t.permute(0, 3, 1, 2)
        assert t.is_contiguous(memory_format=torch.channels_last)
    return t


def _torch_batch_dims(case):
    """The batch dimensions of `case`'s torch tensor (always NCHW-ordered)."""
    return (0,) if case.layout == "NC" else (0,) + tuple(range(2, len(case.shape)))


def _as_numpy_layout(torch_tensor, case):
    """A torch result as a NumPy array in cbn's layout for `case`."""
    if case.layout == "NHWC":
        torch_tensor = torch_tensor.permute(0, 2, 3, 1)
    return torch_tensor.numpy()


def build_variants(case, torch, rng, fused=False, nan=False):
    """Arrays and statements for every variant of `case`.

    Parameters
    ----------
    case : Case
    torch : module or None
        torch, or None to time cbn only.
    rng : numpy.random.Generator
        Source of x and dy.
    fused : bool
        Also the :data:`FUSED_VARIANTS` (not on the tiny case).
    nan : bool
        Also the :data:`NAN_VARIANTS` (not on the tiny case).

    Returns
    -------
    timers : dict
        Variant name -> :class:`timeit.Timer`.
    check : callable
        Called after the warm-up; returns a dict of notes (maximum absolute
        differences between cbn's and torch's results, outputs torch could
        not write in place).
    inputs : tuple of numpy.ndarray
        x and dy, for :func:`compiled_timers`.
    """
    import cbn

    dtype = np.dtype(case.dtype)
    x = rng.standard_normal(case.shape, dtype=dtype)
    x *= 2.0
    x += 0.5
    dy = rng.standard_normal(case.shape, dtype=dtype)
    _, m, v = cbn.normalize_batch(x, axis=case.axis, return_stats=True)
    ns = dict(copyto=np.copyto, x=x, dst=np.empty_like(x), y=np.empty_like(x),
              dy=dy, dx=np.empty_like(x), m=m, v=v, ax=case.axis, eps=EPS,
              nb=cbn.normalize_batch, nbb=cbn.normalize_batch_backward,
              bs=cbn.batch_stats)
    stmts = {"floor": "copyto(dst, x)"}
    if case.tiny:
        stmts["cbn_train"] = "nb(x, axis=ax)"
        stmts["cbn_eval"] = "nb(x, axis=ax, mean=m, var=v)"
    else:
        stmts["cbn_train"] = "nb(x, axis=ax, out=y)"
        stmts["cbn_eval"] = "nb(x, axis=ax, mean=m, var=v, out=y)"
    stmts["cbn_stats"] = "bs(x, axis=ax)"
    stmts["cbn_bwd"] = ("nbb(dy, x, m, v, axis=ax)" if case.tiny
                        else "nbb(dy, x, m, v, axis=ax, out=dx)")
    if fused and not case.tiny:
        ns.update(r=rng.standard_normal(case.shape, dtype=dtype), maximum=np.maximum,
                  add=np.add)
        stmts["cbn_relu"] = "nb(x, axis=ax, out=y, relu=True)"
        stmts["cbn_res_relu"] = "nb(x, axis=ax, out=y, residual=r, relu=True)"
        stmts["np_relu"] = "nb(x, axis=ax, out=y); maximum(y, 0, out=y)"
        stmts["np_res_relu"] = "nb(x, axis=ax, out=y); add(y, r, out=y); maximum(y, 0, out=y)"
        ns.update(yr=cbn.normalize_batch(x, axis=case.axis, relu=True), greater=np.greater,
                  multiply=np.multiply, mk=np.empty(case.shape, bool), dm=np.empty_like(x))
        stmts["cbn_bwd_relu"] = "nbb(dy, x, m, v, axis=ax, out=dx, relu=True, y=yr)"
        stmts["np_bwd_relu"] = ("multiply(dy, greater(yr, 0, out=mk), out=dm); "
                                "nbb(dm, x, m, v, axis=ax, out=dx)")
        axes = case.axis if isinstance(case.axis, tuple) else (case.axis,)
        fa = next(i for i in range(len(case.shape)) if i not in axes)  # one feature axis
        layers = [cbn.BatchNorm(case.shape[fa], feature_axis=fa, dtype=dtype, activation=act)
                  for act in (None, "relu")]
        for layer in layers:
            layer(x)  # in training mode: what backward differentiates
        ns.update(plain_layer=layers[0], relu_layer=layers[1])
        stmts["layer_bwd"] = "plain_layer.backward(dy)"
        stmts["layer_bwd_relu"] = "relu_layer.backward(dy)"

    if nan and not case.tiny:
        xn = x.copy()
        xn[rng.random(case.shape) < 0.1] = np.nan
        ns.update(xn=xn, zs=cbn.zscore)
        stmts["cbn_omit"] = "nb(x, axis=ax, out=y, nan_policy='omit')"
        stmts["cbn_omit_nan"] = "nb(xn, axis=ax, out=y, nan_policy='omit')"
        stmts["cbn_raise"] = "nb(x, axis=ax, out=y, nan_policy='raise')"
        stmts["cbn_raise_alloc"] = "nb(x, axis=ax, nan_policy='raise')"
        stmts["cbn_train_alloc"] = "nb(x, axis=ax)"
        stmts["zscore"] = "zs(x, axis=ax)"
        try:
            from scipy.stats import zscore as scipy_zscore
        except ImportError:
            pass
        else:
            ns["sp_zscore"] = scipy_zscore
            stmts["scipy_zscore"] = "sp_zscore(x, axis=ax)"

    out_ptrs = {}
    if torch is not None:
        tdt = getattr(torch, dtype.name)
        c = case.channels
        xt = _torch_view(torch, x, case)
        dyt = _torch_view(torch, dy, case)
        w = torch.ones(c, dtype=tdt)
        b = torch.zeros(c, dtype=tdt)
        rm = torch.from_numpy(m.astype(dtype))
        rv = torch.from_numpy(v.astype(dtype))
        _, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
            xt, w, b, None, None, True, 0.1, EPS)
        ns.update(torch=torch, F=torch.nn.functional, xt=xt, dyt=dyt, w=w, rm=rm,
                  rv=rv, save_mean=save_mean, save_invstd=save_invstd,
                  bn_out=torch.ops.aten.native_batch_norm.out,
                  bnb=torch.ops.aten.native_batch_norm_backward.default,
                  bnb_out=torch.ops.aten.native_batch_norm_backward.out,
                  mask=[True, True, True], var_mean=torch.var_mean,
                  dims=_torch_batch_dims(case))
        stmts["torch_stats"] = "var_mean(xt, dims, correction=0)"
        if case.tiny:
            stmts["torch_train"] = "F.batch_norm(xt, None, None, training=True, eps=eps)"
            stmts["torch_eval"] = "F.batch_norm(xt, rm, rv, training=False, eps=eps)"
            stmts["torch_bwd"] = ("bnb(dyt, xt, w, rm, rv, save_mean, save_invstd, "
                                  "True, eps, mask)")
        else:
            ns.update(yt=torch.empty_like(xt), sm=torch.empty(c, dtype=tdt),
                      si=torch.empty(c, dtype=tdt), dxt=torch.empty_like(xt),
                      dwt=torch.empty(c, dtype=tdt), dbt=torch.empty(c, dtype=tdt))
            stmts["torch_train"] = ("bn_out(xt, None, None, None, None, True, 0.1, eps, "
                                    "out=yt, save_mean=sm, save_invstd=si)")
            stmts["torch_eval"] = ("bn_out(xt, None, None, rm, rv, False, 0.1, eps, "
                                   "out=yt, save_mean=sm, save_invstd=si)")
            stmts["torch_bwd"] = ("bnb_out(dyt, xt, w, rm, rv, save_mean, save_invstd, "
                                  "True, eps, mask, out0=dxt, out1=dwt, out2=dbt)")
            out_ptrs = {k: ns[k].data_ptr() for k in ("yt", "dxt")}

    timers = {k: timeit.Timer(s, timer=time.perf_counter, globals=ns)
              for k, s in stmts.items()}

    def check():
        if torch is None:
            return {}
        notes = {}
        # A moved data pointer means torch replaced the preallocated output
        # with a fresh one, so its time includes an allocation.
        moved = [k for k, p in out_ptrs.items() if ns[k].data_ptr() != p]
        if moved:
            notes["torch_reallocated"] = moved
        y = cbn.normalize_batch(x, axis=case.axis)
        yt = torch.nn.functional.batch_norm(ns["xt"], None, None, training=True, eps=EPS)
        ye = cbn.normalize_batch(x, axis=case.axis, mean=m, var=v)
        yte = torch.nn.functional.batch_norm(ns["xt"], ns["rm"], ns["rv"],
                                             training=False, eps=EPS)
        st = cbn.batch_stats(x, axis=case.axis)
        tv, tm = torch.var_mean(ns["xt"].double(), ns["dims"], correction=0)
        dx = cbn.normalize_batch_backward(dy, x, m, v, axis=case.axis)[0]
        dxt = ns["bnb"](ns["dyt"], ns["xt"], ns["w"], ns["rm"], ns["rv"],
                        ns["save_mean"], ns["save_invstd"], True, EPS, ns["mask"])[0]
        notes["max_abs_diff_vs_torch"] = {
            op: float(np.max(np.abs(ours - _as_numpy_layout(theirs, case))))
            for op, ours, theirs in (("train", y, yt), ("eval", ye, yte),
                                     ("bwd", dx, dxt))}
        # torch's float32 statistics are rounded to float32: compare ours
        # with float64 ones of the same data instead
        notes["max_abs_diff_vs_torch"]["stats"] = max(
            float(np.max(np.abs(st.mean - tm.numpy()))),
            float(np.max(np.abs(st.var() - tv.numpy()))))
        return notes

    return timers, check, (x, dy)


def compiled_timers(case, torch, x, dy):
    """``torch.compile`` timers for `case` at torch's current thread count.

    Parameters
    ----------
    case : Case
    torch : module
    x, dy : numpy.ndarray
        The case's inputs, as :func:`build_variants` returned them.

    Returns
    -------
    timers : dict or None
        ``compile_train`` and ``compile_fb`` -> :class:`timeit.Timer`, each
        compiled and run once already; None when inductor cannot compile
        here (no C++ compiler, ...).
    error : str or None
        Why not, when `timers` is None.
    """
    import torch._dynamo

    F = torch.nn.functional
    xt, dyt = _torch_view(torch, x, case), _torch_view(torch, dy, case)
    c = case.channels
    tdt = xt.dtype
    w, b = torch.ones(c, dtype=tdt), torch.zeros(c, dtype=tdt)
    wg, bg = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    xg = xt.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)

    def forward(x):
        return F.batch_norm(x, None, None, w, b, training=True, eps=EPS)

    def forward_g(x):
        return F.batch_norm(x, None, None, wg, bg, training=True, eps=EPS)

    # A fresh start per case and thread count: dynamo's cache is keyed by
    # code object, and every call here compiles the same two closures.
    torch._dynamo.reset()
    cf = torch.compile(forward, dynamic=False)
    cfb = torch.compile(forward_g, dynamic=False)
    cns = dict(cf=cf, cfb=cfb, xt=xt, xg=xg, dyt=dyt, wg=wg, bg=bg,
               grad=torch.autograd.grad)
    stmts = {"compile_train": "cf(xt)",
             "compile_fb": "grad(cfb(xg), (xg, wg, bg), dyt)"}
    compiled = {k: timeit.Timer(v, timer=time.perf_counter, globals=cns)
                for k, v in stmts.items()}
    try:
        for t in compiled.values():
            t.timeit(1)     # compiles
    except Exception as exc:  # inductor raises many kinds; all mean "cannot"
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return compiled, None

