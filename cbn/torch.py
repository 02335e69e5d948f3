"""cbn's kernels as PyTorch CPU operators, and a drop-in for nn.BatchNorm*d.

Needs torch (``pip install cbn[torch]``); ``import cbn`` does not import it.

Operators (``torch.library.custom_op``, namespace ``cbn``), on CPU tensors
of float32 and float64 (float16 and bfloat16 computed in float32), any
memory layout (contiguous, ``channels_last``): the tensors are viewed as
NumPy arrays without a copy and cbn's kernels run with the GIL released.

- ``torch.ops.cbn.batch_norm_train(x, weight, bias, eps) -> (y, mean, var)``:
  batch statistics over every dimension but 1 (float64, the variance
  biased) and the normalized output.
- ``torch.ops.cbn.batch_norm_eval(x, mean, var, weight, bias, eps) -> y``.
- ``torch.ops.cbn.batch_norm_backward(dy, x, mean, var, weight, eps,
  training) -> (dx, dweight, dbias)``.

The first two have autograd formulas (through the third) and fake
implementations, so ``torch.compile`` traces them without a graph break.
The statistics the training operator returns are not differentiable, and
there are no second derivatives.

Modules: :class:`BatchNorm1d`, :class:`BatchNorm2d` and :class:`BatchNorm3d`
subclass torch's, with the same constructor, ``state_dict`` and running
statistics; on CPU tensors they call these operators, on other devices (and
for empty batches) torch's own. :func:`convert` swaps them into a model.
"""
import math
from typing import Optional

import torch

from cbn._normalize import normalize_batch, normalize_batch_backward

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "convert"]

Tensor = torch.Tensor
# Computed in float32 and returned in their own dtype: NumPy has no
# bfloat16, and float16 arithmetic would lose the statistics.
_WIDENED = (torch.float16, torch.bfloat16)


def _compute(t):
    """t as the tensor cbn computes on (float32 for half types), detached."""
    t = t.detach()
    return t.float() if t.dtype in _WIDENED else t


def _array(t):
    """A NumPy view of a CPU tensor (or None)."""
    return None if t is None else _compute(t).numpy()


def _batch_axes(x):
    """Every dimension but the channels (dimension 1)."""
    return tuple(d for d in range(x.dim()) if d != 1)


def _stats_like(x):
    return x.new_empty((x.shape[1],), dtype=torch.float64)


@torch.library.custom_op("cbn::batch_norm_train", mutates_args=(), device_types="cpu")
def batch_norm_train(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                     eps: float) -> tuple[Tensor, Tensor, Tensor]:
    y, mean, var = normalize_batch(_array(x), _array(weight), _array(bias),
                                   axis=_batch_axes(x), eps=eps, return_stats=True)
    return torch.from_numpy(y).to(x.dtype), torch.from_numpy(mean), torch.from_numpy(var)


@torch.library.custom_op("cbn::batch_norm_eval", mutates_args=(), device_types="cpu")
def batch_norm_eval(x: Tensor, mean: Tensor, var: Tensor, weight: Optional[Tensor],
                    bias: Optional[Tensor], eps: float) -> Tensor:
    y = normalize_batch(_array(x), _array(weight), _array(bias), axis=_batch_axes(x),
                        eps=eps, mean=_array(mean), var=_array(var))
    return torch.from_numpy(y).to(x.dtype)


@torch.library.custom_op("cbn::batch_norm_backward", mutates_args=(), device_types="cpu")
def batch_norm_backward(dy: Tensor, x: Tensor, mean: Tensor, var: Tensor,
                        weight: Optional[Tensor], eps: float,
                        training: bool) -> tuple[Tensor, Tensor, Tensor]:
    dx, dgamma, dbeta = normalize_batch_backward(
        _array(dy), _array(x), _array(mean), _array(var), _array(weight),
        axis=_batch_axes(x), eps=eps, batch_stats=training)
    pdt = x.dtype if weight is None else weight.dtype
    return (torch.from_numpy(dx).to(x.dtype), torch.from_numpy(dgamma).to(pdt),
            torch.from_numpy(dbeta).to(pdt))


@batch_norm_train.register_fake
def _(x, weight, bias, eps):
    return torch.empty_like(x), _stats_like(x), _stats_like(x)


@batch_norm_eval.register_fake
def _(x, mean, var, weight, bias, eps):
    return torch.empty_like(x)


@batch_norm_backward.register_fake
def _(dy, x, mean, var, weight, eps, training):
    pdt = x.dtype if weight is None else weight.dtype
    c = x.shape[1]
    return torch.empty_like(x), x.new_empty((c,), dtype=pdt), x.new_empty((c,), dtype=pdt)


