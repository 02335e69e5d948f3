"""Command line of cbn: ``python -m cbn <command> [options]``.

Commands
--------
demo
    Train a small NumPy MLP with and without ``cbn.BatchNorm1d`` on badly
    scaled synthetic data and print both loss curves side by side
    (see :mod:`cbn._demo`).
bench
    Time cbn's forward (training and eval) and backward against the memory
    bandwidth floor (a copy of the same array) and, when it imports, PyTorch
    (see :mod:`cbn.bench`).

Each command lives in its own module, which provides ``add_arguments(parser)``
and ``main(args) -> int`` (the exit status); adding one is one entry in
``COMMANDS``.
"""
import argparse
import importlib
import sys

#: name -> (module that implements it, one-line help)
COMMANDS = {
    "demo": ("cbn._demo", "train an MLP with and without BatchNorm1d on badly "
                          "scaled data and compare the losses"),
    "bench": ("cbn.bench", "time cbn against the memory-bandwidth floor and PyTorch"),
}


def build_parser():
    """The argparse parser of ``python -m cbn``, one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="python -m cbn",
        description="cbn: batch normalization for NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=module.__doc__.split("\n")[0])
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv=None):
    """Parse `argv` (default ``sys.argv[1:]``), run the command, return its status."""
    args = build_parser().parse_args(argv)
    if getattr(args, "plot", None) is not None:
        # Every command with --plot needs matplotlib; checked before the
        # command runs so a missing dependency costs a second, not a whole run.
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(f"python -m cbn {args.command}: --plot needs matplotlib, which is "
                  f"not installed (pip install matplotlib); nothing was run.",
                  file=sys.stderr)
            return 1
    return args._main(args)


if __name__ == "__main__":
    sys.exit(main())
