"""The C core without Python: examples/c/normalize.c, built and run.

The example includes only cbn.h; it is compiled with the system C compiler
together with the core's sources (src_c/**/*.c, present in a source checkout,
not in an installed wheel), with OpenMP when the compiler has it. It checks
its own results against naive loops and exits nonzero on any failure.
"""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "src_c").glob("**/*.c"))
EXAMPLE = ROOT / "examples" / "c" / "normalize.c"


def compiler():
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    if not SOURCES or not EXAMPLE.exists():
        pytest.skip("the C sources are not here (installed copy)")
    return cc


def build(cc, out, extra):
    # -O0: the example checks correctness, and this keeps the build ~1 s.
    cmd = [cc, "-O0", "-std=c99", f"-I{ROOT / 'src_c'}", str(EXAMPLE),
           *map(str, SOURCES), "-o", str(out), *extra, "-lm"]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def executable(tmp_path_factory):
    cc = compiler()
    exe = tmp_path_factory.mktemp("c_example") / "normalize"
    proc = build(cc, exe, ["-fopenmp"])
    if proc.returncode != 0:  # a compiler without OpenMP: the serial core
        proc = build(cc, exe, [])
    assert proc.returncode == 0, proc.stderr
    return exe


def test_c_example_runs_and_checks_itself(executable):
    proc = subprocess.run([str(executable)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "OK"
    assert sum(line.startswith("feature ") for line in lines) == 3
