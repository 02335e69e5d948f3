"""SyncBatchNorm: the same results as BatchNorm on the whole batch.

The multi-process tests launch ``mpiexec -n P python tests/mpi_worker.py``
(2 and 3 processes, uneven slices with an empty one; the worker does the
comparisons and reports them as JSON) and skip when mpi4py or mpiexec is
missing (``pip install -e ".[mpi]"`` installs both). The single-process tests
need no MPI.
"""
import importlib.util
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import cbn
from cbn.bench.mpi import mpiexec_command

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "mpi_worker.py")
EXAMPLE = os.path.join(HERE, os.pardir, "examples", "sync_bn_mpi.py")
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
MPIEXEC = mpiexec_command(2)
needs_example = pytest.mark.skipif(
    not os.path.isfile(EXAMPLE),
    reason="examples/sync_bn_mpi.py is not next to the tests (a copy of the "
           "tests without the examples)")
needs_mpi = pytest.mark.skipif(
    not (HAVE_MPI4PY and MPIEXEC),
    reason="needs mpi4py and mpiexec (pip install -e '.[mpi]'): "
           + ("mpi4py is not installed" if not HAVE_MPI4PY else "no mpiexec found"))


def mpirun(n, script, *args, timeout=120):
    """Run ``script`` on n processes; return the CompletedProcess.

    The launcher is cbn.bench.mpi.mpiexec_command's (MPICH's mpiexec needs no
    flags, as root or with more processes than CPUs; Open MPI's gets them).
    One OpenMP thread per process: the processes share the machine's cores.
    The launched Python finds the cbn this test imported (an in-place build
    or an installed one) through PYTHONPATH.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(
                   [os.path.dirname(os.path.dirname(os.path.abspath(cbn.__file__))),
                    os.environ.get("PYTHONPATH", "")]))
    cmd = mpiexec_command(n) + [sys.executable, script, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=env)


def worker_report(n, *args, timeout=120):
    r = mpirun(n, WORKER, *args, timeout=timeout)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no report (exit {r.returncode})\n{r.stdout}\n{r.stderr}"
    report = json.loads(lines[-1])
    assert report["failures"] == [], "\n".join(report["failures"][:20])
    assert r.returncode == 0, r.stderr
    return report


@needs_mpi
@pytest.mark.parametrize("nprocs", [2, 3])
def test_matches_batchnorm_on_the_whole_batch(nprocs):
    """y, dx (the rank's slice), dgamma, dbeta, running statistics and eval
    output over 3 steps, for 2-D, NCHW and NHWC, float32 and float64, affine
    on and off, momentum 0.1 and None, uneven slices with an empty one."""
    report = worker_report(nprocs, "layers")
    assert report["checks"] > 1000 * nprocs


@needs_mpi
@pytest.mark.parametrize("nprocs", [2, 3])
def test_whole_batch_errors_are_raised_on_every_rank_and_nan_flows(nprocs):
    worker_report(nprocs, "errors")


@needs_mpi
@pytest.mark.parametrize("nprocs", [2, 3])
def test_a_refusal_on_some_ranks_is_raised_on_all_and_nothing_hangs(nprocs):
    """Wrong features, dtype, ndim or dy on some ranks, backward before
    forward, construction with other arguments: every rank raises the same
    error naming the failing ranks, nothing changes, and no rank is left in
    a collective (a hang would exceed the timeout and fail the test)."""
    report = worker_report(nprocs, "faults", timeout=60)
    assert report["checks"] > 30 * nprocs


@needs_mpi
@needs_example
def test_data_parallel_demo_has_single_process_loss_curves():
    """The demo's training loop sharing minibatches among 3 processes
    (the example's DataParallel, SyncBatchNorm) against one process, float64."""
    worker_report(3, "demo", 3)


@needs_mpi
@needs_example
def test_example_prints_the_single_process_demo_curves():
    """examples/sync_bn_mpi.py on 4 processes prints the table of
    ``python -m cbn demo --float64`` (float64: see the example's docstring)."""
    from cbn._demo import run_demo

    r = mpirun(4, EXAMPLE, "--epochs", 3, "--float64", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "data-parallel on 4 processes" in r.stdout
    rows = [line.split() for line in r.stdout.splitlines()]
    rows = [row for row in rows if len(row) == 3 and row[0].isdigit()]
    want = run_demo(3, dtype=np.float64)
    assert [int(row[0]) for row in rows] == [1, 2, 3]
    for row, plain, bn in zip(rows, want.plain.loss, want.bn.loss):
        # printed to 4 decimals; the values agree to ~1e-9
        assert abs(float(row[1]) - plain) <= 0.5e-4 + 1e-8
        assert abs(float(row[2]) - bn) <= 0.5e-4 + 1e-8


# ---------------------------------------------------------- one process --

def run_steps(layer, xs, dys):
    out = []
    for x, dy in zip(xs, dys):
        y = layer(x)
        dx = layer.backward(dy)
        out += [y, dx, layer.running_mean.copy(), layer.running_var.copy()]
        if layer.affine:
            out += [layer.dgamma, layer.dbeta]
            layer.gamma -= 0.1 * layer.dgamma
    layer.eval()
    out.append(layer(xs[0]))
    return out


def single_process_cases():
    rng = np.random.default_rng(3)
    xs = [rng.normal(2.0, 3.0, (8, 4, 5, 5)).astype(np.float32) for _ in range(3)]
    dys = [rng.normal(size=x.shape).astype(np.float32) for x in xs]
    return xs, dys


@pytest.mark.parametrize("affine", [True, False])
def test_single_process_is_exactly_batchnorm(affine):
    """comm=None: COMM_WORLD of one process, or no MPI at all."""
    xs, dys = single_process_cases()
    got = run_steps(cbn.SyncBatchNorm(4, affine=affine, momentum=None), xs, dys)
    want = run_steps(cbn.BatchNorm(4, affine=affine, momentum=None), xs, dys)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.skipif(not HAVE_MPI4PY, reason="needs mpi4py")
def test_comm_self_is_exactly_batchnorm():
    from mpi4py import MPI

    xs, dys = single_process_cases()
    layer = cbn.SyncBatchNorm(4, comm=MPI.COMM_SELF)
    assert layer.comm is MPI.COMM_SELF
    got = run_steps(layer, xs, dys)
    want = run_steps(cbn.BatchNorm(4), xs, dys)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_without_mpi4py_the_layer_is_local():
    """Run in a fresh interpreter where mpi4py cannot be imported."""
    code = (
        "import sys; sys.modules['mpi4py'] = None\n"
        "import numpy as np, cbn\n"
        "assert 'mpi4py.MPI' not in sys.modules\n"
        "bn = cbn.SyncBatchNorm(2)\n"
        "assert bn.comm is None\n"
        "x = np.arange(8, dtype=np.float32).reshape(4, 2)\n"
        "assert np.array_equal(bn(x), cbn.BatchNorm(2)(x))\n"
        "print('ok')\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(
        os.path.abspath(cbn.__file__))))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.stdout.strip() == "ok", r.stderr


def test_import_cbn_does_not_import_mpi4py():
    code = "import sys, cbn; print('mpi4py' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(
        os.path.abspath(cbn.__file__))))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.stdout.strip() == "False", r.stderr


