"""The whole public API of cbn, used the way a typed program would.

``mypy --strict`` must accept this file (tests/test_typing.py checks it), and
it also runs as a plain script, so the types it asserts are the ones the
calls really return: at run time ``assert_type`` checks the class (and, for
``Floats``, that the dtype is a floating one).
"""
from __future__ import annotations

import pickle
import typing
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

import cbn
from cbn import kernels

if TYPE_CHECKING:
    from typing_extensions import assert_type
else:
    def assert_type(value, typ):
        assert isinstance(value, typing.get_origin(typ) or typ), (value, typ)
        if typ == Floats:
            assert value.dtype.kind == "f", value.dtype
        return value

Floats = NDArray[np.floating[Any]]


def array_functions() -> None:
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    gamma = np.full(3, 2.0)

    y = cbn.normalize_batch(x, gamma, 0.5, axis=0, eps=1e-3)
    assert_type(y, Floats)
    assert y.shape == x.shape

    y, mean, var = cbn.normalize_batch(x, return_stats=True)
    assert_type(mean, NDArray[Any])
    assert_type(var, NDArray[Any])

    out = np.empty_like(x)
    y = cbn.normalize_batch(x, mean=mean, var=var, out=out, return_stats=False)
    assert y is out

    flag: bool = len(x) > 1
    either = cbn.normalize_batch(x, axis=(0,), return_stats=flag)
    if isinstance(either, tuple):
        y = either[0]
    else:
        y = either
    y = cbn.normalize_batch([[1, 2], [3, 5]], axis=None)

    dx, dgamma, dbeta = cbn.normalize_batch_backward(
        np.ones_like(x), x, mean, var, gamma, axis=0, eps=1e-5,
        batch_stats=True, out=np.empty_like(x))
    assert_type(dx, Floats)
    assert_type(dgamma, Floats)
    assert_type(dbeta, Floats)
    assert dgamma.shape == dbeta.shape == (3,)


def layers() -> None:
    rng = np.random.default_rng(1)
    bn = cbn.BatchNorm(4, feature_axis=-1, eps=1e-4, momentum=None,
                       affine=True, track_running_stats=True, dtype=np.float64)
    x = rng.normal(size=(8, 5, 4))
    y = bn(x)
    assert_type(y, Floats)
    y = bn.forward(x)
    dx = bn.backward(np.ones_like(y))
    assert_type(dx, Floats)
    dgamma: Floats | None = bn.dgamma
    dbeta: Floats | None = bn.dbeta
    assert dgamma is not None and dbeta is not None

    num_features: int = bn.num_features
    feature_axis: int = bn.feature_axis
    affine: bool = bn.affine
    tracking: bool = bn.track_running_stats
    dtype: np.dtype[Any] = bn.dtype
    eps: float = bn.eps
    momentum: float | None = bn.momentum
    count: int = bn.num_batches_tracked
    assert (num_features, feature_axis, affine, tracking) == (4, -1, True, True)
    assert dtype == np.float64 and eps == 1e-4 and momentum is None and count == 2

    bn.eps = 1e-5
    bn.momentum = 0.2
    bn.num_batches_tracked = 0
    bn.num_batches_tracked = np.int64(0)  # integer arguments take numpy integers
    bn.gamma = np.full(4, 1.5)
    bn.beta = [0.0, 1.0, 2.0, 3.0]
    bn.running_mean = np.zeros(4)
    bn.running_var = np.ones(4)
    gamma = bn.gamma
    assert gamma is not None
    gamma[...] = 1.0
    assert bn.beta is not None and bn.running_mean is not None
    assert bn.running_var is not None

    training: bool = bn.training
    bn.training = not training
    same: cbn.BatchNorm = bn.train(True).eval()
    assert same is bn and not bn.training
    bn.reset_running_stats()
    bn.reset_parameters()

    state: dict[str, NDArray[Any]] = bn.state_dict()
    copy = cbn.BatchNorm(4, feature_axis=-1, dtype=np.float64)
    copy.load_state_dict(state)
    copy.load_state_dict({k: v.tolist() for k, v in state.items()})
    restored: cbn.BatchNorm = pickle.loads(pickle.dumps(bn))
    assert restored.training == bn.training

    bn1 = cbn.BatchNorm1d(3, eps=1e-5, momentum=0.1, affine=False,
                          track_running_stats=False, dtype=np.float32)
    y = bn1(rng.normal(size=(4, 3)).astype(np.float32))
    assert bn1.gamma is None and bn1.running_mean is None
    bn2 = cbn.BatchNorm2d(np.int64(2)).eval()
    assert_type(bn2, cbn.BatchNorm2d)
    y = bn2(rng.normal(size=(2, 2, 3, 3)).astype(np.float32))
    bn3 = cbn.BatchNorm3d(2, dtype="float64")
    y = bn3(rng.normal(size=(2, 2, 2, 2, 2)))


