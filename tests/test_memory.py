"""Memory and lifetime: 100,000 calls of each public function and layer method
keep the process's resident memory flat and leave no references behind.

Every call below works on small arrays, so a leak of anything per call shows
as growth: see BOUND for why 2 MiB separates the two. Error paths are called
too, because that is where an allocation is most easily left unfreed.
"""
import gc
import os
import pickle
import sys

import numpy as np
import pytest

import cbn

CALLS = 100_000
WARMUP = 5_000
# Growth allowed over CALLS calls. Below it: allocator noise once warm (a new
# pymalloc arena is 1 MiB; glibc trims and grows its heap in chunks of
# 128 KiB). Above it: any per-call leak that matters. The smallest object a
# leak can consist of, a 16-byte malloc block (32 bytes with its header) or a
# 24-byte Python float, gives at least 2.4 MB over CALLS calls, and a leaked
# output array (a 112-byte header plus its data) 10 times that;
# test_bound_detects_the_smallest_leak checks the first case.
BOUND = 2 << 20

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _asan_loaded():
    with open("/proc/self/maps") as f:
        return "libasan" in f.read()


pytestmark = [
    pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                       reason="reads the resident set size from /proc (Linux)"),
    pytest.mark.skipif(os.path.exists("/proc/self/maps") and _asan_loaded(),
                       reason="under AddressSanitizer, freed memory sits in its "
                              "quarantine, so RSS grows without a leak"),
]


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _raises(exc, f, *args, **kwargs):
    """Call f, which must raise exc (a call that does not is a failure)."""
    try:
        f(*args, **kwargs)
    except exc:
        return
    raise AssertionError(f"{f} did not raise {exc.__name__}")


def _scenarios():
    """name -> (call, inputs): ``call()`` runs once; ``inputs`` are the
    objects whose reference counts it must not change."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    x64 = rng.normal(size=(6, 3, 5))
    # Strided, with the feature axis first in memory: the path that copies.
    xt = np.asfortranarray(rng.normal(size=(5, 3, 4)).astype(np.float32))[:, ::-1]
    dy = rng.normal(size=x.shape).astype(np.float32)
    out = np.empty_like(x)
    mean = np.zeros(4)
    var = np.ones(4)
    gamma = np.full(4, 2.0)
    beta = np.full(4, 0.5)
    bad_gamma = np.ones(5)
    x16 = x.astype(np.float16)

    bn = cbn.BatchNorm1d(4)
    bn_eval = cbn.BatchNorm1d(4).eval()
    bn_last = cbn.BatchNorm(4, feature_axis=-1, dtype=np.float64)
    x_last = rng.normal(size=(3, 2, 4))
    bn_bwd = cbn.BatchNorm1d(4)
    bn_bwd(x)
    state = bn.state_dict()
    x_wrong = x.astype(np.float64)

    s = {
        "normalize_batch": (lambda: cbn.normalize_batch(x), [x]),
        "normalize_batch-affine": (
            lambda: cbn.normalize_batch(x, gamma=gamma, beta=beta, eps=1e-3),
            [x, gamma, beta]),
        "normalize_batch-out": (lambda: cbn.normalize_batch(x, out=out), [x, out]),
        "normalize_batch-return_stats": (
            lambda: cbn.normalize_batch(x, return_stats=True), [x]),
        "normalize_batch-given_stats": (
            lambda: cbn.normalize_batch(x, mean=mean, var=var, out=out),
            [x, mean, var, out]),
        "normalize_batch-axes-float64": (
            lambda: cbn.normalize_batch(x64, axis=(0, 2), return_stats=True), [x64]),
        "normalize_batch-strided-copy": (
            lambda: cbn.normalize_batch(xt, axis=(0, 2)), [xt]),
        "normalize_batch-float16": (lambda: cbn.normalize_batch(x16), [x16]),
        "normalize_batch-error": (
            lambda: _raises(ValueError, cbn.normalize_batch, x, gamma=bad_gamma),
            [x, bad_gamma]),
        "normalize_batch_backward": (
            lambda: cbn.normalize_batch_backward(dy, x, mean, var, gamma=gamma),
            [dy, x, mean, var, gamma]),
        "normalize_batch_backward-error": (
            lambda: _raises(ValueError, cbn.normalize_batch_backward, dy, x,
                            mean, var, gamma=bad_gamma),
            [dy, x, mean, var, bad_gamma]),
        "forward-train": (lambda: bn(x), [x]),
        "forward-eval": (lambda: bn_eval.forward(x), [x]),
        "forward-channels-last-float64": (lambda: bn_last(x_last), [x_last]),
        "forward-error": (lambda: _raises(TypeError, bn.forward, x_wrong), [x_wrong]),
        "backward": (lambda: bn_bwd.backward(dy), [dy]),
        "backward-error": (lambda: _raises(ValueError, bn_bwd.backward, dy[:3]), [dy]),
        "state_dict": (lambda: bn.state_dict(), []),
        "load_state_dict": (lambda: bn.load_state_dict(state), [state]),
        "train-eval": (lambda: bn.train().eval().train(), []),
        "reset_parameters": (lambda: bn.reset_parameters(), []),
        "set_gamma": (lambda: setattr(bn, "gamma", gamma), [gamma]),
        "pickle": (lambda: pickle.loads(pickle.dumps(bn)), []),
        "repr": (lambda: repr(bn), []),
        "threads-config": (lambda: (cbn.set_num_threads(cbn.get_num_threads()),
                                    cbn.kernels.openmp_version()), []),
        "simd-config": (lambda: (cbn.kernels.set_simd(cbn.kernels.get_simd()),
                                 cbn.kernels.simd_levels()), []),
    }
    return s


SCENARIOS = sorted(_scenarios())


def _growth(call, calls=CALLS):
    """RSS growth (bytes) over ``calls`` calls, after a warm-up."""
    for _ in range(WARMUP):
        call()
    gc.collect()
    before = _rss()
    for _ in range(calls):
        call()
    gc.collect()
    return _rss() - before


@pytest.mark.parametrize("name", SCENARIOS)
def test_repeated_calls_keep_memory_flat(name):
    call, inputs = _scenarios()[name]
    call()  # a layer keeps its last input: count references from here
    refs = [sys.getrefcount(a) for a in inputs]
    growth = _growth(call)
    assert growth < BOUND, f"{name}: RSS grew {growth / 2**20:.2f} MiB over {CALLS} calls"
    assert [sys.getrefcount(a) for a in inputs] == refs, \
        f"{name}: references to the inputs changed"


def test_bound_detects_the_smallest_leak():
    """A leak of one 24-byte Python float per call (kept in a list) exceeds
    BOUND, so the test above can fail for a leak that small."""
    kept = []
    value = 0.5
    growth = _growth(lambda: kept.append(value * 3.0))
    assert growth > BOUND
