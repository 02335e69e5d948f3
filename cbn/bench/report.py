"""What ``python -m cbn bench`` prints, and the ``--plot`` bars, from a run's result."""
import textwrap

import numpy as np

from cbn.bench.timing import FOREIGN_LOAD_LIMIT
from cbn.bench.variants import OPERATIONS


def _cpu_line(meta):
    """CPUID's name of the CPU, the tuning profile, and the levels where the
    passes differ (JSON files of older runs have none of these)."""
    vendor, family, model = meta.get("cpu_id") or ("", 0, 0)
    cpu = f"{vendor} family {family} model {model}" if vendor else "no CPUID"
    levels = meta.get("simd_by_pass") or {}
    per_pass = (", ".join(f"{p} {lv}" for p, lv in levels.items())
                if len(set(levels.values())) > 1 else "")
    return (f"{cpu}; cbn tuning profile: {meta.get('cpu_profile', '?')}"
            + (f"; SIMD by pass: {per_pass}" if per_pass else ""))


def format_header(meta):
    """The lines above the tables: machine, versions, method."""
    torch = (f"torch {meta['torch']}" if meta["torch"]
             else "torch not used (not installed or --no-torch)")
    lines = [
        f"cbn {meta['cbn']} benchmark, {meta['date']}",
        f"CPU: {meta['cpu']} ({meta['logical_cpus']} logical CPUs); {meta['platform']}",
        _cpu_line(meta),
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
              "stats": "statistics", "bwd": "backward"}
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
        spread = max(s["iqr_pct"] for k, s in r["ratio_to_floor"].items()
                     if k.startswith(("cbn_", "torch_")) and k != "cbn_fb")
        line += f" {spread:>6.0f}"
        if (r.get("foreign_load") or 0) > FOREIGN_LOAD_LIMIT:
            line += " !"
        lines.append(line)
    return lines


def format_compile_table(records, threads):
    """The ``--compile`` table of one thread count, as a list of lines.

    Columns: the compiled training forward and cbn's, then compiled forward
    + backward against cbn's forward plus backward, each as a multiple of
    the floor (µs per call on the tiny row) and as compiled time / cbn time.
    """
    rows = [r for r in records if r["threads"] == threads]
    width = max([len(r["label"]) for r in rows] + [4])
    heads = ["compile", "cbn", "vs comp", "compile", "cbn", "vs comp"]
    lines = [f"torch.compile (inductor), threads: {threads}",
             f"{'':<{width}} |{'forward, training'.center(3 * COL)} |"
             f"{'forward + backward'.center(3 * COL)} |",
             f"{'case':<{width}} |" + "".join(f"{h:>{COL}}" for h in heads[:3]) + " |"
             + "".join(f"{h:>{COL}}" for h in heads[3:]) + " |"]
    for r in rows:
        if "speedup_over_compile" not in r:
            lines.append(f"{r['label']:<{width}} | not compiled: "
                         f"{r.get('compile_error', 'no torch')}")
            continue
        sec, ratio, vs = r["seconds"], r["ratio_to_floor"], r["speedup_over_compile"]
        if r["tiny"]:
            fb = sec["cbn_train"]["median"] + sec["cbn_bwd"]["median"]
            times = [sec["compile_train"]["median"], sec["cbn_train"]["median"],
                     sec["compile_fb"]["median"], fb]
            a, b, c, d = (f"{t * 1e6:.2f}µs" for t in times)
        else:
            a, b, c, d = (f"{ratio[k]['median']:.2f}x" for k in
                          ("compile_train", "cbn_train", "compile_fb", "cbn_fb"))
        cells = [a, b, f"{vs['train']['median']:.1f}x", c, d, f"{vs['fb']['median']:.1f}x"]
        lines.append(f"{r['label']:<{width}} |" + "".join(f"{c:>{COL}}" for c in cells[:3])
                     + " |" + "".join(f"{c:>{COL}}" for c in cells[3:]) + " |")
    return lines


