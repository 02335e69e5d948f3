"""Layers with a fused activation and residual: ``BatchNorm*(activation=
"relu")``, ``forward(x, residual=...)``, ``backward`` setting ``dresidual``.

Oracles: the float64 textbook batch norm of tests/oracle.py followed by the
residual add and the ReLU in float64 (forward) and its gradient through the
ReLU's mask (backward); finite differences of the layer's own forward (a
float64 layer); and the array functions, which the layer must equal bit
for bit (they are checked against the same oracles in test_fused.py).
"""
import pickle
import tracemalloc

import numpy as np
import pytest

import cbn
from checks import assert_close, assert_matches_finite_differences
from oracle import backward_ref, central_difference, normalize_ref

LAYOUTS = {  # layer factory, input shape, the batch axes of the input
    "nchw": (lambda **kw: cbn.BatchNorm2d(3, **kw), (4, 3, 5, 6), (0, 2, 3)),
    "nc": (lambda **kw: cbn.BatchNorm1d(5, **kw), (16, 5), 0),
    "nhwc": (lambda **kw: cbn.BatchNorm(3, feature_axis=-1, **kw), (4, 5, 6, 3),
             (0, 1, 2)),
}


def data(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 2.0, shape).astype(dtype)
    r = rng.normal(0.0, 1.0, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    return x, r, dy


def trained(make, dtype, seed=3):
    """A layer with non-trivial parameters and running statistics."""
    bn = make(dtype=dtype, activation="relu")
    rng = np.random.default_rng(seed)
    C = bn.num_features
    bn.gamma = rng.normal(1.0, 0.3, C)
    bn.beta = rng.normal(0.0, 0.5, C)
    bn.running_mean = rng.normal(1.0, 0.1, C)
    bn.running_var = rng.uniform(2.0, 6.0, C)
    return bn


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("with_residual", [True, False])
def test_layer_matches_the_float64_oracle_and_the_array_functions(layout, dtype, training,
                                                                  with_residual):
    make, shape, axis = LAYOUTS[layout]
    x, r, dy = data(shape, dtype, 5)
    r = r if with_residual else None
    bn = trained(make, dtype).train(training)
    gamma, beta = bn.gamma.copy(), bn.beta.copy()
    rm, rv = bn.running_mean.astype(np.float64), bn.running_var.astype(np.float64)
    y = bn(x, residual=r)

    # forward: relu(BN(x) + r) in float64
    stats = {} if training else {"mean": rm, "var": rv}
    pre_ref, mean, var = normalize_ref(x, gamma, beta, axis=axis, **stats)
    if r is not None:
        pre_ref = pre_ref + r.astype(np.float64)
    assert y.dtype == dtype
    assert_close(y, np.maximum(pre_ref, 0), scale=4.0)
    # ... and the array function's bits
    kw = dict(axis=axis, residual=r, relu=True)
    if not training:
        kw.update(mean=rm, var=rv)
    y_fn = cbn.normalize_batch(x, gamma, beta, **kw)
    assert y.tobytes() == y_fn.tobytes()

    # backward: the textbook gradient of dy masked where y > 0
    dx = bn.backward(dy)
    mask = y > 0
    dx_ref, dg_ref, db_ref = backward_ref(np.where(mask, dy, 0), x, mean, var, gamma,
                                          axis=axis, batch_stats=training)
    assert_close(dx, dx_ref, scale=8.0)
    assert_close(bn.dgamma, dg_ref, scale=8.0)
    assert_close(bn.dbeta, db_ref, scale=8.0)
    if r is None:
        assert bn.dresidual is None
    else:
        np.testing.assert_array_equal(bn.dresidual, np.where(mask, dy, 0))
        assert bn.dresidual.dtype == dtype
    # ... and the array function's bits
    if training:
        _, fmean, fvar = cbn.normalize_batch(x, gamma, beta, axis=axis, return_stats=True)
    else:
        fmean, fvar = rm, rv
    dx_fn, dg_fn, db_fn = cbn.normalize_batch_backward(
        dy, x, fmean, fvar, gamma, axis=axis, batch_stats=training, relu=True, y=y)
    assert dx.tobytes() == dx_fn.tobytes()
    assert bn.dgamma.tobytes() == dg_fn.tobytes()
    assert bn.dbeta.tobytes() == db_fn.tobytes()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layer_gradients_match_finite_differences(layout):
    # f = sum(w * layer(x, r)) on a float64 layer in training mode, with every
    # pre-activation at least 0.05 from the ReLU's kink; the running
    # statistics change with each call but play no part in training mode.
    make, shape, axis = LAYOUTS[layout]
    rng = np.random.default_rng(7)
    bn = trained(make, np.float64)
    x = rng.normal(1.0, 2.0, shape)
    r = rng.normal(size=shape)
    z = cbn.normalize_batch(x, bn.gamma, bn.beta, axis=axis) + r
    r += np.where(np.abs(z) < 0.05, 0.1, 0.0)
    w = rng.normal(size=shape)

    def f():
        return float(np.sum(w * bn(x, residual=r)))

    numerical = {"x": central_difference(f, x), "r": central_difference(f, r),
                 "gamma": central_difference(f, bn.gamma),
                 "beta": central_difference(f, bn.beta)}
    bn(x, residual=r)
    dx = bn.backward(w)
    assert_matches_finite_differences(dx, numerical["x"], "dx")
    assert_matches_finite_differences(bn.dresidual, numerical["r"], "dresidual")
    assert_matches_finite_differences(bn.dgamma, numerical["gamma"], "dgamma")
    assert_matches_finite_differences(bn.dbeta, numerical["beta"], "dbeta")


def test_no_gradient_where_the_output_was_exactly_zero_or_nan():
    # eval mode: each element normalizes on its own, so NaN stays where it is
    bn = cbn.BatchNorm1d(2, dtype=np.float64, activation="relu").eval()
    x = np.array([[1.0, 2.0], [np.nan, -3.0], [0.5, 4.0], [-1.0, np.nan]])
    plain = cbn.BatchNorm1d(2, dtype=np.float64).eval()(x)
    r = np.zeros_like(x)
    r[0, 0] = -plain[0, 0]        # exactly 0 after the add: no gradient
    y = bn(x, residual=r)
    assert y[0, 0] == 0 and np.isnan(y[1, 0]) and np.isnan(y[3, 1])
    dy = np.full_like(x, 2.0)
    dx = bn.backward(dy)
    passed = np.array([[False, True], [False, False], [True, True], [False, False]])
    np.testing.assert_array_equal(bn.dresidual, np.where(passed, 2.0, 0.0))
    np.testing.assert_array_equal(dx, np.where(passed, 2.0 / np.sqrt(1 + 1e-5), 0.0))
    np.testing.assert_array_equal(bn.dbeta, [2.0, 4.0])


def test_residual_without_activation_passes_dy_on():
    bn = cbn.BatchNorm2d(3)
    x, r, dy = data((4, 3, 5, 6), np.float32, 9)
    y = bn(x, residual=r)
    y_plain = cbn.BatchNorm2d(3)(x)
    assert y.tobytes() == (y_plain + r).tobytes()
    dx = bn.backward(dy)
    np.testing.assert_array_equal(bn.dresidual, dy)
    plain = cbn.BatchNorm2d(3)
    plain(x)
    assert dx.tobytes() == plain.backward(dy).tobytes()
    # a forward without a residual clears it at the next backward
    bn(x)
    bn.backward(dy)
    assert bn.dresidual is None


def test_residual_in_any_layout_and_dtype_that_casts_safely():
    bn = cbn.BatchNorm2d(3, dtype=np.float64, activation="relu")
    x, r, _ = data((4, 3, 5, 6), np.float64, 11)
    want = bn(x, residual=r)
    for other in (np.asfortranarray(r), r.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2),
                  r.astype(np.float32)):
        got = bn(x, residual=other)
        if other.dtype == np.float64:
            assert got.tobytes() == want.tobytes()
        else:
            assert got.tobytes() == bn(x, residual=other.astype(np.float64)).tobytes()
    r16 = np.ones((4, 3, 5, 6), np.int16)  # int16 casts safely to float32
    cbn.BatchNorm2d(3, activation="relu")(x.astype(np.float32), residual=r16)


