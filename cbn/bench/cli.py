"""The ``bench`` command of ``python -m cbn``: its options and what it runs."""
import argparse
import json
import sys
import time

from cbn.bench.cases import (CASES, DEFAULT_THREADS, FULL, QUICK, QUICK_BATCH_DIVISOR,
                              select_cases)
from cbn.bench.mpi import main as mpi_main
from cbn.bench.report import format_report, plot_ratios
from cbn.bench.run import run_bench


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
                             f"cases cut by {QUICK_BATCH_DIVISOR}, no large cases "
                             "(205 MB NCHW, 128 MiB rows)")
    parser.add_argument("--cases", metavar="TEXT[,TEXT...]",
                        help="only the cases whose name or label contains one of "
                             "these, e.g. 'nchw' or 'f64,tiny'; names: "
                             + ", ".join(c.name for c in CASES))
    parser.add_argument("--no-torch", action="store_true",
                        help="time cbn only, even when torch imports")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile (inductor, CPU) of the "
                             "training forward and of forward + backward, "
                             "compiled per case and thread count (minutes); "
                             "needs torch and a C++ compiler, and says why "
                             "where it cannot compile")
    parser.add_argument("--fused", action="store_true",
                        help="also time the fused forward, batch norm + ReLU "
                             "and + residual + ReLU, against the plain "
                             "forward and against its NumPy steps")
    parser.add_argument("--nan", action="store_true",
                        help="also time nan_policy 'omit' (without NaN and with "
                             "10%% NaN) and 'raise' against the plain forward, "
                             "and cbn.zscore against scipy.stats.zscore")
    parser.add_argument("--torch-model", action="store_true",
                        help="instead, time a ResNet-18 training step (and eval "
                             "forward) in PyTorch with torch's batch norm against "
                             "cbn.torch.convert of the same model, and the batch-"
                             "norm operators' share of the step (profiler); needs "
                             "torch (cbn[torch])")
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


def torch_model_main(args):
    """``--torch-model``: cbn.bench.model's run and table; exit status 1
    without torch."""
    try:
        import torch
    except ImportError:
        print("cbn bench: --torch-model needs torch (pip install cbn[torch])",
              file=sys.stderr)
        return 1
    from cbn.bench.model import format_model_report, run_model_bench
    start = time.perf_counter()
    result = run_model_bench(torch, args.threads, rounds=3 if args.quick else 7,
                             progress=lambda text: print(f"  measuring {text} ...",
                                                         file=sys.stderr, flush=True))
    result["seconds"] = time.perf_counter() - start
    print("\n".join(format_model_report(result)))
    print(f"\n({result['seconds']:.0f} s)")
    if args.json is not None:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"raw numbers written to {args.json}")
    return 0


def main(args):
    """Run the ``bench`` subcommand; return the exit status."""
    if args.mpi:
        return mpi_main(args)
    if args.torch_model:
        return torch_model_main(args)
    patterns = [p.strip() for p in args.cases.split(",")] if args.cases else None
    settings = QUICK if args.quick else FULL
    if not select_cases(settings.quick, patterns):
        print(f"cbn bench: no case matches --cases {args.cases!r}; the cases are "
              + ", ".join(c.name for c in CASES)
              + (" (the large one not with --quick)" if args.quick else ""),
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    if args.compile and args.no_torch:
        print("cbn bench: --compile needs torch; it cannot go with --no-torch",
              file=sys.stderr)
        return 2
    result = run_bench(args.threads, settings, patterns, use_torch=not args.no_torch,
                       progress=lambda text: print(f"  measuring {text} ...",
                                                   file=sys.stderr, flush=True),
                       compile=args.compile, fused=args.fused, nan=args.nan)
    if args.compile and not result["meta"]["compile"]:
        print("cbn bench: --compile: torch does not import, so nothing was compiled",
              file=sys.stderr)
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