def format_fused_table(records, threads):
    """The ``--fused`` table of one thread count, as a list of lines.

    Columns: the fused BN + ReLU forward's time as a multiple of the plain
    training forward's, and the speed-up over the NumPy steps (the forward,
    then ``numpy.maximum``); the same for BN + residual + ReLU; and for the
    backward through the ReLU (from the forward's output) against the plain
    backward and against masking dy with NumPy first; and a layer's backward
    with ``activation="relu"`` (its mask kept as bits) against the plain
    layer's.
    """
    rows = [r for r in records if r["threads"] == threads and "fused" in r]
    width = max([len(r["label"]) for r in rows] + [4])
    heads = ["/ plain", "vs steps"]
    bits = "layer, bits"
    lines = [f"fused forward and backward, threads: {threads}",
             f"{'':<{width}} |{'BN + ReLU'.center(2 * COL)} |"
             f"{'BN + res + ReLU'.center(2 * COL)} |{'backward, ReLU'.center(2 * COL)} |"
             f"{bits:>{COL + 3}} |",
             f"{'case':<{width}} |" + " |".join("".join(f"{h:>{COL}}" for h in heads)
                                                 for _ in range(3)) + " |"
             + f"{'/ plain':>{COL + 3}} |"]
    for r in rows:
        f = r["fused"]
        cells = [f"{f['relu_vs_plain']['median']:.2f}x", f"{f['steps_vs_relu']['median']:.1f}x",
                 f"{f['res_relu_vs_plain']['median']:.2f}x",
                 f"{f['steps_vs_res_relu']['median']:.1f}x"]
        if "layer_relu_vs_plain" in f:  # records from before these columns lack them
            cells += [f"{f['bwd_relu_vs_plain']['median']:.2f}x",
                      f"{f['steps_vs_bwd_relu']['median']:.1f}x"]
        lines.append(f"{r['label']:<{width}} |" + " |".join(
            "".join(f"{c:>{COL}}" for c in cells[i:i + 2]) for i in range(0, len(cells), 2))
            + " |" + (f"{f['layer_relu_vs_plain']['median']:.2f}x".rjust(COL + 3) + " |"
                      if "layer_relu_vs_plain" in f else ""))
    return lines


def format_nan_table(records, threads):
    """The ``--nan`` table of one thread count, as a list of lines: the
    training forward's time under nan_policy 'omit' (data without NaN, and
    with 10% NaN) and 'raise' (into out, and allocating) as multiples of the
    plain forward's, and the speed-up of cbn.zscore over scipy.stats.zscore."""
    W = COL + 3
    rows = [r for r in records if r["threads"] == threads and "nan" in r]
    width = max([len(r["label"]) for r in rows] + [4])
    heads = ["omit", "omit, 10%", "raise", "raise, new", "zscore"]
    lines = [f"missing values (nan_policy), threads: {threads}",
             f"{'':<{width}} |" + "".join(f"{h:>{W}}" for h in heads[:4])
             + f" |{'vs scipy':>{W}} |",
             f"{'case':<{width}} |" + "".join(f"{'/ plain':>{W}}" for _ in range(4))
             + f" |{heads[4]:>{W}} |"]
    for r in rows:
        f = r["nan"]
        cells = [f"{f[k]['median']:.2f}x" for k in ("omit_vs_plain", "omit_nan_vs_plain",
                                                     "raise_vs_plain", "raise_alloc_vs_plain")]
        vs = f"{f['scipy_vs_zscore']['median']:.1f}x" if "scipy_vs_zscore" in f else "-"
        lines.append(f"{r['label']:<{width}} |" + "".join(f"{c:>{W}}" for c in cells)
                     + f" |{vs:>{W}} |")
    return lines


def format_report(result):
    """The text ``python -m cbn bench`` prints for a result of
    :func:`cbn.bench.run.run_bench`."""
    lines = format_header(result["meta"])
    for n in result["meta"]["threads"]:
        lines += [""] + format_table(result["records"], n)
    if result["meta"].get("fused"):
        for n in result["meta"]["threads"]:
            lines += [""] + format_fused_table(result["records"], n)
    if result["meta"].get("nan"):
        for n in result["meta"]["threads"]:
            lines += [""] + format_nan_table(result["records"], n)
    if result["meta"].get("compile"):
        for n in result["meta"]["threads"]:
            lines += [""] + format_compile_table(result["records"], n)
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
