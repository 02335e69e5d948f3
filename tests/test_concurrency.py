"""Python threads: cbn's kernels release the GIL, so calls from several threads
run at the same time. Separate data and layers must give exactly the
single-threaded results; a shared layer may run eval-mode forward calls at
once, and refuses, with RuntimeError, the overlaps it cannot do right
(training-mode forward and backward; see the Notes of cbn.BatchNorm).
"""
import threading

import numpy as np
import pytest

import cbn

THREADS = 8
ROUNDS = 3
# Large enough that each kernel call runs for a while (a tenth of a
# millisecond or more) with the GIL released, so the threads' kernels
# overlap; above the 65536 elements from which a call uses OpenMP threads.
SHAPE = (32, 16, 16, 16)


def _run_threads(target, n=THREADS):
    """Run ``target(i)`` in n threads started together; return the results
    in thread order, re-raising the first exception any thread raised."""
    start = threading.Barrier(n)
    results = [None] * n
    errors = []

    def run(i):
        try:
            start.wait()
            results[i] = target(i)
        except BaseException as e:  # reported in the calling thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _workload(i):
    """Every public computation on data of its own (seed i), with a layer of
    its own trained over a few rounds; returns every array produced."""
    rng = np.random.default_rng(1000 + i)
    dtype = np.float32 if i % 2 == 0 else np.float64
    x = rng.normal(i, 1 + i, SHAPE).astype(dtype)
    dy = rng.normal(size=SHAPE).astype(dtype)
    gamma = rng.uniform(0.5, 2, SHAPE[1])
    beta = rng.normal(size=SHAPE[1])
    axes = (0, 2, 3)
    out = []
    y, mean, var = cbn.normalize_batch(x, axis=axes, gamma=gamma, beta=beta,
                                       return_stats=True)
    out += [y, mean, var]
    given = np.empty_like(x)
    cbn.normalize_batch(x, axis=axes, mean=mean, var=var, out=given)
    out.append(given)
    out += list(cbn.normalize_batch_backward(dy, x, mean, var, axis=axes,
                                             gamma=gamma))
    out.append(cbn.normalize_batch(x.reshape(SHAPE[0], -1)))  # the rows kernels
    bn = cbn.BatchNorm2d(SHAPE[1], dtype=dtype)
    for r in range(ROUNDS):
        out.append(bn(x + r))
        out.append(bn.backward(dy))
        out += [bn.dgamma, bn.dbeta, bn.running_mean.copy(), bn.running_var.copy()]
    out.append(bn.eval()(x))
    return out


def _assert_same(got, expected):
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected)):
        assert g.dtype == e.dtype and g.shape == e.shape, k
        assert np.array_equal(g, e), f"array {k} differs"


@pytest.fixture(params=[1, 2], ids=["omp1", "omp2"])
def omp_threads(request):
    """Each Python thread's calls on 1 or on 2 OpenMP threads of their own."""
    before = cbn.get_num_threads()
    cbn.set_num_threads(request.param)
    yield request.param
    cbn.set_num_threads(before)


def test_threads_on_separate_data_get_single_threaded_results(omp_threads):
    expected = [_workload(i) for i in range(THREADS)]
    got = _run_threads(_workload)
    for i in range(THREADS):
        _assert_same(got[i], expected[i])


def test_eval_forward_on_a_shared_layer_is_safe(omp_threads):
    bn = cbn.BatchNorm2d(SHAPE[1])
    rng = np.random.default_rng(5)
    bn(rng.normal(3, 2, SHAPE).astype(np.float32))
    bn.eval()
    state = bn.state_dict()
    xs = [rng.normal(i, 1, SHAPE).astype(np.float32) for i in range(THREADS)]
    expected = [bn(x) for x in xs]

    def infer(i):
        return [bn(xs[i]) for _ in range(ROUNDS)]

    for i, ys in enumerate(_run_threads(infer)):
        for y in ys:
            assert np.array_equal(y, expected[i])
    for key, value in bn.state_dict().items():
        assert np.array_equal(value, state[key]), key


# ------------------------------------------- overlapping calls on one layer --