def _grads(ctx, dy, training):
    """(dx, dweight, dbias) of a saved forward, None where not wanted."""
    x, weight, mean, var = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(x)
    dx, dw, db = torch.ops.cbn.batch_norm_backward(dy, x, mean, var, weight, ctx.eps,
                                                   training)
    return dx, (dw if ctx.has_weight else None), (db if ctx.has_bias else None)


def _setup_train(ctx, inputs, output):
    x, weight, bias, eps = inputs
    _, mean, var = output
    ctx.save_for_backward(x, weight, mean, var)
    ctx.eps, ctx.has_weight, ctx.has_bias = eps, weight is not None, bias is not None
    ctx.mark_non_differentiable(mean, var)


def _backward_train(ctx, dy, dmean, dvar):
    dx, dw, db = _grads(ctx, dy, True)
    return dx, dw, db, None


def _setup_eval(ctx, inputs, output):
    x, mean, var, weight, bias, eps = inputs
    ctx.save_for_backward(x, weight, mean, var)
    ctx.eps, ctx.has_weight, ctx.has_bias = eps, weight is not None, bias is not None


def _backward_eval(ctx, dy):
    dx, dw, db = _grads(ctx, dy, False)
    return dx, None, None, dw, db, None


batch_norm_train.register_autograd(_backward_train, setup_context=_setup_train)
batch_norm_eval.register_autograd(_backward_eval, setup_context=_setup_eval)


class _CbnBatchNorm:
    """The forward of torch's ``_BatchNorm`` (the same running-statistics
    rules, step for step) on cbn's operators; mixed into torch's classes."""

    def forward(self, input):
        self._check_input_dim(input)
        if input.device.type != "cpu" or input.numel() == 0:
            return super().forward(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else self.momentum)
        batch = self.training or (self.running_mean is None and self.running_var is None)
        if not batch:
            return torch.ops.cbn.batch_norm_eval(input, self.running_mean, self.running_var,
                                                 self.weight, self.bias, self.eps)
        size = input.size()
        if size[0] * math.prod(size[2:]) == 1:  # torch's own check and words
            raise ValueError(f"Expected more than 1 value per channel when training, "
                             f"got input size {size}")
        y, mean, var = torch.ops.cbn.batch_norm_train(input, self.weight, self.bias, self.eps)
        if self.training and self.track_running_stats and self.running_mean is not None:
            n = input.numel() // input.shape[1]
            with torch.no_grad():  # in double, as torch's CPU kernel updates them
                rm, rv = self.running_mean, self.running_var
                rm.copy_(factor * mean + (1.0 - factor) * rm.double())
                rv.copy_(factor * var * (n / (n - 1)) + (1.0 - factor) * rv.double())
        return y


class BatchNorm1d(_CbnBatchNorm, torch.nn.BatchNorm1d):
    """``torch.nn.BatchNorm1d`` on cbn's kernels (CPU); the same constructor,
    state and semantics."""


class BatchNorm2d(_CbnBatchNorm, torch.nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` on cbn's kernels (CPU); the same constructor,
    state and semantics."""


class BatchNorm3d(_CbnBatchNorm, torch.nn.BatchNorm3d):
    """``torch.nn.BatchNorm3d`` on cbn's kernels (CPU); the same constructor,
    state and semantics."""


_REPLACEMENTS = {torch.nn.BatchNorm1d: BatchNorm1d, torch.nn.BatchNorm2d: BatchNorm2d,
                 torch.nn.BatchNorm3d: BatchNorm3d}


def convert(module):
    """Replace every ``torch.nn.BatchNorm1d/2d/3d`` in ``module`` with cbn's.

    As ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does: the new
    modules take over the old ones' parameters and buffers (the same tensor
    objects, so an optimizer built before still updates them) and their
    training mode. Subclasses of torch's classes (SyncBatchNorm, cbn's own,
    yours) are left as they are.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    torch.nn.Module
        ``module`` with its batch norms replaced in place, or the replacement
        when ``module`` itself is one.

    Examples
    --------
    >>> import torch
    >>> import cbn.torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    >>> model = cbn.torch.convert(model)
    >>> type(model[1]).__module__, type(model[1]).__name__
    ('cbn.torch', 'BatchNorm2d')
    """
    cls = _REPLACEMENTS.get(type(module))
    if cls is not None:
        new = cls.__new__(cls)
        torch.nn.Module.__init__(new)
        for name in ("num_features", "eps", "momentum", "affine", "track_running_stats",
                     "training"):
            setattr(new, name, getattr(module, name))
        for name, p in module._parameters.items():
            new._parameters[name] = p
        for name, b in module._buffers.items():
            new._buffers[name] = b
        return new
    for name, child in module.named_children():
        replaced = convert(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
