"""The cimport API, used the way a downstream package would.

Builds examples/cython (setuptools + Cython, with cbn found on sys.path and no
include directories or libraries) in a temporary directory, then compares
what its nogil calls of cbn.kernels compute with the Python API.
"""
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cbn

pytest.importorskip("Cython")
pytestmark = pytest.mark.slow  # compiling the example takes several seconds

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "cython"
DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(the example module, its generated C source)."""
    if not EXAMPLE.is_dir():
        pytest.skip("examples/cython is not here (installed copy)")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    work = tmp_path_factory.mktemp("cython_example")
    for name in ("setup.py", "cbn_example.pyx"):
        shutil.copy(EXAMPLE / name, work)
    # cbn must be importable (as if installed) for Cython to find its .pxd.
    env = dict(os.environ)
    cbn_root = str(pathlib.Path(cbn.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [cbn_root] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"],
                          cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [so] = [p for p in work.iterdir()
            if p.name.startswith("cbn_example.") and p.suffix in (".so", ".pyd")]
    spec = importlib.util.spec_from_file_location("cbn_example", so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, (work / "cbn_example.c").read_text()


def test_downstream_module_needs_no_cbn_header(built):
    _, c_source = built
    assert '#include "cbn.h"' not in c_source
    assert "cbn_forward_train" not in c_source  # only through __pyx_capi__


@pytest.mark.parametrize("use_memoryviews", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_and_backward_match_python_api(built, dtype, use_memoryviews):
    ex, _ = built
    rng = np.random.default_rng(1)
    x = rng.normal(3, 2, (6, 4, 5)).astype(dtype)
    dy = rng.normal(size=x.shape).astype(dtype)
    x.flags.writeable = False  # the inputs are const views

    y, mean, var = ex.forward_train(x, 1e-3, use_memoryviews)
    yref, mref, vref = cbn.normalize_batch(x, axis=(0, 2), eps=1e-3,
                                           return_stats=True)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, yref, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(mean, mref, rtol=1e-13)
    np.testing.assert_allclose(var, vref, rtol=1e-13)

    y_infer = ex.forward_infer(x, mean, var, 1e-3, use_memoryviews)
    np.testing.assert_array_equal(y_infer, cbn.normalize_batch(
        x, axis=(0, 2), eps=1e-3, mean=mean, var=var))

    dx, dgamma, dbeta = ex.backward(dy, x, mean, var, 1e-3, use_memoryviews)
    dxref, dgref, dbref = cbn.normalize_batch_backward(dy, x, mean, var,
                                                       axis=(0, 2), eps=1e-3)
    np.testing.assert_allclose(dx, dxref, rtol=RTOL[dtype], atol=RTOL[dtype])
    # The Python API returns the parameter gradients in x's dtype.
    np.testing.assert_allclose(dgamma, dgref, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(dbeta, dbref, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_status_codes_come_back_without_raising_in_nogil(built, dtype):
    ex, _ = built
    with pytest.raises(ValueError, match="empty"):
        ex.forward_train(np.zeros((0, 3, 1), dtype), 1e-5, True)
    with pytest.raises(ValueError, match="eps"):
        ex.forward_train(np.ones((2, 3, 1), dtype), -1.0, True)


def test_memoryview_forms_check_shapes(built):
    ex, _ = built
    x = np.ones((4, 3, 2))
    with pytest.raises(ValueError, match="argument"):  # var has 2 entries, C = 3
        ex.forward_infer(x, np.zeros(3), np.ones(2), 1e-5, True)
