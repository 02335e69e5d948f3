"""fold_batchnorm: a layer with the batch norm folded into its weights
computes what the layer, then the batch norm in eval mode, computes.

Oracles: the float64 batch norm of tests/oracle.py applied to the layer's
output, and PyTorch's Conv2d + BatchNorm2d and Linear + BatchNorm1d in eval
mode (when torch imports).
"""
import numpy as np
import pytest

import cbn
from checks import FOLD_TOLERANCE, assert_within
from oracle import normalize_ref

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError


def random_bn_state(rng, C, affine=True):
    """A batch norm's eval-mode state, as a state dict with eps."""
    state = {"running_mean": rng.normal(3.0, 2.0, C),
             "running_var": rng.uniform(0.1, 4.0, C), "eps": 1e-3}
    if affine:
        state["weight"] = rng.normal(1.0, 0.5, C)
        state["bias"] = rng.normal(0.0, 1.0, C)
    return state


def bn_ref(z, state, axis):
    """The eval-mode batch norm of z, channels along ``axis``, in float64."""
    batch = tuple(i for i in range(z.ndim) if i != axis % z.ndim)
    return normalize_ref(z, state.get("weight"), state.get("bias"), axis=batch,
                         eps=state["eps"], mean=state["running_mean"],
                         var=state["running_var"])[0]


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_layers_both_ways_round(affine, with_bias):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5))
    state = random_bn_state(rng, 3, affine)
    b = rng.normal(size=3) if with_bias else None
    # x @ W with W (in, out): channels along axis 1
    W = rng.normal(size=(5, 3))
    W2, b2 = cbn.fold_batchnorm(W, b, state, axis=1)
    z = x @ W + (0.0 if b is None else b)
    terms = np.abs(x) @ np.abs(W2) + np.abs(b2)
    assert_within(x @ W2 + b2, bn_ref(z, state, 1), FOLD_TOLERANCE, scale=terms.max())
    # x @ W.T with W (out, in), as torch's Linear: channels along axis 0
    W2t, b2t = cbn.fold_batchnorm(W.T.copy(), b, state, axis=0)
    np.testing.assert_array_equal(W2t, W2.T)
    np.testing.assert_array_equal(b2t, b2)
    W2n, _ = cbn.fold_batchnorm(W, b, state, axis=-1)
    np.testing.assert_array_equal(W2n, W2)


def test_a_cbn_layer_trained_then_folded_matches_its_eval_forward():
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(4, 6)), rng.normal(size=4)
    bn = cbn.BatchNorm2d(4, eps=1e-4, momentum=0.3, dtype=np.float64)
    bn.gamma = rng.normal(1.0, 0.3, 4)
    bn.beta = rng.normal(size=4)

    def conv1x1(x, W, b):  # a 1x1 convolution of NCHW x: channels along 1
        return np.einsum("oi,nihw->nohw", W, x) + b[:, None, None]

    for _ in range(5):
        bn.forward(conv1x1(rng.normal(2.0, 3.0, (8, 6, 5, 5)), W, b))
    bn.eval()
    x = rng.normal(size=(3, 6, 5, 5))
    before = W.copy(), b.copy(), bn.running_mean.copy(), bn.running_var.copy()
    W2, b2 = cbn.fold_batchnorm(W, b, bn)
    terms = np.einsum("oi,nihw->nohw", np.abs(W2), np.abs(x)) + np.abs(b2)[:, None, None]
    assert_within(conv1x1(x, W2, b2), bn.forward(conv1x1(x, W, b)), FOLD_TOLERANCE,
                  scale=terms.max())
    # nothing given was modified
    for a, c in zip(before, (W, b, bn.running_mean, bn.running_var)):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("dtype,result", [(np.float32, np.float32), (np.float64, np.float64),
                                          (np.int32, np.float64)])
def test_the_result_has_the_weights_floating_dtype(dtype, result):
    rng = np.random.default_rng(2)
    state = random_bn_state(rng, 3)
    W = (rng.normal(size=(3, 2)) * 10).astype(dtype)
    W2, b2 = cbn.fold_batchnorm(W, None, state)
    assert W2.dtype == b2.dtype == result
    # computed in float64 and rounded once
    s = state["weight"] / np.sqrt(state["running_var"] + state["eps"])
    np.testing.assert_array_equal(W2, (W.astype(np.float64) * s[:, None]).astype(result))
    np.testing.assert_array_equal(
        b2, ((0.0 - state["running_mean"]) * s + state["bias"]).astype(result))


def test_weight_and_bias_none_or_absent_mean_one_and_zero():
    rng = np.random.default_rng(3)
    state = random_bn_state(rng, 3, affine=False)
    W = rng.normal(size=(3, 4))
    W_absent, b_absent = cbn.fold_batchnorm(W, None, state)
    W_none, b_none = cbn.fold_batchnorm(W, None, {**state, "weight": None, "bias": None})
    W_one, b_one = cbn.fold_batchnorm(W, None, {**state, "weight": np.ones(3),
                                                "bias": np.zeros(3)})
    for a in (W_absent, W_none):
        np.testing.assert_array_equal(a, W_one)
    for a in (b_absent, b_none):
        np.testing.assert_array_equal(a, b_one)


def test_nan_statistics_flow_through():
    state = {"running_mean": np.array([0.0, np.nan]), "running_var": np.ones(2), "eps": 0.0}
    W2, b2 = cbn.fold_batchnorm(np.ones((2, 3)), None, state)
    assert np.isfinite(W2).all() and np.isfinite(b2[0]) and np.isnan(b2[1])