def folding() -> None:
    rng = np.random.default_rng(3)
    bn = cbn.BatchNorm1d(3).eval()
    W2, b2 = cbn.fold_batchnorm(rng.normal(size=(3, 5)), None, bn)
    assert_type(W2, Floats)
    W2, b2 = cbn.fold_batchnorm(rng.normal(size=(5, 3)), np.zeros(3),
                                {"running_mean": np.zeros(3), "running_var": np.ones(3),
                                 "eps": 1e-5}, axis=1)
    assert W2.shape == (5, 3) and b2.shape == (3,)


def statistics_and_sync() -> None:
    rng = np.random.default_rng(2)
    chunks = [rng.normal(size=(5, 3)) for _ in range(3)]
    parts = [cbn.batch_stats(c, axis=0) for c in chunks]
    total: cbn.BatchStats = cbn.merge_stats(*parts)
    total = parts[0].merge(*parts[1:])
    n = total.count  # an int, or per-feature counts after nan_policy="omit"
    assert isinstance(n, int) and n == 15
    omitted = cbn.batch_stats(chunks[0], nan_policy="omit").count
    assert not isinstance(omitted, int) and omitted.shape == (3,)
    assert_type(total.mean, NDArray[np.float64])
    assert_type(total.m2, NDArray[np.float64])
    assert_type(total.var(ddof=1), NDArray[np.float64])
    s = cbn.batch_stats(rng.normal(size=(2, 3, 4)), axis=(0, 2))
    s = cbn.BatchStats(s.count, s.mean, s.m2)
    s = cbn.BatchStats(np.int64(s.count), s.mean, s.m2)
    assert_type(s.var(ddof=0.5), NDArray[np.float64])

    bn = cbn.SyncBatchNorm(3, comm=None, feature_axis=1, eps=1e-5,
                           momentum=0.1, affine=True, track_running_stats=True,
                           dtype=np.float64)
    as_batchnorm: cbn.BatchNorm = bn
    y = bn(rng.normal(size=(4, 3)))
    assert_type(y, Floats)
    dx = bn.backward(np.ones_like(y))
    assert_type(dx, Floats)
    comm: Any = bn.comm
    converted: cbn.SyncBatchNorm = cbn.SyncBatchNorm.from_batchnorm(
        cbn.BatchNorm2d(3), comm=comm)
    local = cbn.SyncBatchNorm(np.int64(3), feature_axis=np.int64(-1), comm=None)
    assert local.feature_axis == -1
    assert converted.num_features == 3
    assert as_batchnorm is bn and (comm is None or comm.Get_size() >= 1)


def configuration() -> None:
    threads: int = cbn.get_num_threads()
    cbn.set_num_threads(1)
    cbn.set_num_threads(np.int32(0))
    assert threads >= 1
    levels: list[str] = kernels.simd_levels()
    level: str = kernels.get_simd()
    kernels.set_simd(level)
    assert level in levels
    version: int = kernels.openmp_version()
    assert version >= 0
    cbn.show_config()
    assert isinstance(cbn.__version__, str)
    include: str = cbn.get_include()
    assert include


if __name__ == "__main__":
    array_functions()
    layers()
    folding()
    statistics_and_sync()
    configuration()
