"""Run under mpiexec by tests/test_sync_bn.py: SyncBatchNorm against BatchNorm.

Every rank builds the same global batches from a fixed seed, keeps its slice
(uneven sizes, one rank empty), and runs a few training steps of a
SyncBatchNorm while a plain cbn.BatchNorm runs the same steps on the whole
batch in the same process. Each rank checks its slice of y and dx, and
dgamma, dbeta, the running statistics and the eval output, against the
BatchNorm's; and that every rank holds bitwise the same statistics and
gradients. Rank 0 prints one JSON line {"checks": n, "failures": [...]}; the
exit status is 1 if anything failed on any rank.

Usage: mpiexec -n P python tests/mpi_worker.py layers|errors|faults|demo EPOCHS
"""
import itertools
import json
import sys

import numpy as np
from mpi4py import MPI

import cbn

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()

# Per-rank batch sizes: uneven, and one rank empty (rank 0 for 2 ranks, so
# that the empty rank is also the one that merges first).
SIZES = {2: [[0, 13], [5, 12]], 3: [[4, 0, 9], [1, 6, 2]], 4: [[3, 0, 5, 4]]}
LAYOUTS = {            # shape after the batch axis, feature_axis
    "2-D": ((5,), 1),
    "NCHW": ((3, 4, 5), 1),
    "NHWC": ((4, 5, 3), -1),
}
TOL = {np.float32: 1e-5, np.float64: 1e-12}


