"""cbn.torch: cbn's batch norm as PyTorch custom operators and modules.

The oracle is PyTorch itself: ``torch.autograd.gradcheck`` (central finite
differences in float64) for the gradients of the operators
``torch.ops.cbn.batch_norm_train`` / ``batch_norm_eval``, autograd through
``torch.nn.functional.batch_norm`` for ``batch_norm_backward``, and
``torch.nn.BatchNorm1d/2d/3d`` driven side by side with
``cbn.torch.BatchNorm1d/2d/3d`` for everything a module exposes: outputs,
gradients, running statistics, batch counts, state dicts, errors.
``torch.compile`` is checked against eager execution of the same model.

Skipped when torch (or cbn.torch) is missing.
"""
import copy
import os
import subprocess
import sys

import pytest

import cbn

torch = pytest.importorskip("torch")
cbn_torch = pytest.importorskip("cbn.torch")

from torch import nn  # noqa: E402  (after the importorskip above)
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

F64, F32 = torch.float64, torch.float32

#: (rtol, atol) of module outputs and gradients against torch's module.
#: torch's float32 CPU kernels accumulate in float32 and are themselves a few
#: ulps off, hence float32's looser bound.
TOL = {F64: (1e-10, 1e-12), F32: (1e-4, 1e-5)}

CBN_CLASSES = {1: cbn_torch.BatchNorm1d, 2: cbn_torch.BatchNorm2d, 3: cbn_torch.BatchNorm3d}
TORCH_CLASSES = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}

#: (class dim, input shape, memory format): every input rank and layout the
#: spec lists, C = 3.
LAYOUTS = [
    (1, (8, 3), None),
    (1, (4, 3, 5), None),
    (2, (4, 3, 5, 4), None),
    (2, (4, 3, 5, 4), torch.channels_last),
    (3, (2, 3, 3, 4, 2), None),
    (3, (2, 3, 3, 4, 2), torch.channels_last_3d),
]
LAYOUT_IDS = ["1d-2D", "1d-3D", "2d", "2d-channels_last", "3d", "3d-channels_last_3d"]


def ops():
    # Looked up at call time: torch.ops.cbn exists once cbn.torch registered it.
    return torch.ops.cbn


def generator(seed):
    return torch.Generator().manual_seed(seed)


def make_input(shape, dtype, fmt, gen):
    """Data with per-channel offsets (so running means move), in layout ``fmt``."""
    c = shape[1]
    loc = 2.0 * torch.randn(c, generator=gen, dtype=F64)
    x = loc.view([1, c] + [1] * (len(shape) - 2)) + 1.5 * torch.randn(shape, generator=gen,
                                                                       dtype=F64)
    x = x.to(dtype)
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
        assert x.is_contiguous(memory_format=fmt) and not x.is_contiguous()
    return x


def assert_close(actual, expected, dtype, what):
    if expected is None:
        assert actual is None, what
        return
    assert actual is not None, what
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol,
                               msg=lambda m: f"{what}: {m}")


