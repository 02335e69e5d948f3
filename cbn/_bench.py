"""Time cbn against the memory-bandwidth floor, and against PyTorch when it imports.

``python -m cbn bench`` runs :func:`run_bench` and prints one table per
thread count. Batch normalization does almost no arithmetic per element, so
the yardstick is memory traffic: the *floor* of a case is
``numpy.copyto(dst, x)`` into a preallocated array of x's size and dtype (one
read, one write), timed in the same process, and every other time is given
as a multiple of it.

For every case (an array shape, dtype and batch axes) it times

- ``floor``: ``numpy.copyto(dst, x)``;
- ``cbn_train``: ``cbn.normalize_batch(x, axis=AX, out=y)``;
- ``cbn_eval``: ``cbn.normalize_batch(x, axis=AX, mean=m, var=v, out=y)``;
- ``cbn_bwd``: ``cbn.normalize_batch_backward(dy, x, m, v, axis=AX, out=dx)``,
  with the float64 ``m, v`` of ``return_stats``;
- with torch: ``torch_train``, ``torch_eval`` and ``torch_bwd``, the ATen
  operators behind ``torch.nn.functional.batch_norm`` and its autograd:
  ``aten.native_batch_norm.out`` in training and in evaluation mode (the same
  kernel as ``F.batch_norm(xt, None, None, training=True)`` and
  ``F.batch_norm(xt, rm, rv, training=False)``, but writing into a
  preallocated output as cbn does) and ``aten.native_batch_norm_backward.out``
  with ``save_mean``/``save_invstd`` from ``aten.native_batch_norm``.
  Channels-last cases give torch a ``channels_last`` tensor over the same
  memory, 2-D cases an (N, C) tensor.

The ``tiny`` (16, 32) case measures the fixed cost of a call instead, so it
times what a user calls, allocation included: ``cbn.normalize_batch(x)``
without ``out``, ``F.batch_norm`` and the allocating
``aten.native_batch_norm_backward``; its row is in µs per call.

Design notes
------------
- One process, interleaved: each round times one loop of every variant of a
  case in turn (the order rotating from round to round), so slow drifts of
  the machine (frequency, a noisy neighbour) hit all variants alike. Each
  loop is sized to about ``target`` seconds; a case gets ``rounds`` rounds
  after a warm-up that also touches every output page.
- A ratio is the median over rounds of (variant time / floor time *in the
  same round*), so it is paired; the spread is the interquartile range of
  the per-round values as a % of their median. Speed-ups over torch are
  paired the same way.
- Loops run through :class:`timeit.Timer` with ``time.perf_counter``: the
  statement is compiled inline (no extra Python call per iteration, which
  would matter for the tiny case) and the garbage collector is off while
  timing.
- The floor is single-threaded (NumPy's copy), whatever ``--threads`` says,
  so with 2 threads a bandwidth-bound kernel can come out below 1x.
- Results are checked against torch's once per case (maximum absolute
  difference in the JSON), so the two libraries are known to compute the
  same thing.
"""
import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import textwrap
import time
import timeit

import numpy as np

#: Thread counts of a default run.
DEFAULT_THREADS = (1, 2)

#: Variants of a case, in table order; ``torch_*`` only when torch imports.
CBN_VARIANTS = ("cbn_train", "cbn_eval", "cbn_bwd")
TORCH_VARIANTS = ("torch_train", "torch_eval", "torch_bwd")
#: The three operations, the suffixes of the variant names.
OPERATIONS = ("train", "eval", "bwd")

EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long to measure.

    Attributes
    ----------
    rounds : int
        Rounds of interleaved loops per case.
    target : float
        Seconds one timed loop should take.
    quick : bool
        Shrink the batch of large cases and skip the ``large`` case.
    """

    rounds: int
    target: float
    quick: bool


FULL = Settings(rounds=11, target=0.025, quick=False)
QUICK = Settings(rounds=3, target=0.004, quick=True)


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark case.

    Attributes
    ----------
    name : str
        Short stable name, used by ``--cases`` and in the JSON.
    title : str
        What the table calls it, before the shape.
    shape : tuple of int
        Shape of x as cbn sees it (NHWC cases are NHWC here).
    dtype : str
    axis : int or tuple of int
        The batch axes.
    layout : str
        ``'NCHW'``, ``'NHWC'`` or ``'NC'``: how torch's tensor is made.
    tiny : bool
        Measures the fixed cost per call (allocating calls, µs in the table).
    large : bool
        Larger than the last-level cache the issue targets; left out of
        ``--quick``.
    """

    name: str
    title: str
    shape: tuple
    dtype: str
    axis: object
    layout: str
    tiny: bool = False
    large: bool = False

    @property
    def label(self):
        """Title, shape and dtype, e.g. ``'NCHW (32,64,56,56) f32'``."""
        dims = ",".join(str(n) for n in self.shape)
        return f"{self.title} ({dims}) f{np.dtype(self.dtype).itemsize * 8}"

    @property
    def channels(self):
        """Number of features (torch's C)."""
        return self.shape[-1] if self.layout == "NHWC" else self.shape[1]


NCHW_AXES = (0, 2, 3)
NHWC_AXES = (0, 1, 2)

#: Every case, in table order: the cases of issue 3's table, the >= 64 MB
#: NCHW case and the float64 cases.
CASES = (
    Case("nchw", "NCHW", (32, 64, 56, 56), "float32", NCHW_AXES, "NCHW"),
    Case("nchw-c256", "NCHW", (32, 256, 14, 14), "float32", NCHW_AXES, "NCHW"),
    Case("nchw-c3", "NCHW small C", (8, 3, 224, 224), "float32", NCHW_AXES, "NCHW"),
    Case("nhwc", "NHWC", (32, 56, 56, 64), "float32", NHWC_AXES, "NHWC"),
    Case("2d-wide", "2-D", (256, 1024), "float32", 0, "NC"),
    Case("2d-tall", "2-D", (4096, 64), "float32", 0, "NC"),
    Case("tiny", "tiny", (16, 32), "float32", 0, "NC", tiny=True),
    Case("nchw-large", "NCHW 205 MB", (64, 64, 112, 112), "float32", NCHW_AXES,
         "NCHW", large=True),
    Case("2d-wide-f64", "2-D", (256, 1024), "float64", 0, "NC"),
    Case("nchw-f64", "NCHW", (32, 64, 56, 56), "float64", NCHW_AXES, "NCHW"),
)

#: With ``--quick``, cases of at least this many elements get a batch this
#: many times smaller, which keeps the quick run (and its test) short.
QUICK_MIN_ELEMENTS = 1 << 20
QUICK_BATCH_DIVISOR = 4