class Checker:
    def __init__(self):
        self.checks = 0
        self.failures = []

    def close(self, what, got, want, tol):
        """Relative to the largest reference value (0-size arrays pass)."""
        self.checks += 1
        got = np.asarray(got, dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            self.failures.append(f"rank {RANK}: {what}: shape {got.shape} != {want.shape}")
            return
        if want.size == 0:
            return
        scale = max(np.abs(want).max(), 1e-300)
        err = np.abs(got - want).max() / scale
        if not err <= tol:
            self.failures.append(f"rank {RANK}: {what}: relative error {err:.3g} > {tol:g}")

    def true(self, what, cond):
        self.checks += 1
        if not cond:
            self.failures.append(f"rank {RANK}: {what}")

    def same_on_every_rank(self, what, value):
        """Bitwise equality with rank 0's value."""
        self.checks += 1
        root = COMM.bcast(np.asarray(value) if RANK == 0 else None, root=0)
        if not np.array_equal(root, np.asarray(value)):
            self.failures.append(f"rank {RANK}: {what} differs from rank 0's")


def slice_of(a, sizes, axis=0):
    start = sum(sizes[:RANK])
    return a.take(np.arange(start, start + sizes[RANK]), axis=axis)


def check_layers(ck):
    rng = np.random.default_rng(1234)
    combos = itertools.product(SIZES[SIZE], LAYOUTS.items(),
                               (np.float32, np.float64), (True, False),
                               (0.1, None))
    for sizes, (layout, (tail, fa)), dtype, affine, momentum in combos:
        n = sum(sizes)
        C = tail[fa] if fa == -1 else tail[0]
        kw = dict(feature_axis=fa, momentum=momentum, affine=affine, dtype=dtype)
        ref = cbn.BatchNorm(C, **kw)
        sync = cbn.SyncBatchNorm(C, comm=COMM, **kw)
        name = f"{layout} {np.dtype(dtype).name} sizes={sizes} affine={affine} momentum={momentum}"
        tol = TOL[dtype]
        for step in range(3):
            # the same data on every rank; far from zero, unit-scale spread
            x = rng.normal(4.0 + step, 1.5, (n,) + tail).astype(dtype)
            dy = rng.normal(0.3, 1.0, x.shape).astype(dtype)
            y_ref, y = ref(x), sync(slice_of(x, sizes))
            dx_ref, dx = ref.backward(dy), sync.backward(slice_of(dy, sizes))
            at = f"{name} step {step}"
            ck.close(f"{at}: y", y, slice_of(y_ref, sizes), tol)
            ck.close(f"{at}: dx", dx, slice_of(dx_ref, sizes), tol)
            ck.close(f"{at}: running_mean", sync.running_mean, ref.running_mean, tol)
            ck.close(f"{at}: running_var", sync.running_var, ref.running_var, tol)
            ck.true(f"{at}: num_batches_tracked",
                    sync.num_batches_tracked == ref.num_batches_tracked == step + 1)
            ck.same_on_every_rank(f"{at}: running_mean", sync.running_mean)
            ck.same_on_every_rank(f"{at}: running_var", sync.running_var)
            if affine:
                ck.close(f"{at}: dgamma", sync.dgamma, ref.dgamma, tol)
                ck.close(f"{at}: dbeta", sync.dbeta, ref.dbeta, tol)
                ck.same_on_every_rank(f"{at}: dgamma", sync.dgamma)
                ck.same_on_every_rank(f"{at}: dbeta", sync.dbeta)
                # the same update everywhere keeps the parameters in step
                for layer in (ref, sync):
                    layer.gamma -= 0.1 * ref.dgamma
                    layer.beta -= 0.1 * ref.dbeta
        x = rng.normal(4.0, 1.5, (n,) + tail).astype(dtype)
        ref.eval()
        sync.eval()
        ck.close(f"{name}: eval y", sync(slice_of(x, sizes)), slice_of(ref(x), sizes), tol)
        ck.true(f"{name}: state_dict keys", list(sync.state_dict()) == list(ref.state_dict()))

    # without running statistics, eval uses the whole batch's statistics too
    sizes = SIZES[SIZE][0]
    x = rng.normal(size=(sum(sizes), 6, 7))
    ref = cbn.BatchNorm(6, track_running_stats=False, dtype=np.float64).eval()
    sync = cbn.SyncBatchNorm(6, track_running_stats=False, dtype=np.float64).eval()
    ck.close("eval without running stats", sync(slice_of(x, sizes)),
             slice_of(ref(x), sizes), 1e-12)
    ck.true("the default communicator is COMM_WORLD",
            MPI.Comm.Compare(sync.comm, COMM) == MPI.IDENT)


def check_errors(ck):
    """Errors about the whole batch come on every rank, after the collective;
    NaN flows through."""
    bn = cbn.SyncBatchNorm(3, dtype=np.float64)
    before = bn.running_mean.copy()
    for rows, what in ((np.zeros(SIZE, int), "empty everywhere"),
                       (np.eye(SIZE, dtype=int)[SIZE - 1], "one value in all")):
        try:
            bn(np.ones((rows[RANK], 3)))
        except ValueError:
            ck.true(f"{what}: nothing changed", np.array_equal(bn.running_mean, before)
                    and bn.num_batches_tracked == 0)
        else:
            ck.true(f"{what}: no ValueError raised", False)
    # the layer still works after those errors (every rank left the collective)
    y = bn(np.full((2, 3), float(RANK)))
    ck.close("after errors", bn.running_mean,
             np.full(3, 0.1 * (SIZE - 1) / 2), 1e-12)
    ck.true("after errors: shape", y.shape == (2, 3))

    # NaN in one rank's slice spreads to its feature on every rank, as in a
    # single BatchNorm, and nowhere else
    x = np.random.default_rng(RANK).normal(size=(4, 3))
    if RANK == SIZE - 1:
        x[1, 0] = np.nan
    nan = cbn.SyncBatchNorm(3, dtype=np.float64)
    y = nan(x)
    dx = nan.backward(np.ones_like(y))
    ck.true("NaN: its feature is NaN everywhere", np.isnan(y[:, 0]).all()
            and np.isnan(nan.running_mean[0]) and np.isnan(dx[:, 0]).all())
    ck.true("NaN: other features are finite", np.isfinite(y[:, 1:]).all()
            and np.isfinite(dx[:, 1:]).all() and np.isfinite(nan.running_var[1:]).all())


def expect_refusal(ck, what, kind, ranks, call, layer=None):
    """``call()`` must raise ``kind`` on every rank, naming ``ranks`` (the
    failing ones), and change none of ``layer``'s state."""
    before = None if layer is None else {k: np.array(v) for k, v in
                                         layer.state_dict().items()}
    grads = None if layer is None else (layer.dgamma, layer.dbeta)
    try:
        call()
    except kind as e:
        msg = str(e)
        word = "ranks " if len(ranks) > 1 else "rank "
        ck.true(f"{what}: the message names the failing rank{'s' if len(ranks) > 1 else ''}"
                f" ({msg!r})", (word + ", ".join(map(str, ranks))) in msg)
        ck.same_on_every_rank(f"{what}: the message", np.array(msg))
    except Exception as e:  # noqa: BLE001 - any other outcome is the failure
        ck.true(f"{what}: {type(e).__name__} instead of {kind.__name__}: {e}", False)
    else:
        ck.true(f"{what}: no {kind.__name__} raised", False)
    if layer is not None:
        after = layer.state_dict()
        ck.true(f"{what}: the state is unchanged", before.keys() == after.keys() and all(
            np.array_equal(before[k], after[k]) for k in before))
        ck.true(f"{what}: dgamma and dbeta unchanged",
                (layer.dgamma, layer.dbeta) == grads
                or all(np.array_equal(a, b) for a, b in zip((layer.dgamma, layer.dbeta), grads)))


def check_faults(ck):
    """A call refused on some ranks only is refused on all, with one error
    naming the failing ranks, and nothing changes; no rank is left waiting
    (the test runs this under a timeout). The layer works afterwards."""
    last = SIZE - 1
    bn = cbn.SyncBatchNorm(3, dtype=np.float64)
    x = np.random.default_rng(RANK).normal(size=(4, 3))
    # forward: a wrong feature count, dtype or ndim on one rank
    expect_refusal(ck, "features on the last rank", ValueError, [last],
                   lambda: bn(np.ones((4, 5 if RANK == last else 3))), bn)
    expect_refusal(ck, "dtype on rank 0", TypeError, [0],
                   lambda: bn(x.astype(np.float32) if RANK == 0 else x), bn)
    expect_refusal(ck, "ndim on the last rank", ValueError, [last],
                   lambda: bn(np.ones(3) if RANK == last else x), bn)
    if SIZE > 2:
        expect_refusal(ck, "two ranks fail, differently", TypeError, [0, 1],
                       lambda: bn(x.astype(np.float32) if RANK == 0 else
                                  np.ones((2, 7)) if RANK == 1 else x), bn)
    # backward: before any forward (every rank), then a wrong dy on one
    expect_refusal(ck, "backward before forward", RuntimeError, list(range(SIZE)),
                   lambda: bn.backward(np.ones((4, 3))), bn)
    y = bn(x)
    ck.true("forward after refusals: one batch tracked", bn.num_batches_tracked == 1)
    expect_refusal(ck, "dy shape on the last rank", ValueError, [last],
                   lambda: bn.backward(np.ones((5, 3)) if RANK == last else np.ones_like(y)),
                   bn)
    expect_refusal(ck, "dy dtype on rank 0", TypeError, [0],
                   lambda: bn.backward(np.ones(y.shape, np.float32) if RANK == 0
                                       else np.ones_like(y)), bn)
    bn.backward(np.ones_like(y))
    ck.close("backward after refusals: dbeta", bn.dbeta, np.full(3, 4.0 * SIZE), 1e-12)
    # eval with running statistics is local: a wrong input raises only there
    bn.eval()
    if RANK == last:
        try:
            bn(np.ones((2, 4)))
        except ValueError as e:
            ck.true("eval refusal is local", "rank" not in str(e))
    ck.true("eval still works", bn(x).shape == x.shape)
    # construction: a refused argument, or arguments that differ, on one rank
    expect_refusal(ck, "num_features=0 on the last rank", ValueError, [last],
                   lambda: cbn.SyncBatchNorm(0 if RANK == last else 3))
    try:
        cbn.SyncBatchNorm(3 + (RANK == last), dtype=np.float64)
    except ValueError as e:
        ck.true(f"different num_features: named ({e})", "num_features" in str(e)
                and f"rank {last}" in str(e))
        ck.same_on_every_rank("different num_features: the message", np.array(str(e)))
    else:
        ck.true("different num_features: no ValueError", False)
    # every rank left every collective: a last full step agrees everywhere
    bn2 = cbn.SyncBatchNorm(3, dtype=np.float64)
    bn2(np.full((2, 3), float(RANK)))
    ck.close("a step after everything", bn2.running_mean,
             np.full(3, 0.1 * (SIZE - 1) / 2), 1e-12)


def check_demo(ck, epochs):
    """The data-parallel demo (examples/sync_bn_mpi.py's way) has the
    single-process demo's loss curves."""
    import functools
    import os

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "examples"))
    from sync_bn_mpi import DataParallel

    from cbn._demo import run_demo
    # float64: in float32 training amplifies the rounding differences of
    # another summation order to the percent level within two epochs.
    par = run_demo(epochs, parallel=DataParallel(COMM), dtype=np.float64,
                   norm_layer=functools.partial(cbn.SyncBatchNorm, comm=COMM))
    one = run_demo(epochs, dtype=np.float64)
    for name in ("plain", "bn"):
        ck.close(f"demo {name} loss", getattr(par, name).loss, getattr(one, name).loss, 1e-9)
        ck.true(f"demo {name} accuracy",
                (getattr(par, name).train_accuracy, getattr(par, name).test_accuracy)
                == (getattr(one, name).train_accuracy, getattr(one, name).test_accuracy))
        ck.same_on_every_rank(f"demo {name} loss", getattr(par, name).loss)


def main(argv):
    ck = Checker()
    what = argv[1]
    if what == "layers":
        check_layers(ck)
    elif what == "errors":
        check_errors(ck)
    elif what == "faults":
        check_faults(ck)
    elif what == "demo":
        check_demo(ck, int(argv[2]))
    else:
        raise SystemExit(f"unknown check {what!r}")
    everything = COMM.gather((ck.checks, ck.failures), root=0)
    if RANK == 0:
        checks = sum(c for c, _ in everything)
        failures = [f for _, fs in everything for f in fs]
        print(json.dumps({"checks": checks, "failures": failures}), flush=True)
        status = 1 if failures else 0
    else:
        status = 0
    return COMM.bcast(status, root=0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