class _HeldInput:
    """An array-like whose conversion (``__array__``, called inside the
    layer's forward or backward) waits until released: while it waits, the
    call that took it is running, so another thread can deterministically
    call the layer at that moment."""

    def __init__(self, array):
        self.array = array
        self.inside = threading.Event()
        self.release = threading.Event()

    def __array__(self, dtype=None, copy=None):
        self.inside.set()
        if not self.release.wait(60):
            raise TimeoutError("the test never released the input")
        return self.array


class _InThread:
    """Run ``call(held)`` in a thread and wait until it is inside the layer."""

    def __init__(self, call, array):
        self.held = _HeldInput(array)
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(call,))
        self.thread.start()
        assert self.held.inside.wait(60), "the call never converted its input"

    def _run(self, call):
        try:
            self.result = call(self.held)
        except BaseException as e:
            self.error = e

    def finish(self):
        self.held.release.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def batch():
    return np.random.default_rng(9).normal(2, 3, (32, 4)).astype(np.float32)


def _busy_error():
    return pytest.raises(RuntimeError, match="another thread")


@pytest.mark.parametrize("second", ["forward-train", "forward-eval", "backward"])
def test_training_forward_refuses_overlapping_calls(batch, second):
    bn = cbn.BatchNorm1d(4)
    ref = cbn.BatchNorm1d(4)
    y_ref = ref(batch)
    dx_ref = ref.backward(np.ones_like(batch))
    bn(batch)  # so that backward has something to use

    first = _InThread(bn.forward, batch)
    with _busy_error():
        if second == "forward-train":
            bn(batch)
        elif second == "forward-eval":
            bn.eval()  # the running call keeps the mode it started in
            try:
                bn(batch)
            finally:
                bn.train()
        else:
            bn.backward(np.ones_like(batch))
    y = first.finish()
    # The refused call changed nothing: the running call completed as if
    # alone, and the layer is free again.
    assert np.array_equal(y, y_ref)
    assert bn.num_batches_tracked == 2
    assert np.array_equal(bn.backward(np.ones_like(batch)), dx_ref)


@pytest.mark.parametrize("second", ["forward-train", "forward-eval", "backward"])
def test_backward_refuses_overlapping_calls(batch, second):
    bn = cbn.BatchNorm1d(4)
    bn(batch)
    dy = np.random.default_rng(3).normal(size=batch.shape).astype(np.float32)
    ref = cbn.BatchNorm1d(4)
    ref(batch)
    dx_ref = ref.backward(dy)
    running = bn.running_mean.copy()

    first = _InThread(bn.backward, dy)
    with _busy_error():
        if second == "forward-train":
            bn(batch)
        elif second == "forward-eval":
            bn.eval()
            try:
                bn(batch)
            finally:
                bn.train()
        else:
            bn.backward(dy)
    assert np.array_equal(first.finish(), dx_ref)
    assert np.array_equal(bn.dgamma, ref.dgamma)
    assert np.array_equal(bn.running_mean, running)
    assert bn.num_batches_tracked == 1


def test_eval_forward_refuses_training_calls_but_not_eval_ones(batch):
    bn = cbn.BatchNorm1d(4)
    bn(batch)
    bn.eval()
    expected = bn(batch)

    first = _InThread(bn.forward, batch)
    assert np.array_equal(bn(batch), expected)  # a second eval call runs
    with _busy_error():
        bn.backward(np.ones_like(batch))
    bn.train()
    with _busy_error():
        bn(batch)
    # The running call keeps the mode it started in.
    assert np.array_equal(first.finish(), expected)
    assert bn.num_batches_tracked == 1
    bn(batch)  # free again
    assert bn.num_batches_tracked == 2


def test_a_failing_call_leaves_the_layer_free(batch):
    bn = cbn.BatchNorm1d(4)
    with pytest.raises(TypeError):
        bn(batch.astype(np.float64))
    with pytest.raises(RuntimeError, match="before forward"):
        bn.backward(batch)
    bn(batch)
    with pytest.raises(ValueError):
        bn.backward(batch[:3])
    bn.backward(np.ones_like(batch))
    assert bn.num_batches_tracked == 1


def test_separate_layers_do_not_block_each_other(batch):
    a, b = cbn.BatchNorm1d(4), cbn.BatchNorm1d(4)
    first = _InThread(a.forward, batch)
    y = b(batch)
    b.backward(np.ones_like(batch))
    assert np.array_equal(first.finish(), y)