def test_the_saved_state_is_a_bit_per_element():
    # What forward keeps for backward beyond the input itself (which it
    # references): the per-feature values and a bit mask, not another array
    # of floats; and not the residual.
    bn = cbn.BatchNorm2d(8, activation="relu")
    x, r, dy = data((16, 8, 32, 32), np.float32, 13)
    bn(x, residual=r)            # warm up (first-call allocations)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        y = bn(x, residual=r)
        del y
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept <= x.size // 8 + 4096, kept
    assert kept >= x.size // 8   # the mask itself is there ...
    dx = bn.backward(dy)         # ... and gives the gradient
    assert np.array_equal(bn.dresidual != 0, (dy != 0) & (bn.dresidual == dy))


def test_activation_is_carried_by_repr_state_dict_and_pickle():
    bn = cbn.BatchNorm2d(3, activation="relu", dtype=np.float64)
    assert repr(bn).endswith("activation='relu')")
    assert "activation" not in repr(cbn.BatchNorm2d(3))
    state = bn.state_dict()
    assert state["activation"] == np.array("relu")
    assert "activation" not in cbn.BatchNorm2d(3).state_dict()
    bn.gamma = [1.0, 2.0, 3.0]
    copy = pickle.loads(pickle.dumps(bn))
    assert type(copy) is cbn.BatchNorm2d and copy.activation == "relu"
    np.testing.assert_array_equal(copy.gamma, bn.gamma)
    # loading: the key may be left out (a torch module's state), but a
    # different activation is refused and nothing is changed
    other = cbn.BatchNorm2d(3, dtype=np.float64)
    before = other.state_dict()
    with pytest.raises(ValueError, match="activation 'relu'"):
        other.load_state_dict(state)
    for k, v in before.items():
        np.testing.assert_array_equal(other.state_dict()[k], v)
    with pytest.raises(ValueError, match="activation"):
        bn.load_state_dict({**state, "activation": np.array("gelu")})
    del state["activation"]
    bn.load_state_dict(state)
    generic = cbn.BatchNorm(4, feature_axis=-1, activation="relu")
    assert pickle.loads(pickle.dumps(generic)).activation == "relu"
    sync = cbn.SyncBatchNorm.from_batchnorm(bn)
    assert sync.activation == "relu"