def select_cases(quick=False, patterns=None):
    """The cases a run measures.

    Parameters
    ----------
    quick : bool
        Leave out the large case and shrink the batch (first axis) of cases
        with at least :data:`QUICK_MIN_ELEMENTS` elements.
    patterns : sequence of str, optional
        Keep only cases whose name or label contains one of these
        (case-insensitive).

    Returns
    -------
    list of Case

    Examples
    --------
    >>> [c.label for c in select_cases(patterns=["2d"])]
    ['2-D (256,1024) f32', '2-D (4096,64) f32', '2-D (256,1024) f64']
    >>> select_cases(quick=True, patterns=["c256"])[0].shape
    (8, 256, 14, 14)
    """
    chosen = []
    for case in CASES:
        if patterns and not any(p.lower() in case.name.lower()
                                or p.lower() in case.label.lower() for p in patterns):
            continue
        if quick:
            if case.large:
                continue
            if math.prod(case.shape) >= QUICK_MIN_ELEMENTS:
                case = dataclasses.replace(
                    case, shape=(max(1, case.shape[0] // QUICK_BATCH_DIVISOR),)
                    + case.shape[1:])
        chosen.append(case)
    return chosen


# ---------------------------------------------------------------- variants --

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


def _as_numpy_layout(torch_tensor, case):
    """A torch result as a NumPy array in cbn's layout for `case`."""
    if case.layout == "NHWC":
        torch_tensor = torch_tensor.permute(0, 2, 3, 1)
    return torch_tensor.numpy()


def build_variants(case, torch, rng):
    """Arrays and statements for every variant of `case`.

    Parameters
    ----------
    case : Case
    torch : module or None
        torch, or None to time cbn only.
    rng : numpy.random.Generator
        Source of x and dy.

    Returns
    -------
    timers : dict
        Variant name -> :class:`timeit.Timer`.
    check : callable
        Called after the warm-up; returns a dict of notes (maximum absolute
        differences between cbn's and torch's results, outputs torch could
        not write in place).
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
              nb=cbn.normalize_batch, nbb=cbn.normalize_batch_backward)
    stmts = {"floor": "copyto(dst, x)"}
    if case.tiny:
        stmts["cbn_train"] = "nb(x, axis=ax)"
        stmts["cbn_eval"] = "nb(x, axis=ax, mean=m, var=v)"
    else:
        stmts["cbn_train"] = "nb(x, axis=ax, out=y)"
        stmts["cbn_eval"] = "nb(x, axis=ax, mean=m, var=v, out=y)"
    stmts["cbn_bwd"] = ("nbb(dy, x, m, v, axis=ax)" if case.tiny
                        else "nbb(dy, x, m, v, axis=ax, out=dx)")

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
                  mask=[True, True, True])
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
        dx = cbn.normalize_batch_backward(dy, x, m, v, axis=case.axis)[0]
        dxt = ns["bnb"](ns["dyt"], ns["xt"], ns["w"], ns["rm"], ns["rv"],
                        ns["save_mean"], ns["save_invstd"], True, EPS, ns["mask"])[0]
        notes["max_abs_diff_vs_torch"] = {
            op: float(np.max(np.abs(ours - _as_numpy_layout(theirs, case))))
            for op, ours, theirs in (("train", y, yt), ("eval", ye, yte),
                                     ("bwd", dx, dxt))}
        return notes

    return timers, check


# --------------------------------------------------------------- measuring --

def _loop_size(timer, target):
    """Iterations that make one loop of `timer` last about `target` seconds."""
    n = 1
    while True:
        t = timer.timeit(n)
        if t >= target / 4 or n >= 1 << 24:
            return max(1, round(n * target / t))
        # Grow by at most 100x per step, so a first call slowed by a cold
        # cache cannot make the estimate wildly high.
        n = min(n * 100, max(2 * n, int(n * target / 4 / max(t, 1e-9))))


def measure(timers, settings):
    """Time `timers` in interleaved rounds.

    Parameters
    ----------
    timers : dict
        Variant name -> :class:`timeit.Timer`.
    settings : Settings

    Returns
    -------
    per_call : dict
        Variant name -> list of seconds per call, one per round.
    iterations : dict
        Variant name -> calls per timed loop.
    """
    names = list(timers)
    for name in names:  # warm-up: code paths, caches and output pages
        timers[name].timeit(1)
    iterations = {name: _loop_size(timers[name], settings.target) for name in names}
    per_call = {name: [] for name in names}
    for r in range(settings.rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            per_call[name].append(timers[name].timeit(iterations[name]) / iterations[name])
    return per_call, iterations


def median_iqr(values):
    """Median, quartiles, extremes and relative IQR (%) of a list of numbers."""
    a = np.asarray(values, dtype=float)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3),
            "min": float(a.min()), "max": float(a.max()),
            "iqr_pct": float(100.0 * (q3 - q1) / med) if med > 0 else 0.0,
            "rounds": [float(t) for t in a]}


class ForeignLoad:
    """CPU time taken by everything but this process while a block runs.

    A benchmark of 2 threads on a 2-CPU machine is only meaningful when
    nothing else runs: an OpenMP team with one thread descheduled waits at
    its barrier for a whole time slice, and one call takes milliseconds
    instead of microseconds. The busy time of all CPUs (``/proc/stat``,
    hypervisor steal included) minus this process's own CPU time says how
    much of that happened. Linux only; elsewhere :attr:`fraction` is None.

    Attributes
    ----------
    fraction : float or None
        After the block: foreign CPU seconds per wall-clock second (1.0 is
        one CPU fully taken).
    """

    _HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _busy_seconds():
        """Non-idle CPU seconds of all CPUs since boot, or None off Linux."""
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal [guest guest_nice]:
        # guest time is already counted in user, so it is not added again.
        return (sum(fields[:8]) - fields[3] - fields[4]) / ForeignLoad._HZ

    def __enter__(self):
        self.fraction = None
        self._busy = self._busy_seconds()
        t = os.times()
        self._own = t.user + t.system
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy = self._busy_seconds()
        if busy is None or self._busy is None:
            return
        t = os.times()
        own = t.user + t.system - self._own
        wall = time.perf_counter() - self._wall
        # Both clocks tick in jiffies, per CPU: forgive the rounding of the
        # four readings, so an idle machine reads 0.
        slack = (2 * (os.cpu_count() or 1) + 2) / self._HZ
        foreign = max(0.0, (busy - self._busy) - own - slack)
        self.fraction = foreign / wall if wall > 0 else 0.0


#: Foreign load (CPUs' worth) above which a row is flagged as disturbed.
FOREIGN_LOAD_LIMIT = 0.05


def summarize(case, threads, per_call, iterations, notes):
    """The JSON record of one case at one thread count.

    Parameters
    ----------
    case : Case
    threads : int
    per_call, iterations : dict
        What :func:`measure` returned.
    notes : dict
        Added to the record as they are (from ``build_variants``' check).

    Returns
    -------
    dict
        ``seconds`` (per call, per variant), ``ratio_to_floor`` (per variant
        but the floor), ``speedup_over_torch`` (per operation, torch time /
        cbn time; only with torch) -- each a :func:`median_iqr` dict of per-round
        values -- and ``gbps_train``, cbn's forward training bandwidth
        counting one read of x and one write of y.
    """
    floor = np.asarray(per_call["floor"])
    nbytes = math.prod(case.shape) * np.dtype(case.dtype).itemsize
    record = {
        "case": case.name, "label": case.label, "shape": list(case.shape),
        "dtype": case.dtype,
        "axis": list(case.axis) if isinstance(case.axis, tuple) else case.axis,
        "layout": case.layout, "tiny": case.tiny, "threads": threads,
        "bytes": nbytes, "iterations": iterations,
        "seconds": {k: median_iqr(v) for k, v in per_call.items()},
        "ratio_to_floor": {k: median_iqr(np.asarray(v) / floor)
                           for k, v in per_call.items() if k != "floor"},
    }
    if "torch_train" in per_call:
        record["speedup_over_torch"] = {
            op: median_iqr(np.divide(per_call[f"torch_{op}"], per_call[f"cbn_{op}"]))
            for op in OPERATIONS}
    record["gbps_train"] = 2 * nbytes / record["seconds"]["cbn_train"]["median"] / 1e9
    record.update(notes)
    return record


def machine_info(torch):
    """What the header of the report says about the machine and the build."""
    import cbn
    import cbn.kernels

    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "cbn": cbn.__version__,
        "simd": cbn.kernels.get_simd(),
        "simd_levels": cbn.kernels.simd_levels(),
        "openmp": cbn.kernels.openmp_version(),
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        # Which OpenMP runtime(s) cbn and torch ended up sharing.
        info["openmp_runtimes"] = [d["filepath"] for d in threadpool_info()
                                   if d["user_api"] == "openmp"]
    return info


def run_bench(threads=DEFAULT_THREADS, settings=FULL, patterns=None, use_torch=True,
              progress=None):
    """Measure every selected case at every thread count.

    Parameters
    ----------
    threads : sequence of int
        Thread counts; cbn and torch are both set to each in turn (and left
        at the last one).
    settings : Settings
        :data:`FULL` or :data:`QUICK` (or your own).
    patterns : sequence of str, optional
        Case filter, see :func:`select_cases`.
    use_torch : bool
        Time torch too when it imports.
    progress : callable, optional
        Called with a line of text before each case.

    Returns
    -------
    dict
        ``meta`` (machine, versions, settings) and ``records`` (one
        :func:`summarize` dict per case and thread count).
    """
    torch = import_torch() if use_torch else None
    set_cbn_threads = cbn_set_num_threads()
    cases = select_cases(settings.quick, patterns)
    meta = machine_info(torch)
    meta.update(threads=list(threads), rounds=settings.rounds,
                target_seconds=settings.target, quick=settings.quick,
                floor="numpy.copyto(dst, x), one thread")
    records = []
    rng = np.random.default_rng(0)
    for case in cases:
        # Arrays are made once per case and shared by the thread counts, so
        # a large case is allocated (and its pages touched) only once.
        timers, check = build_variants(case, torch, rng)
        for n in threads:
            set_cbn_threads(n)
            if torch is not None:
                torch.set_num_threads(n)
            if progress is not None:
                progress(f"{case.label}, {n} thread{'s' if n > 1 else ''}")
            with ForeignLoad() as load:
                per_call, iterations = measure(timers, settings)
            record = summarize(case, n, per_call, iterations, check())
            record["foreign_load"] = load.fraction
            records.append(record)
        del timers, check
    return {"meta": meta, "records": records}


# --------------------------------------------------------------- reporting --

def format_header(meta):
    """The lines above the tables: machine, versions, method."""
    torch = (f"torch {meta['torch']}" if meta["torch"]
             else "torch not used (not installed or --no-torch)")
    lines = [
        f"cbn {meta['cbn']} benchmark, {meta['date']}",
        f"CPU: {meta['cpu']} ({meta['logical_cpus']} logical CPUs); {meta['platform']}",
        f"Python {meta['python']}, numpy {meta['numpy']}, {torch}",
        f"cbn SIMD level: {meta['simd']} (supported: {', '.join(meta['simd_levels'])}); "
        f"OpenMP {meta['openmp'] or 'off'}"
        + (f" ({', '.join(meta['openmp_runtimes'])})"
           if meta.get("openmp_runtimes") else ""),
        f"threads: {', '.join(str(n) for n in meta['threads'])}; "
        f"{meta['rounds']} interleaved rounds of ~{meta['target_seconds'] * 1e3:g} ms "
        f"loops per variant{'; --quick (smaller batches)' if meta['quick'] else ''}",
        "",
    ]
    legend = ("floor = numpy.copyto(dst, x): one thread, one read and one write. "
              "Other columns: time as a multiple of the floor (median over rounds "
              "of paired ratios). GB/s: cbn's training forward, x read + y "
              "written. spread: the largest IQR of the row's ratios, % of their "
              "median. tiny row: µs per call, outputs allocated; other rows "
              "write into preallocated outputs (out=).")
    if meta["torch"]:
        legend += (" vs torch: torch time / cbn time; torch writes into "
                   "preallocated outputs (aten native_batch_norm[_backward].out).")
    return lines + textwrap.wrap(legend, 88)


#: Width of a number column of the tables.
COL = 9


def _group_columns(op, has_torch):
    """Column headings of one operation's group in the table."""
    cols = ["cbn"] + (["torch", "vs torch"] if has_torch else [])
    return cols + (["GB/s"] if op == "train" else [])


def _row_cells(record, op, has_torch):
    """Cell texts of one operation's group for one record."""
    sec, ratio = record["seconds"], record["ratio_to_floor"]
    libs = ["cbn"] + (["torch"] if has_torch else [])
    if record["tiny"]:
        cells = [f"{sec[f'{lib}_{op}']['median'] * 1e6:.2f}µs" for lib in libs]
    else:
        cells = [f"{ratio[f'{lib}_{op}']['median']:.2f}x" for lib in libs]
    if has_torch:
        cells.append(f"{record['speedup_over_torch'][op]['median']:.1f}x")
    if op == "train":
        cells.append("-" if record["tiny"] else f"{record['gbps_train']:.1f}")
    return cells


def format_table(records, threads):
    """The table of one thread count, as a list of lines."""
    rows = [r for r in records if r["threads"] == threads]
    has_torch = all("speedup_over_torch" in r for r in rows)
    width = max([len(r["label"]) for r in rows] + [4])
    titles = {"train": "forward, training", "eval": "forward, eval",
              "bwd": "backward"}
    # Every group is right-aligned in its own width and closed by " |".
    group_width = {op: max(COL * len(_group_columns(op, has_torch)), len(titles[op]) + 2)
                   for op in OPERATIONS}
    top = f"{'':<{width}} {'floor':>{COL}} |"
    sub = f"{'case':<{width}} {'µs':>{COL}} |"
    for op in OPERATIONS:
        top += titles[op].center(group_width[op]) + "  |"
        sub += "".join(f"{c:>{COL}}" for c in _group_columns(op, has_torch)
                       ).rjust(group_width[op]) + "  |"
    top += " spread"
    sub += "  IQR %"
    lines = [f"threads: {threads}", top, sub]
    for r in rows:
        floor_us = r["seconds"]["floor"]["median"] * 1e6
        line = f"{r['label']:<{width}} {floor_us:>{COL}.{0 if floor_us >= 1000 else 2}f} |"
        for op in OPERATIONS:
            line += "".join(f"{c:>{COL}}" for c in _row_cells(r, op, has_torch)
                            ).rjust(group_width[op]) + "  |"
        spread = max(s["iqr_pct"] for s in r["ratio_to_floor"].values())
        line += f" {spread:>6.0f}"
        if (r.get("foreign_load") or 0) > FOREIGN_LOAD_LIMIT:
            line += " !"
        lines.append(line)
    return lines


def format_report(result):
    """The text ``python -m cbn bench`` prints for a :func:`run_bench` result."""
    lines = format_header(result["meta"])
    for n in result["meta"]["threads"]:
        lines += [""] + format_table(result["records"], n)
    disturbed = [r for r in result["records"]
                 if (r.get("foreign_load") or 0) > FOREIGN_LOAD_LIMIT]
    if disturbed:
        worst = max(r["foreign_load"] for r in disturbed)
        lines += ["", f"! other processes used the CPUs while {len(disturbed)} row(s) "
                      f"were measured (up to {worst:.0%} of a CPU): those timings, "
                      "multithreaded ones above all, are not to be trusted; "
                      "run again on an idle machine."]
    notes = [(r["label"], r["threads"], r["torch_reallocated"])
             for r in result["records"] if r.get("torch_reallocated")]
    for label, n, what in notes:
        lines.append(f"note: torch allocated new {', '.join(what)} in {label} "
                     f"with {n} threads; its time includes that")
    return "\n".join(lines)


def plot_ratios(result, path):
    """Save bars of each case's time as a multiple of the floor to `path`.

    One row of panels per thread count, one panel per operation; in each,
    cbn's bar above torch's for every case. The tiny case is left out: its
    floor is a Python call, not memory traffic. All panels share a
    logarithmic ratio axis, since torch is up to ~20x the floor where cbn
    is near 1x.
    """
    import matplotlib

    matplotlib.use("Agg")  # a file is wanted, not a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, StrMethodFormatter

    threads = result["meta"]["threads"]
    records = [r for r in result["records"] if not r["tiny"]]
    labels = list(dict.fromkeys(r["label"] for r in records))
    libs = [("cbn", "tab:blue")]
    if any("speedup_over_torch" in r for r in records):
        libs.append(("torch", "tab:orange"))
    ratios = [s["median"] for r in records for s in r["ratio_to_floor"].values()]
    lo, hi = min(ratios + [1.0]) / 1.3, max(ratios + [1.0]) * 1.3
    fig, axes = plt.subplots(
        len(threads), len(OPERATIONS), squeeze=False, sharex=True, sharey=True,
        figsize=(4 * len(OPERATIONS), 0.22 * len(labels) * len(libs) * len(threads) + 1.5))
    pos = np.arange(len(labels))
    h = 0.8 / len(libs)
    for row, n in enumerate(threads):
        by_label = {r["label"]: r for r in records if r["threads"] == n}
        for col, op in enumerate(OPERATIONS):
            ax = axes[row][col]
            for k, (lib, colour) in enumerate(libs):
                vals = [by_label[lb]["ratio_to_floor"][f"{lib}_{op}"]["median"]
                        if lb in by_label else np.nan for lb in labels]
                ax.barh(pos + (k - (len(libs) - 1) / 2) * h, vals, height=h,
                        color=colour, label=lib)
            ax.axvline(1.0, color="black", linewidth=0.8)
            ax.set_title(f"{op}, {n} thread{'s' if n > 1 else ''}", fontsize=9)
            if row == len(threads) - 1:
                ax.set_xlabel("time / copy floor")
    ax = axes[0][0]
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    # Plain numbers on a few round ticks read better than 2x10^0.
    ax.xaxis.set_major_locator(FixedLocator(
        [t for t in (0.25, 0.5, 1, 2, 5, 10, 20, 50, 100) if lo <= t <= hi]))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(pos)
    ax.set_yticklabels(labels)
    for a in axes[:, 0]:
        a.tick_params(axis="y", labelsize=7)
    ax.invert_yaxis()  # shared by all panels: once, or it flips back
    ax.legend(fontsize=8)
    fig.suptitle(f"time as a multiple of numpy.copyto; {result['meta']['cpu']}, "
                 f"{result['meta']['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------ command line --

def _thread_counts(text):
    try:
        counts = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, got {text!r}")
    return counts


def add_arguments(parser):
    """Add the ``bench`` subcommand's options to an argparse parser."""
    parser.add_argument("--threads", type=_thread_counts, default=DEFAULT_THREADS,
                        metavar="N[,N...]",
                        help="thread counts to run, for cbn and torch alike "
                             "(default 1,2)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a fast run: {QUICK.rounds} rounds of "
                             f"~{QUICK.target * 1e3:g} ms loops, batches of large "
                             f"cases cut by {QUICK_BATCH_DIVISOR}, no 205 MB case")
    parser.add_argument("--cases", metavar="TEXT[,TEXT...]",
                        help="only the cases whose name or label contains one of "
                             "these, e.g. 'nchw' or 'f64,tiny'; names: "
                             + ", ".join(c.name for c in CASES))
    parser.add_argument("--no-torch", action="store_true",
                        help="time cbn only, even when torch imports")
    parser.add_argument("--json", metavar="FILE",
                        help="also write every number (per-round times included) "
                             "to FILE as JSON")
    parser.add_argument("--mpi", action="store_true",
                        help="instead, time cbn.SyncBatchNorm against BatchNorm "
                             "on MPI ranks (a (32,64,56,56) float32 batch per "
                             "rank, one step = forward + backward, the first "
                             "--threads count per rank); launches itself with "
                             "mpiexec, or run it as mpiexec -n P python -m cbn "
                             "bench --mpi; needs mpi4py (cbn[mpi])")
    parser.add_argument("--ranks", type=int, default=2,
                        help="processes that --mpi launches (default 2)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also save bars of the ratios to the floor to "
                             "FILE.png; needs matplotlib, and without it the "
                             "benchmark stops with exit status 1 before measuring")


def main(args):
    """Run the ``bench`` subcommand; return the exit status."""
    if args.mpi:
        from cbn._bench_mpi import main as mpi_main
        return mpi_main(args)
    patterns = [p.strip() for p in args.cases.split(",")] if args.cases else None
    settings = QUICK if args.quick else FULL
    if not select_cases(settings.quick, patterns):
        print(f"cbn bench: no case matches --cases {args.cases!r}; the cases are "
              + ", ".join(c.name for c in CASES)
              + (" (the large one not with --quick)" if args.quick else ""),
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    result = run_bench(args.threads, settings, patterns, use_torch=not args.no_torch,
                       progress=lambda text: print(f"  measuring {text} ...",
                                                   file=sys.stderr, flush=True))
    result["meta"]["seconds"] = time.perf_counter() - start
    print(format_report(result))
    print(f"\n({result['meta']['seconds']:.0f} s)")
    if args.json is not None:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"raw numbers written to {args.json}")
    if args.plot is not None:
        plot_ratios(result, args.plot)
        print(f"bars saved to {args.plot}")
    return 0
