"""Parity of cbn.BatchNorm1d/2d/3d with torch.nn.BatchNorm1d/2d/3d.

Each test drives a cbn layer and the torch module of the same class with the
same data and parameters and compares everything observable: outputs,
running statistics, batch counts, gradients (against autograd), state dicts
in both directions, repr and error messages. Skipped when torch is missing.
"""
import re

import numpy as np
import pytest

import cbn

torch = pytest.importorskip("torch")

#: (rtol, atol) per dtype; float32 values of order one (torch's float32
#: path is itself a few ulps off the exact result).
TOL = {np.float32: (1e-5, 1e-5), np.float64: (1e-10, 1e-10)}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}

#: (dim, input shape): every input rank each class accepts, C = 3.
SHAPES = [
    (1, (16, 3)),
    (1, (6, 3, 5)),
    (2, (4, 3, 5, 2)),
    (3, (2, 3, 3, 2, 4)),
]
SHAPE_IDS = ["1d-2D", "1d-3D", "2d", "3d"]

#: Layer settings compared with torch.
SETTINGS = [
    {},
    {"momentum": None},
    {"momentum": 0.3, "eps": 1e-3},
    {"affine": False},
    {"track_running_stats": False},
    {"affine": False, "track_running_stats": False, "momentum": None},
]
SETTING_IDS = ["default", "cumulative", "momentum0.3", "no-affine", "untracked",
               "bare"]


def classes(dim):
    return ({1: cbn.BatchNorm1d, 2: cbn.BatchNorm2d, 3: cbn.BatchNorm3d}[dim],
            {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d,
             3: torch.nn.BatchNorm3d}[dim])


def make_pair(dim, c, dtype, rng, **kwargs):
    """A cbn layer and a torch module with the same settings and parameters."""
    cbn_cls, torch_cls = classes(dim)
    ours = cbn_cls(c, dtype=dtype, **kwargs)
    theirs = torch_cls(c, dtype=TORCH_DTYPE[dtype], **kwargs)
    if ours.affine:
        gamma = (1 + 0.5 * rng.standard_normal(c)).astype(dtype)
        beta = rng.standard_normal(c).astype(dtype)
        ours.gamma[...] = gamma
        ours.beta[...] = beta
        with torch.no_grad():
            theirs.weight.copy_(torch.from_numpy(gamma))
            theirs.bias.copy_(torch.from_numpy(beta))
    return ours, theirs


def data(rng, shape, dtype, loc=0.5, scale=1.5):
    return (loc + scale * rng.standard_normal(shape)).astype(dtype)


def t(a):
    return torch.from_numpy(np.array(a, copy=True))


def assert_close(ours, theirs, dtype, scale=1.0):
    rtol, atol = TOL[dtype]
    if isinstance(theirs, torch.Tensor):
        theirs = theirs.detach().numpy()
    np.testing.assert_allclose(np.asarray(ours, dtype=np.float64),
                               np.asarray(theirs, dtype=np.float64),
                               rtol=rtol, atol=atol * scale)


def assert_same_state(ours, theirs, dtype):
    if theirs.track_running_stats:
        assert ours.num_batches_tracked == int(theirs.num_batches_tracked)
        assert_close(ours.running_mean, theirs.running_mean, dtype)
        assert_close(ours.running_var, theirs.running_var, dtype)
    else:
        assert theirs.running_mean is None
        assert ours.running_mean is None and ours.running_var is None
    if theirs.affine:
        assert_close(ours.gamma, theirs.weight, dtype)
        assert_close(ours.beta, theirs.bias, dtype)
    else:
        assert ours.gamma is None and ours.beta is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", SETTINGS, ids=SETTING_IDS)
@pytest.mark.parametrize("dim, shape", SHAPES, ids=SHAPE_IDS)
def test_training_steps_then_eval_match_torch(dim, shape, kwargs, dtype, rng):
    ours, theirs = make_pair(dim, shape[1], dtype, rng, **kwargs)
    for step in range(5):
        x = data(rng, shape, dtype, loc=rng.normal(0, 3), scale=rng.uniform(0.3, 3))
        assert_close(ours(x), theirs(t(x)), dtype)
        assert_same_state(ours, theirs, dtype)
    ours.eval()
    theirs.eval()
    for _ in range(2):
        x = data(rng, shape, dtype, loc=1.0, scale=2.0)
        assert_close(ours(x), theirs(t(x)), dtype)
        assert_same_state(ours, theirs, dtype)
    # Back to training: the running averages carry on the same way.
    ours.train()
    theirs.train()
    x = data(rng, shape, dtype, loc=-2.0)
    assert_close(ours(x), theirs(t(x)), dtype)
    assert_same_state(ours, theirs, dtype)


def autograd(module, x, dy):
    """dx, dweight, dbias of ``module`` at ``x`` for upstream gradient ``dy``."""
    xt = t(x).requires_grad_(True)
    module.zero_grad()
    module(xt).backward(t(dy))
    grads = [xt.grad]
    if module.affine:
        grads += [module.weight.grad, module.bias.grad]
    return grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"track_running_stats": False}],
                         ids=["default", "no-affine", "untracked"])