def test_arguments_are_batchnorms():
    bn = cbn.SyncBatchNorm(3, feature_axis=-1, eps=1e-3, momentum=None,
                           affine=False, track_running_stats=False,
                           dtype=np.float64)
    assert isinstance(bn, cbn.BatchNorm)
    assert (bn.feature_axis, bn.eps, bn.momentum, bn.affine,
            bn.track_running_stats, bn.dtype) == (-1, 1e-3, None, False, False,
                                                  np.dtype(np.float64))
    assert repr(bn).startswith("SyncBatchNorm(3, feature_axis=-1")
    with pytest.raises(ValueError):
        cbn.SyncBatchNorm(0)
    with pytest.raises(TypeError, match="mpi4py communicator"):
        cbn.SyncBatchNorm(3, comm="world")


def test_state_dict_and_pickle_round_trip():
    bn = cbn.SyncBatchNorm(3)
    bn(np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32))
    copy = pickle.loads(pickle.dumps(bn))
    assert type(copy) is cbn.SyncBatchNorm
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(copy.state_dict()[k], v)
    other = cbn.BatchNorm(3)
    other.load_state_dict(bn.state_dict())
    np.testing.assert_array_equal(other.running_var, bn.running_var)


@needs_mpi
def test_bench_mpi_launches_itself_and_reports(tmp_path):
    """``python -m cbn bench --mpi --quick``: a smoke test, no timing asserted."""
    target = tmp_path / "mpi.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(cbn.__file__))),
         os.environ.get("PYTHONPATH", "")]))
    for launcher_variable in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                              "PMIX_RANK", "SLURM_PROCID"):
        env.pop(launcher_variable, None)
    r = subprocess.run([sys.executable, "-m", "cbn", "bench", "--mpi", "--quick",
                        "--json", str(target)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "overhead of synchronizing" in r.stdout
    result = json.loads(target.read_text())
    assert result["meta"]["ranks"] == 2
    for name in ("local", "sync", "unfused", "collectives"):
        t = result["times"][name]
        assert len(t["rounds"]) == result["meta"]["rounds"]
        assert all(0 < v < 10 for v in t["rounds"])
    assert result["ratio"]["median"] > 0


def test_from_batchnorm_copies_arguments_state_and_mode():
    rng = np.random.default_rng(9)
    bn = cbn.BatchNorm2d(3, eps=1e-3, momentum=None, dtype=np.float64)
    bn(rng.normal(size=(4, 3, 2, 2)))
    bn.gamma = [1.0, 2.0, 3.0]
    bn.eval()
    sync = cbn.SyncBatchNorm.from_batchnorm(bn)
    assert (sync.feature_axis, sync.eps, sync.momentum, sync.dtype, sync.training) == (
        1, 1e-3, None, np.dtype(np.float64), False)
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(sync.state_dict()[k], v)
    x = rng.normal(size=(5, 3, 2, 2))
    np.testing.assert_array_equal(sync(x), bn(x))
    sync.gamma = [0.0, 0.0, 0.0]
    assert bn.gamma.tolist() == [1.0, 2.0, 3.0]   # a copy
    with pytest.raises(TypeError, match="BatchNorm"):
        cbn.SyncBatchNorm.from_batchnorm("bn")