def _bad_calls(W, b, layer, state):
    """(call, exception, message) of each refused combination."""
    return [
        (lambda: cbn.fold_batchnorm(W[:2], b, state), ValueError, "output channels"),
        (lambda: cbn.fold_batchnorm(W, b, state, axis=1), ValueError, "output channels"),
        (lambda: cbn.fold_batchnorm(W, b[:2], state), ValueError, "bias must have shape"),
        (lambda: cbn.fold_batchnorm(W, b, {**state, "running_var": np.ones(2)}),
         ValueError, "running_var must have shape"),
        (lambda: cbn.fold_batchnorm(W, b, {k: v for k, v in state.items() if k != "eps"}),
         ValueError, "no eps"),
        (lambda: cbn.fold_batchnorm(W, b, {**state, "running_mean": None}),
         ValueError, "no running statistics"),
        (lambda: cbn.fold_batchnorm(W, b, cbn.BatchNorm1d(3, track_running_stats=False)),
         ValueError, "no running statistics"),
        (lambda: cbn.fold_batchnorm(W, b, {**state, "eps": -1.0}), ValueError, "eps"),
        (lambda: cbn.fold_batchnorm(W, b, {**state, "eps": "0.1"}), TypeError, "eps"),
        (lambda: cbn.fold_batchnorm(W, b, [state]), TypeError, "bn must be"),
        (lambda: cbn.fold_batchnorm(W, b, layer, axis=2), AxisError, "axis"),
        (lambda: cbn.fold_batchnorm(W, b, layer, axis=1.0), TypeError, "axis"),
        (lambda: cbn.fold_batchnorm(np.float64(1.0), None, layer), ValueError, "0-d"),
        (lambda: cbn.fold_batchnorm(W.astype(complex), b, layer), TypeError, "real"),
        (lambda: cbn.fold_batchnorm(np.ma.masked_array(W), b, layer), TypeError, "Masked"),
    ]


def test_bad_input_is_refused_and_nothing_is_modified():
    rng = np.random.default_rng(4)
    W, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    state = random_bn_state(rng, 3)
    layer = cbn.BatchNorm1d(3, dtype=np.float64).eval()
    copies = [a.copy() for a in (W, b, layer.running_mean, layer.running_var, layer.gamma)]
    state_copies = {k: np.copy(v) for k, v in state.items()}
    for call, error, message in _bad_calls(W, b, layer, state):
        with pytest.raises(error, match=message):
            call()
    for a, c in zip(copies, (W, b, layer.running_mean, layer.running_var, layer.gamma)):
        np.testing.assert_array_equal(a, c)
    for k, v in state.items():
        np.testing.assert_array_equal(v, state_copies[k])


class TestAgainstTorch:
    torch = pytest.importorskip("torch")

    @pytest.mark.parametrize("bias", [True, False])
    def test_conv2d_then_batchnorm2d(self, bias):
        torch = self.torch
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=bias).double()
        bn = torch.nn.BatchNorm2d(8, eps=1e-3).double()
        with torch.no_grad():
            for _ in range(4):  # running statistics from training batches
                bn(conv(torch.randn(16, 3, 9, 9, dtype=torch.float64) * 2 + 1))
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.normal_()
        conv.eval(), bn.eval()
        state = {k: v.numpy() for k, v in bn.state_dict().items()}
        W2, b2 = cbn.fold_batchnorm(conv.weight.detach().numpy(),
                                    None if conv.bias is None else conv.bias.detach().numpy(),
                                    {**state, "eps": bn.eps})
        x = torch.randn(4, 3, 9, 9, dtype=torch.float64)
        with torch.no_grad():
            want = bn(conv(x)).numpy()
            got = torch.nn.functional.conv2d(x, torch.from_numpy(W2), torch.from_numpy(b2),
                                             padding=1).numpy()
            terms = torch.nn.functional.conv2d(x.abs(), torch.from_numpy(np.abs(W2)),
                                               torch.from_numpy(np.abs(b2)), padding=1)
        assert_within(got, want, FOLD_TOLERANCE, scale=float(terms.max()))

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    def test_linear_then_batchnorm1d(self, dtype):
        torch = self.torch
        torch.manual_seed(1)
        tdtype = getattr(torch, dtype)
        lin = torch.nn.Linear(6, 5).to(tdtype)
        bn = torch.nn.BatchNorm1d(5).to(tdtype)
        with torch.no_grad():
            for _ in range(4):
                bn(lin(torch.randn(32, 6, dtype=tdtype) * 3))
        lin.eval(), bn.eval()
        state = {k: v.numpy() for k, v in bn.state_dict().items()}
        W2, b2 = cbn.fold_batchnorm(lin.weight.detach().numpy(), lin.bias.detach().numpy(),
                                    {**state, "eps": bn.eps})
        assert W2.dtype == np.dtype(dtype)
        x = torch.randn(7, 6, dtype=tdtype)
        with torch.no_grad():
            want = bn(lin(x)).double().numpy()
        xn = x.double().numpy()
        got = xn @ W2.T.astype(np.float64) + b2
        terms = np.abs(xn) @ np.abs(W2.T.astype(np.float64)) + np.abs(b2)
        assert_within(got, want, FOLD_TOLERANCE, dtype=np.dtype(dtype), scale=terms.max())
