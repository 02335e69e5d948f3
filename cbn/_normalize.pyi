from typing import Any, Literal, SupportsIndex, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

# ``axis``: one axis, a tuple of axes, or None for all (a list is rejected).
_Axis = SupportsIndex | tuple[SupportsIndex, ...] | None
# Results keep x's float dtype (float16/32/64); other real input gives float64.
_Result = NDArray[np.floating[Any]]
# The returned mean and var are float64 batch statistics, or the given
# ``mean`` and ``var`` as arrays of their own dtype.
_Stats = tuple[_Result, NDArray[Any], NDArray[Any]]
# scipy's nan_policy.
_NanPolicy = Literal["propagate", "raise", "omit"]

@overload
def normalize_batch(
    x: ArrayLike,
    gamma: ArrayLike | None = None,
    beta: ArrayLike | None = None,
    *,
    axis: _Axis = 0,
    eps: float = 1e-5,
    mean: ArrayLike | None = None,
    var: ArrayLike | None = None,
    out: NDArray[Any] | None = None,
    return_stats: Literal[False] = False,
    residual: ArrayLike | None = None,
    relu: bool = False,
    ddof: SupportsIndex = 0,
    nan_policy: _NanPolicy = "propagate",
) -> _Result: ...
@overload
def normalize_batch(
    x: ArrayLike,
    gamma: ArrayLike | None = None,
    beta: ArrayLike | None = None,
    *,
    axis: _Axis = 0,
    eps: float = 1e-5,
    mean: ArrayLike | None = None,
    var: ArrayLike | None = None,
    out: NDArray[Any] | None = None,
    return_stats: Literal[True],
    residual: ArrayLike | None = None,
    relu: bool = False,
    ddof: SupportsIndex = 0,
    nan_policy: _NanPolicy = "propagate",
) -> _Stats: ...
@overload
def normalize_batch(
    x: ArrayLike,
    gamma: ArrayLike | None = None,
    beta: ArrayLike | None = None,
    *,
    axis: _Axis = 0,
    eps: float = 1e-5,
    mean: ArrayLike | None = None,
    var: ArrayLike | None = None,
    out: NDArray[Any] | None = None,
    return_stats: bool,
    residual: ArrayLike | None = None,
    relu: bool = False,
    ddof: SupportsIndex = 0,
    nan_policy: _NanPolicy = "propagate",
) -> _Result | _Stats: ...
def normalize_batch_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    var: ArrayLike,
    gamma: ArrayLike | None = None,
    *,
    axis: _Axis = 0,
    eps: float = 1e-5,
    batch_stats: bool = True,
    out: NDArray[Any] | None = None,
    relu: bool = False,
    y: ArrayLike | None = None,
    beta: ArrayLike | None = None,
    out_residual: NDArray[Any] | None = None,
) -> tuple[_Result, _Result, _Result]: ...
def zscore(
    a: ArrayLike,
    axis: _Axis = 0,
    ddof: SupportsIndex = 0,
    nan_policy: _NanPolicy = "propagate",
) -> _Result: ...