class OpRecorder(TorchDispatchMode):
    """Records the name of every operator dispatched below autograd, to tell
    which implementation (cbn's operators or torch's) a module ran."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(f"{func.namespace}::{func._opname}")
        return func(*args, **(kwargs or {}))

    def cbn_ops(self):
        return [n for n in self.names if n.startswith("cbn::")]


# --------------------------------------------------------------------------
# The operators: gradients against finite differences (gradcheck, float64)
# --------------------------------------------------------------------------

GRADCHECK_CASES = [
    ((4, 3), None),
    ((3, 2, 4), None),
    ((2, 3, 3, 3), None),
    ((2, 3, 3, 3), torch.channels_last),
    ((2, 2, 2, 3, 2), None),
    ((2, 2, 2, 3, 2), torch.channels_last_3d),
]
GRADCHECK_IDS = ["2D", "3D", "4D", "4D-channels_last", "5D", "5D-channels_last_3d"]


def gradcheck_inputs(shape, fmt, seed=0):
    gen = generator(seed)
    x = make_input(shape, F64, fmt, gen).requires_grad_()
    c = shape[1]
    w = (1 + 0.5 * torch.randn(c, generator=gen, dtype=F64)).requires_grad_()
    b = torch.randn(c, generator=gen, dtype=F64).requires_grad_()
    return x, w, b


@pytest.mark.parametrize("shape, fmt", GRADCHECK_CASES, ids=GRADCHECK_IDS)
def test_train_op_gradcheck(shape, fmt):
    x, w, b = gradcheck_inputs(shape, fmt)
    # gradcheck perturbs x in place; the layout it keeps is the one under test.
    assert torch.autograd.gradcheck(
        lambda x, w, b: ops().batch_norm_train(x, w, b, 1e-5)[0], (x, w, b))


def test_train_op_gradcheck_without_affine():
    # weight and bias are optional: the None path has its own backward branch.
    x, _, _ = gradcheck_inputs((3, 2, 4), None)
    assert torch.autograd.gradcheck(
        lambda x: ops().batch_norm_train(x, None, None, 1e-5)[0], (x,))


@pytest.mark.parametrize("shape, fmt", [GRADCHECK_CASES[i] for i in (0, 2, 3, 5)],
                         ids=[GRADCHECK_IDS[i] for i in (0, 2, 3, 5)])
def test_eval_op_gradcheck(shape, fmt):
    x, w, b = gradcheck_inputs(shape, fmt)
    gen = generator(1)
    c = shape[1]
    mean = torch.randn(c, generator=gen, dtype=F64)
    var = 0.5 + torch.rand(c, generator=gen, dtype=F64)
    assert torch.autograd.gradcheck(
        lambda x, w, b: ops().batch_norm_eval(x, mean, var, w, b, 1e-5), (x, w, b))


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape, fmt", [GRADCHECK_CASES[i] for i in (0, 3, 5)],
                         ids=[GRADCHECK_IDS[i] for i in (0, 3, 5)])
def test_train_op_forward_matches_torch(shape, fmt, dtype):
    # mean and var are float64 whatever x's dtype: the batch mean and the
    # biased variance over every dim but 1.
    x, w, b = (t.detach().to(dtype) for t in gradcheck_inputs(shape, fmt, seed=3))
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
    y, mean, var = ops().batch_norm_train(x, w, b, 1e-5)
    dims = [d for d in range(x.dim()) if d != 1]
    assert y.dtype == dtype and y.shape == x.shape
    assert mean.dtype == F64 and var.dtype == F64
    assert mean.shape == (shape[1],) and var.shape == (shape[1],)
    xd = x.double()
    torch.testing.assert_close(mean, xd.mean(dims), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, xd.var(dims, unbiased=False), rtol=1e-12, atol=1e-12)
    ref = nn.functional.batch_norm(x, None, None, w, b, training=True, eps=1e-5)
    assert_close(y, ref, dtype, "y")


@pytest.mark.parametrize("weighted", [True, False], ids=["weight", "no-weight"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backward_op_matches_torch_autograd(training, weighted):
    x, w, b = gradcheck_inputs((2, 3, 3, 3), torch.channels_last, seed=4)
    x = x.detach().requires_grad_()
    dy = torch.randn(x.shape, generator=generator(5), dtype=F64)
    dims = [0, 2, 3]
    if training:
        mean, var = x.detach().mean(dims), x.detach().var(dims, unbiased=False)
    else:
        mean, var = torch.randn(3, dtype=F64), 0.5 + torch.rand(3, dtype=F64)
    weight = w.detach().requires_grad_() if weighted else None
    ref = nn.functional.batch_norm(x, None if training else mean, None if training else var,
                                   weight, None, training=training, eps=1e-3)
    ref.backward(dy)
    dx, dweight, dbias = ops().batch_norm_backward(dy, x.detach(), mean, var,
                                                   w.detach() if weighted else None,
                                                   1e-3, training)
    assert_close(dx, x.grad, F64, "dx")
    assert_close(dbias.double(), dy.sum(dims), F64, "dbias")
    if weighted:
        assert_close(dweight.double(), weight.grad, F64, "dweight")


OPCHECK_LAYOUTS = [((2, 3, 4), None), ((2, 3, 4, 3), torch.channels_last),
                   ((2, 3, 2, 3, 2), torch.channels_last_3d)]


@pytest.mark.parametrize("shape, fmt", OPCHECK_LAYOUTS, ids=["3D", "4D-channels_last",
                                                             "5D-channels_last_3d"])
def test_opcheck(shape, fmt):
    # torch.library.opcheck: the schema, the autograd registration, and the
    # fake implementations against the real ones (shapes, dtypes and
    # strides: torch.compile plans the next kernels with the fake strides).
    x, w, b = (t.detach() for t in gradcheck_inputs(shape, fmt, seed=6))
    dy = make_input(shape, F64, fmt, generator(7))
    _, mean, var = ops().batch_norm_train(x, w, b, 1e-5)
    cases = [
        (ops().batch_norm_train.default, (x, w, b, 1e-5)),
        (ops().batch_norm_train.default, (x, None, None, 1e-5)),
        (ops().batch_norm_eval.default, (x, mean, var, w, b, 1e-5)),
        (ops().batch_norm_backward.default, (dy, x, mean, var, w, 1e-5, True)),
        (ops().batch_norm_backward.default, (dy, x, mean, var, None, 1e-5, False)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("shape, fmt", OPCHECK_LAYOUTS[1:], ids=["4D-channels_last",
                                                                 "5D-channels_last_3d"])
def test_outputs_keep_memory_format(shape, fmt):
    # torch's batch norm returns y (and dx) in the input's layout; a drop-in
    # must too, or the channels_last convolutions after it pay a transpose.
    x, w, b = (t.detach() for t in gradcheck_inputs(shape, fmt, seed=8))
    y, mean, var = ops().batch_norm_train(x, w, b, 1e-5)
    assert y.is_contiguous(memory_format=fmt)
    assert ops().batch_norm_eval(x, mean, var, w, b, 1e-5).is_contiguous(memory_format=fmt)
    dx = ops().batch_norm_backward(x, x, mean, var, w, 1e-5, True)[0]
    assert dx.is_contiguous(memory_format=fmt)


# --------------------------------------------------------------------------
# The modules against torch.nn.BatchNorm*d
# --------------------------------------------------------------------------

def test_modules_are_torch_subclasses():
    for dim in (1, 2, 3):
        assert issubclass(CBN_CLASSES[dim], TORCH_CLASSES[dim])


def make_pair(dim, c, dtype, seed, **kwargs):
    """torch's module and cbn's, from the same state (random weight and bias)."""
    theirs = TORCH_CLASSES[dim](c, dtype=dtype, **kwargs)
    if theirs.affine:
        gen = generator(seed)
        with torch.no_grad():
            theirs.weight.copy_(1 + 0.5 * torch.randn(c, generator=gen, dtype=F64))
            theirs.bias.copy_(torch.randn(c, generator=gen, dtype=F64))
    ours = CBN_CLASSES[dim](c, dtype=dtype, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize("track", [True, False], ids=["tracked", "untracked"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("dim, shape, fmt", LAYOUTS, ids=LAYOUT_IDS)
def test_module_matches_torch(dim, shape, fmt, affine, track, momentum, dtype):
    ours, theirs = make_pair(dim, shape[1], dtype, seed=10, affine=affine,
                             track_running_stats=track, momentum=momentum)
    gen = generator(11)
    # Three training steps (running statistics move, the cumulative average
    # counts batches), then one in eval mode (running statistics are used
    # when tracked, batch statistics when not).
    for step, training in enumerate([True, True, True, False]):
        ours.train(training)
        theirs.train(training)
        ours.zero_grad()
        theirs.zero_grad()
        x = make_input(shape, dtype, fmt, gen)
        g = torch.randn(shape, generator=gen, dtype=F64).to(dtype)
        x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
        where = f"step {step} ({'train' if training else 'eval'})"
        assert y_ours.dtype == y_theirs.dtype and y_ours.shape == y_theirs.shape
        assert_close(y_ours, y_theirs, dtype, f"y, {where}")
        (y_ours * g).sum().backward()
        (y_theirs * g).sum().backward()
        assert_close(x_ours.grad, x_theirs.grad, dtype, f"dx, {where}")
        if affine:
            assert_close(ours.weight.grad, theirs.weight.grad, dtype, f"dweight, {where}")
            assert_close(ours.bias.grad, theirs.bias.grad, dtype, f"dbias, {where}")
        assert_close(ours.running_mean, theirs.running_mean, dtype, f"running_mean, {where}")
        assert_close(ours.running_var, theirs.running_var, dtype, f"running_var, {where}")
        if track:
            assert torch.equal(ours.num_batches_tracked, theirs.num_batches_tracked), where
        else:
            assert ours.num_batches_tracked is None and theirs.num_batches_tracked is None


@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_module_gradient_of_broadcast_dy(loss):
    # y.sum() and y.mean() hand backward a dy expanded from a scalar (every
    # stride 0): the operators must read it as the tensor it stands for.
    ours, theirs = make_pair(2, 3, F64, seed=22)
    x = make_input((3, 3, 2, 4), F64, torch.channels_last, generator(23))
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    getattr(ours(x_ours), loss)().backward()
    getattr(theirs(x_theirs), loss)().backward()
    assert_close(x_ours.grad, x_theirs.grad, F64, "dx")
    assert_close(ours.weight.grad, theirs.weight.grad, F64, "dweight")
    assert_close(ours.bias.grad, theirs.bias.grad, F64, "dbias")


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
def test_empty_batch_matches_torch(momentum):
    # torch accepts a batch of 0 in training: the output is empty, the batch
    # still counts, and the running statistics must end up where torch's do.
    ours, theirs = make_pair(2, 3, F32, seed=24, momentum=momentum)
    x = torch.randn(0, 3, 2, 2)
    y_ours, y_theirs = ours(x), theirs(x)
    assert y_ours.shape == y_theirs.shape == x.shape
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name),
                                   equal_nan=True, msg=lambda m: f"{name}: {m}")


def test_cpu_module_runs_cbn_operators():
    # On CPU the module must run cbn's operators, not fall back to torch's
    # kernel (parity alone would not tell the two apart).
    m = cbn_torch.BatchNorm2d(3)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    with OpRecorder() as rec:
        m(x).sum().backward()
    assert "cbn::batch_norm_train" in rec.cbn_ops()
    assert not any("batch_norm" in n for n in rec.names if n.startswith("aten::"))
    m.eval()
    with OpRecorder() as rec:
        m(x).sum().backward()
    assert "cbn::batch_norm_eval" in rec.cbn_ops()


SINGLE_VALUE_SHAPES = [(1, (1, 3)), (1, (1, 3, 1)), (2, (1, 3, 1, 1)), (3, (1, 3, 1, 1, 1))]
SINGLE_VALUE_IDS = ["1d-2D", "1d-3D", "2d", "3d"]
SINGLE_VALUE_MESSAGE = "Expected more than 1 value per channel when training"


@pytest.mark.parametrize("dim, shape", SINGLE_VALUE_SHAPES, ids=SINGLE_VALUE_IDS)
def test_one_value_per_channel_in_training_raises_like_torch(dim, shape):
    ours, theirs = make_pair(dim, 3, F32, seed=12)
    x = torch.randn(shape)
    with pytest.raises(ValueError) as theirs_error:
        theirs(x)
    with pytest.raises(ValueError) as ours_error:
        ours(x)
    assert str(theirs_error.value).startswith(SINGLE_VALUE_MESSAGE)
    assert str(ours_error.value).startswith(SINGLE_VALUE_MESSAGE)
    # In eval mode the running statistics are used: one value is fine.
    ours.eval()
    theirs.eval()
    assert_close(ours(x), theirs(x), F32, "eval-mode y of a single value")


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("affine, track", [(True, True), (False, True), (True, False)],
                         ids=["affine-tracked", "tracked", "untracked"])
def test_state_dict_round_trip(dim, affine, track):
    # torch -> cbn -> torch, strict both ways, after training steps so that
    # the running statistics and the batch count are not their initial values.
    shape = {1: (6, 3), 2: (3, 3, 2, 2), 3: (2, 3, 2, 2, 2)}[dim]
    theirs = TORCH_CLASSES[dim](3, affine=affine, track_running_stats=track, dtype=F64)
    gen = generator(13)
    if affine:
        with torch.no_grad():
            theirs.weight.copy_(torch.randn(3, generator=gen, dtype=F64))
            theirs.bias.copy_(torch.randn(3, generator=gen, dtype=F64))
    for _ in range(2):
        theirs(make_input(shape, F64, None, gen))
    ours = CBN_CLASSES[dim](3, affine=affine, track_running_stats=track, dtype=F64)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    back = TORCH_CLASSES[dim](3, affine=affine, track_running_stats=track, dtype=F64)
    back.load_state_dict(ours.state_dict(), strict=True)
    original, via_cbn, returned = theirs.state_dict(), ours.state_dict(), back.state_dict()
    assert list(via_cbn) == list(original) == list(returned)
    for key, value in original.items():
        assert via_cbn[key].dtype == value.dtype and torch.equal(via_cbn[key], value), key
        assert returned[key].dtype == value.dtype and torch.equal(returned[key], value), key
    if track:
        assert int(returned["num_batches_tracked"]) == 2


def test_meta_tensor_takes_torch_fallback():
    # No GPU here: a meta tensor is the non-CPU device at hand. It must go to
    # torch's own implementation, and cbn's operators must not be called.
    m = cbn_torch.BatchNorm2d(3, device="meta")
    for training in (True, False):
        m.train(training)
        with OpRecorder() as rec:
            y = m(torch.empty(2, 3, 4, 4, device="meta"))
        assert y.device.type == "meta" and y.shape == (2, 3, 4, 4)
        assert rec.cbn_ops() == [], f"training={training}"
        assert any("batch_norm" in n for n in rec.names), f"training={training}"


# --------------------------------------------------------------------------
# float16 and bfloat16
# --------------------------------------------------------------------------

@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16],
                         ids=["float16", "bfloat16"])
def test_half_precision_train_op(dtype, affine):
    gen = generator(14)
    x = make_input((2, 3, 4, 4), F64, None, gen).to(dtype)
    w = (1 + 0.5 * torch.randn(3, generator=gen, dtype=F64)).to(dtype) if affine else None
    b = torch.randn(3, generator=gen, dtype=F64).to(dtype) if affine else None
    y, mean, var = ops().batch_norm_train(x, w, b, 1e-5)
    assert y.dtype == dtype and y.shape == x.shape
    assert mean.dtype == F64 and var.dtype == F64
    # The reference is torch's float32 kernel on the same (rounded) values.
    ref = nn.functional.batch_norm(x.float(), None, None,
                                   None if w is None else w.float(),
                                   None if b is None else b.float(),
                                   training=True, eps=1e-5)
    # 1e-2 absolute, plus half an ulp of the output's own rounding (y reaches
    # a few units, where a bfloat16 ulp is 2**-6).
    half_ulp = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}[dtype]
    torch.testing.assert_close(y.float(), ref, rtol=half_ulp, atol=1e-2)
    xd = x.double()
    torch.testing.assert_close(mean, xd.mean((0, 2, 3)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, xd.var((0, 2, 3), unbiased=False), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------

def small_cnn():
    torch.manual_seed(15)
    return nn.Sequential(nn.Conv2d(3, 4, 3), cbn_torch.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


# torch's own compile path calls torch.jit.script_method (deprecated in torch).
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_torch_compile_without_graph_breaks():
    model = small_cnn().train()
    x = torch.randn(4, 3, 8, 8, generator=generator(16))
    torch._dynamo.reset()
    # explain runs the model: give it a copy so the running stats stay put.
    explanation = torch._dynamo.explain(copy.deepcopy(model))(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    # The operator is traced into the graph, not run outside it.
    assert any("cbn.batch_norm_train" in str(g.graph) for g in explanation.graphs)

    eager = copy.deepcopy(model)
    compiled = torch.compile(copy.deepcopy(model))
    # Two steps: the second sees the buffers the first one updated.
    for step in range(2):
        x = torch.randn(4, 3, 8, 8, generator=generator(17 + step))
        x_eager, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
        eager.zero_grad()
        compiled.zero_grad()
        y_eager, y_compiled = eager(x_eager), compiled(x_compiled)
        torch.testing.assert_close(y_compiled, y_eager, rtol=1e-5, atol=1e-5)
        y_eager.square().sum().backward()
        y_compiled.square().sum().backward()
        torch.testing.assert_close(x_compiled.grad, x_eager.grad, rtol=1e-5, atol=1e-5)
        for (name, p_eager), (_, p_compiled) in zip(eager.named_parameters(),
                                                    compiled.named_parameters()):
            torch.testing.assert_close(p_compiled.grad, p_eager.grad, rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"grad of {name}, step {step}: {m}")
        bn_eager, bn_compiled = eager[1], compiled._orig_mod[1]
        torch.testing.assert_close(bn_compiled.running_mean, bn_eager.running_mean,
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn_compiled.running_var, bn_eager.running_var,
                                   rtol=1e-5, atol=1e-6)
        assert int(bn_compiled.num_batches_tracked) == step + 1


# --------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def nested_model():
    torch.manual_seed(18)
    return nn.Sequential(
        Block(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 6),
        nn.BatchNorm1d(6, momentum=None),
        nn.Sequential(nn.ReLU(), nn.Linear(6, 4), nn.BatchNorm1d(4, affine=False)),
    ).double()


BATCH_NORM_NAMES = {"0.bn": cbn_torch.BatchNorm2d, "3": cbn_torch.BatchNorm1d,
                    "4.2": cbn_torch.BatchNorm1d}


def test_convert_nested_model():
    model = nested_model()
    gen = generator(19)
    with torch.no_grad():
        for _ in range(2):  # non-initial running statistics and batch counts
            model(torch.randn(5, 2, 4, 4, generator=gen, dtype=F64))
        model[0].bn.weight.uniform_(0.5, 1.5)
        model[0].bn.bias.normal_()
    model[3].weight.requires_grad_(False)  # a frozen parameter stays frozen
    model[4][2].eval()  # a per-module mode that differs from its parent's
    original = copy.deepcopy(model)

    converted = cbn_torch.convert(model)
    assert converted is model  # replaced in place inside the root
    modules = dict(converted.named_modules())
    for name, cls in BATCH_NORM_NAMES.items():
        assert type(modules[name]) is cls, name
    expected_modules = dict(original.named_modules())
    assert list(modules) == list(expected_modules)
    for name, module in modules.items():
        assert module.training == expected_modules[name].training, name
    for (name, p), (_, q) in zip(converted.named_parameters(), original.named_parameters()):
        assert p.requires_grad == q.requires_grad and torch.equal(p, q), name
    for key, value in original.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key

    # Same outputs as the original in train mode (state updated alike), then
    # in eval mode.
    for training in (True, False):
        converted.train(training)
        original.train(training)
        x = torch.randn(5, 2, 4, 4, generator=gen, dtype=F64)
        torch.testing.assert_close(converted(x), original(x), rtol=1e-12, atol=1e-12)
        for key, value in original.state_dict().items():
            torch.testing.assert_close(converted.state_dict()[key], value,
                                       rtol=1e-12, atol=1e-12,
                                       msg=lambda m: f"{key} (training={training}): {m}")


def test_convert_replaces_exact_classes_only():
    # SyncBatchNorm and user subclasses of BatchNorm2d are not plain batch
    # norms (other forward, other state): convert must leave them alone.
    class MyBatchNorm(nn.BatchNorm2d):
        pass

    model = nn.Sequential(nn.SyncBatchNorm(3), MyBatchNorm(3), nn.BatchNorm2d(3),
                          nn.BatchNorm3d(3))
    converted = cbn_torch.convert(model)
    assert [type(m) for m in converted] == [nn.SyncBatchNorm, MyBatchNorm,
                                           cbn_torch.BatchNorm2d, cbn_torch.BatchNorm3d]


def test_convert_bare_module():
    bn = nn.BatchNorm2d(3, momentum=0.3, eps=1e-3, dtype=F64)
    with torch.no_grad():
        bn(torch.randn(4, 3, 2, 2, generator=generator(20), dtype=F64))
    bn.eval()
    new = cbn_torch.convert(bn)
    assert type(new) is cbn_torch.BatchNorm2d
    assert not new.training
    assert (new.num_features, new.eps, new.momentum, new.affine, new.track_running_stats) \
        == (3, 1e-3, 0.3, True, True)
    for key, value in bn.state_dict().items():
        assert new.state_dict()[key].dtype == value.dtype, key
        assert torch.equal(new.state_dict()[key], value), key
    x = torch.randn(4, 3, 2, 2, generator=generator(21), dtype=F64)
    torch.testing.assert_close(new(x), bn(x), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# import cbn stays free of torch
# --------------------------------------------------------------------------

def test_import_cbn_does_not_import_torch():
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(cbn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent, env.get("PYTHONPATH", "")])
    code = "import sys, cbn; assert 'torch' not in sys.modules, 'import cbn imported torch'"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