@pytest.mark.parametrize("dim, shape", SHAPES, ids=SHAPE_IDS)
def test_backward_matches_torch_autograd(dim, shape, kwargs, training, dtype, rng):
    ours, theirs = make_pair(dim, shape[1], dtype, rng, **kwargs)
    for _ in range(3):   # non-trivial running statistics for eval mode
        x = data(rng, shape, dtype, loc=rng.normal(), scale=rng.uniform(0.5, 2))
        ours(x)
        theirs(t(x))
    ours.train(training)
    theirs.train(training)
    x = data(rng, shape, dtype, loc=-1.0, scale=2.0)
    dy = data(rng, shape, dtype)
    ours(x)
    dx = ours.backward(dy)
    expected = autograd(theirs, x, dy)
    m = x.size // shape[1]
    assert dx.dtype == dtype
    assert_close(dx, expected[0], dtype)
    if ours.affine:
        assert_close(ours.dgamma, expected[1], dtype, scale=m)
        assert_close(ours.dbeta, expected[2], dtype, scale=m)
    assert_same_state(ours, theirs, dtype)


def trained_torch_module(dim, c, dtype, rng, shape, **kwargs):
    """A torch module with random parameters after a few training steps."""
    _, torch_cls = classes(dim)
    module = torch_cls(c, dtype=TORCH_DTYPE[dtype], **kwargs)
    with torch.no_grad():
        if module.affine:
            module.weight.copy_(t(1 + 0.5 * rng.standard_normal(c)))
            module.bias.copy_(t(rng.standard_normal(c)))
        for _ in range(4):
            module(t(data(rng, shape, dtype, loc=rng.normal(0, 5),
                          scale=rng.uniform(0.5, 3))))
    return module


@pytest.mark.parametrize("as_tensors", [False, True], ids=["numpy", "tensors"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False},
                                    {"track_running_stats": False}],
                         ids=["default", "cumulative", "no-affine", "untracked"])
@pytest.mark.parametrize("dim, shape", SHAPES[1:], ids=SHAPE_IDS[1:])
def test_torch_state_dict_loads_into_cbn(dim, shape, kwargs, dtype, as_tensors, rng):
    theirs = trained_torch_module(dim, shape[1], dtype, rng, shape, **kwargs)
    sd = theirs.state_dict()
    if not as_tensors:
        sd = {k: v.numpy() for k, v in sd.items()}
    ours = classes(dim)[0](shape[1], dtype=dtype, **kwargs)
    ours.load_state_dict(sd)
    assert_same_state(ours, theirs, dtype)
    for training in [False, True]:
        ours.train(training)
        theirs.train(training)
        x = data(rng, shape, dtype, loc=0.7)
        with torch.no_grad():
            assert_close(ours(x), theirs(t(x)), dtype)
        assert_same_state(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"track_running_stats": False}],
                         ids=["default", "no-affine", "untracked"])
def test_cbn_state_dict_loads_into_torch(kwargs, dtype, rng):
    shape = (4, 3, 5, 2)
    ours, _ = make_pair(2, 3, dtype, rng, **kwargs)
    for _ in range(3):
        ours(data(rng, shape, dtype, loc=rng.normal(0, 5)))
    theirs = torch.nn.BatchNorm2d(3, dtype=TORCH_DTYPE[dtype], **kwargs)
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v))
                            for k, v in ours.state_dict().items()})
    assert_same_state(ours, theirs, dtype)
    ours.eval()
    theirs.eval()
    x = data(rng, shape, dtype)
    with torch.no_grad():
        assert_close(ours(x), theirs(t(x)), dtype)


@pytest.mark.parametrize("kwargs", [
    {}, {"eps": 1e-3, "momentum": None}, {"affine": False},
    {"track_running_stats": False, "momentum": 0.5},
], ids=["default", "eps-cumulative", "no-affine", "untracked"])
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_repr_matches_torch(dim, kwargs):
    ours, theirs = (cls(64, **kwargs) for cls in classes(dim))
    # torch >= 2.x may add its own ``bias=`` field (a torch-only argument);
    # cbn's repr is the classic one, so compare without it.
    expected = re.sub(r", bias=(True|False)", "", repr(theirs))
    assert repr(ours) == expected


@pytest.mark.parametrize("dim, bad_shape", [(1, (6,)), (1, (2, 3, 2, 2)), (2, (6, 3)),
                                            (2, (2, 3, 2)), (3, (2, 3, 2, 2))])
def test_ndim_error_message_matches_torch(dim, bad_shape):
    ours, theirs = (cls(3) for cls in classes(dim))
    with pytest.raises(ValueError) as torch_error:
        theirs(torch.zeros(bad_shape))
    with pytest.raises(ValueError) as cbn_error:
        ours(np.zeros(bad_shape, np.float32))
    assert str(cbn_error.value) == str(torch_error.value)


@pytest.mark.parametrize("dim, shape", [(1, (1, 3)), (2, (1, 3, 1, 1))])
def test_single_value_error_starts_like_torch(dim, shape):
    ours, theirs = (cls(3) for cls in classes(dim))
    with pytest.raises(ValueError) as torch_error:
        theirs(torch.zeros(shape))
    with pytest.raises(ValueError) as cbn_error:
        ours(np.zeros(shape, np.float32))
    prefix = "Expected more than 1 value per channel when training"
    assert str(torch_error.value).startswith(prefix)
    assert str(cbn_error.value).startswith(prefix)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_training_run_matches_torch(dtype, rng):
    # Many small steps: rounding in the running averages must not drift apart.
    ours, theirs = make_pair(1, 8, dtype, rng, momentum=None)
    for _ in range(200):
        x = data(rng, (4, 8), dtype, loc=rng.normal(0, 2))
        ours(x)
        theirs(t(x))
    assert_same_state(ours, theirs, dtype)