def test_bad_activation_and_residual_are_refused_and_nothing_changes():
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        cbn.BatchNorm2d(3, activation="gelu")
    with pytest.raises(TypeError, match="activation must be None or a str"):
        cbn.BatchNorm2d(3, activation=True)
    bn = cbn.BatchNorm2d(3, activation="relu")
    x, r, dy = data((4, 3, 5, 6), np.float32, 15)
    y0 = bn(x, residual=r)
    state = bn.state_dict()
    bad = [(np.zeros((4, 3, 5, 5), np.float32), ValueError, "residual has shape"),
           (r.astype(np.float64), TypeError, "does not cast safely"),
           (np.zeros((4, 3, 5, 6), complex), TypeError, "cast")]
    for res, error, message in bad:
        with pytest.raises(error, match=message):
            bn(x * 3, residual=res)
        for k, v in state.items():
            np.testing.assert_array_equal(bn.state_dict()[k], v)
    # backward still belongs to the last successful forward call
    dx = bn.backward(dy)
    ref = cbn.BatchNorm2d(3, activation="relu")
    assert ref(x, residual=r).tobytes() == y0.tobytes()
    assert dx.tobytes() == ref.backward(dy).tobytes()
    np.testing.assert_array_equal(bn.dresidual, ref.dresidual)


def test_matches_torch_batchnorm_add_relu():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(21)
    x = rng.normal(0.5, 2.0, (8, 4, 6, 6))
    r = rng.normal(size=x.shape)
    dy = rng.normal(size=x.shape)
    tbn = torch.nn.BatchNorm2d(4, dtype=torch.float64)
    with torch.no_grad():
        tbn.weight.copy_(torch.from_numpy(rng.normal(1.0, 0.3, 4)))
        tbn.bias.copy_(torch.from_numpy(rng.normal(0.0, 0.5, 4)))
    bn = cbn.BatchNorm2d(4, dtype=np.float64, activation="relu")
    bn.load_state_dict({k: v.numpy() for k, v in tbn.state_dict().items()})
    tx = torch.from_numpy(x.copy()).requires_grad_()
    tr = torch.from_numpy(r.copy()).requires_grad_()
    ty = torch.relu(tbn(tx) + tr)
    ty.backward(torch.from_numpy(dy))
    y = bn(x, residual=r)
    dx = bn.backward(dy)
    assert_close(y, ty.detach().numpy(), scale=4.0)
    assert_close(dx, tx.grad.numpy(), scale=8.0)
    assert_close(bn.dresidual, tr.grad.numpy())
    assert_close(bn.dgamma, tbn.weight.grad.numpy(), scale=8.0)
    assert_close(bn.dbeta, tbn.bias.grad.numpy(), scale=8.0)
    assert_close(bn.running_var, tbn.running_var.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mask_and_gradients_in_a_block_out_of_memory_order(dtype):
    # features on axis 0 and a Fortran-ordered input: the layer's block is a
    # transposed copy, and the saved bits follow the block's order, not x's
    rng = np.random.default_rng(23)
    x = np.asfortranarray(rng.normal(0.5, 2.0, (5, 6, 7)).astype(dtype))
    r = rng.normal(size=x.shape).astype(dtype)
    dy = np.asfortranarray(rng.normal(size=x.shape).astype(dtype))
    bn = cbn.BatchNorm(5, feature_axis=0, dtype=dtype, activation="relu")
    y = bn(x, residual=r)
    dx = bn.backward(dy)
    y_fn, mean, var = cbn.normalize_batch(x, axis=(1, 2), residual=r, relu=True,
                                          return_stats=True)
    assert y.tobytes() == y_fn.tobytes()
    want = cbn.normalize_batch_backward(dy, x, mean, var, axis=(1, 2), relu=True, y=y_fn)
    assert dx.tobytes() == want[0].tobytes()
    assert bn.dgamma.tobytes() == want[1].tobytes()
    np.testing.assert_array_equal(bn.dresidual, np.where(y_fn > 0, dy, 0))
    # and without a residual: the kernels gate dy with the bits themselves
    bn2 = cbn.BatchNorm(5, feature_axis=0, dtype=dtype, activation="relu")
    y2 = bn2(x)
    dx2 = bn2.backward(dy)
    want2 = cbn.normalize_batch_backward(np.where(y2 > 0, dy, 0), x, *cbn.normalize_batch(
        x, axis=(1, 2), return_stats=True)[1:], axis=(1, 2))
    assert dx2.tobytes() == want2[0].tobytes()
    assert bn2.dbeta.tobytes() == want2[2].tobytes()
