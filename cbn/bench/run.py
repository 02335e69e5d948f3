"""A whole single-process run: every case at every thread count, as JSON-ready dicts.

Design notes
------------
- A ratio is the median over rounds of (variant time / floor time *in the
  same round*), so it is paired; the spread is the interquartile range of
  the per-round values as a % of their median. Speed-ups over torch are
  paired the same way.
- The floor is single-threaded (NumPy's copy), whatever ``--threads`` says,
  so with 2 threads a bandwidth-bound kernel can come out below 1x.
"""
import math

import numpy as np

from cbn.bench.cases import DEFAULT_THREADS, FULL, select_cases
from cbn.bench.timing import ForeignLoad, machine_info, measure, median_iqr
from cbn.bench.variants import (OPERATIONS, build_variants, cbn_set_num_threads,
                                compiled_timers, import_torch)


def summarize(case, threads, per_call, iterations, notes):
    """The JSON record of one case at one thread count.

    Parameters
    ----------
    case : Case
    threads : int
    per_call, iterations : dict
        What :func:`cbn.bench.timing.measure` returned.
    notes : dict
        Added to the record as they are (from ``build_variants``' check).

    Returns
    -------
    dict
        ``seconds`` (per call, per variant), ``ratio_to_floor`` (per variant
        but the floor), ``speedup_over_torch`` (per operation, torch time /
        cbn time; only with torch), with ``--compile`` ``speedup_over_compile``
        (``train``: compiled forward time / cbn's; ``fb``: compiled forward +
        backward time / cbn's forward + backward) -- each a
        :func:`~cbn.bench.timing.median_iqr` dict of per-round values -- and
        ``gbps_train``, cbn's forward training bandwidth counting one read of
        x and one write of y; with ``--fused``, ``fused``: the fused forward
        against the plain one (``relu_vs_plain``, ``res_relu_vs_plain``: time
        ratios) and the NumPy steps against it (``steps_vs_relu``,
        ``steps_vs_res_relu``: speed-ups), per-round as the others; with
        ``--nan``, ``nan``: ``omit_vs_plain``, ``omit_nan_vs_plain`` (10% NaN),
        ``raise_vs_plain`` (into ``out``) and ``raise_alloc_vs_plain`` (time
        ratios to the plain training forward) and ``scipy_vs_zscore`` (the
        speed-up of cbn.zscore over scipy's, when scipy imports).
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
    if "cbn_relu" in per_call:
        record["fused"] = {
            "relu_vs_plain": median_iqr(np.divide(per_call["cbn_relu"], per_call["cbn_train"])),
            "steps_vs_relu": median_iqr(np.divide(per_call["np_relu"], per_call["cbn_relu"])),
            "res_relu_vs_plain": median_iqr(np.divide(per_call["cbn_res_relu"],
                                                      per_call["cbn_train"])),
            "steps_vs_res_relu": median_iqr(np.divide(per_call["np_res_relu"],
                                                      per_call["cbn_res_relu"])),
            "bwd_relu_vs_plain": median_iqr(np.divide(per_call["cbn_bwd_relu"],
                                                      per_call["cbn_bwd"])),
            "steps_vs_bwd_relu": median_iqr(np.divide(per_call["np_bwd_relu"],
                                                      per_call["cbn_bwd_relu"])),
            "layer_relu_vs_plain": median_iqr(np.divide(per_call["layer_bwd_relu"],
                                                        per_call["layer_bwd"]))}
    if "cbn_omit" in per_call:
        record["nan"] = {
            "omit_vs_plain": median_iqr(np.divide(per_call["cbn_omit"], per_call["cbn_train"])),
            "omit_nan_vs_plain": median_iqr(np.divide(per_call["cbn_omit_nan"],
                                                      per_call["cbn_train"])),
            "raise_vs_plain": median_iqr(np.divide(per_call["cbn_raise"], per_call["cbn_train"])),
            "raise_alloc_vs_plain": median_iqr(np.divide(per_call["cbn_raise_alloc"],
                                                         per_call["cbn_train_alloc"]))}
        if "scipy_zscore" in per_call:
            record["nan"]["scipy_vs_zscore"] = median_iqr(np.divide(per_call["scipy_zscore"],
                                                                    per_call["zscore"]))
    if "compile_train" in per_call:
        cbn_fb = np.add(per_call["cbn_train"], per_call["cbn_bwd"])
        record["ratio_to_floor"]["cbn_fb"] = median_iqr(cbn_fb / floor)
        record["speedup_over_compile"] = {
            "train": median_iqr(np.divide(per_call["compile_train"], per_call["cbn_train"])),
            "fb": median_iqr(np.divide(per_call["compile_fb"], cbn_fb))}
    record["gbps_train"] = 2 * nbytes / record["seconds"]["cbn_train"]["median"] / 1e9
    record.update(notes)
    return record


def run_bench(threads=DEFAULT_THREADS, settings=FULL, patterns=None, use_torch=True,
              progress=None, compile=False, fused=False, nan=False):
    """Measure every selected case at every thread count.

    Parameters
    ----------
    threads : sequence of int
        Thread counts; cbn and torch are both set to each in turn (and left
        at the last one).
    settings : Settings
        :data:`~cbn.bench.cases.FULL` or :data:`~cbn.bench.cases.QUICK` (or your own).
    patterns : sequence of str, optional
        Case filter, see :func:`cbn.bench.cases.select_cases`.
    use_torch : bool
        Time torch too when it imports.
    progress : callable, optional
        Called with a line of text before each case.
    compile : bool
        Also time ``torch.compile`` of the training forward and of forward +
        backward (:func:`cbn.bench.variants.compiled_timers`); needs torch
        and `use_torch`. Where inductor cannot compile, the records say why
        (``compile_error``) and the run goes on without it.
    fused : bool
        Also time the fused forward (BN + ReLU, BN + residual + ReLU) and
        its NumPy steps (:data:`cbn.bench.variants.FUSED_VARIANTS`).
    nan : bool
        Also time the missing-value policies and zscore against scipy's
        (:data:`cbn.bench.variants.NAN_VARIANTS`).

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
                compile=bool(compile and torch is not None), fused=bool(fused), nan=bool(nan),
                target_seconds=settings.target, quick=settings.quick,
                floor="numpy.copyto(dst, x), one thread")
    records = []
    rng = np.random.default_rng(0)
    for case in cases:
        # Arrays are made once per case and shared by the thread counts, so
        # a large case is allocated (and its pages touched) only once.
        timers, check, inputs = build_variants(case, torch, rng, fused, nan)
        for n in threads:
            set_cbn_threads(n)
            if torch is not None:
                torch.set_num_threads(n)
            if progress is not None:
                progress(f"{case.label}, {n} thread{'s' if n > 1 else ''}")
            these, error = timers, None
            if compile and torch is not None:
                compiled, error = compiled_timers(case, torch, *inputs)
                these = {**timers, **(compiled or {})}
            with ForeignLoad() as load:
                per_call, iterations = measure(these, settings)
            record = summarize(case, n, per_call, iterations, check())
            if error is not None:
                record["compile_error"] = error
            record["foreign_load"] = load.fraction
            records.append(record)
        del timers, check, inputs
    return {"meta": meta, "records": records}
