"""The type stubs: mypy --strict accepts a program using the whole public API.

mypy checks the cbn these tests import: the source tree (in-place or editable
build), whose stubs sit beside the extension modules, or an installed copy,
which mypy only reads when it ships py.typed.
"""
import os
import subprocess
import sys
import sysconfig

import pytest

import cbn

pytest.importorskip("mypy", reason="mypy is not installed (pip install mypy, "
                                   "or the 'test' extra)")

HERE = os.path.dirname(os.path.abspath(__file__))
USAGE = os.path.join(HERE, "typing_usage.py")
PACKAGE = os.path.dirname(os.path.abspath(cbn.__file__))
ROOT = os.path.dirname(PACKAGE)


def _installed():
    """Whether cbn was imported from site-packages (not a source tree)."""
    paths = sysconfig.get_paths()
    return ROOT in {os.path.abspath(paths["purelib"]), os.path.abspath(paths["platlib"])}


def _mypy(tmp_path, *args):
    """Run ``mypy --strict`` on ``args``; returns (returncode, output).

    From a source tree mypy runs in the tree's root (so ``import cbn`` finds
    it and pyproject.toml's mypy settings apply); for an installed cbn it
    runs elsewhere and finds the package in site-packages.
    """
    cwd = str(tmp_path) if _installed() else ROOT
    cmd = [sys.executable, "-m", "mypy", "--strict", "--no-color-output",
           "--cache-dir", str(tmp_path / "mypy_cache"), *args]
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def test_public_api_usage_passes_mypy_strict(tmp_path):
    rc, output = _mypy(tmp_path, USAGE)
    assert rc == 0, output


@pytest.mark.skipif(_installed(), reason="checks the source tree's stubs")
def test_stubs_and_package_pass_mypy_strict(tmp_path):
    # What ``import cbn`` exposes: the stubs, __init__ and _config (the
    # command-line tools _demo, bench and __main__ are not public API).
    files = [os.path.join("cbn", f) for f in
             ("__init__.py", "_config.py", "kernels.pyi", "_normalize.pyi",
              "_layers.pyi")]
    rc, output = _mypy(tmp_path, *files)
    assert rc == 0, output


def test_usage_file_runs(tmp_path):
    # The types asserted for mypy must be those the calls really return.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    r = subprocess.run([sys.executable, USAGE], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("cbn "), r.stdout  # show_config printed
