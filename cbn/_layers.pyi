from collections.abc import Callable, Mapping
from typing import Any, Literal, SupportsIndex

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray
from typing_extensions import Self

# Parameters, statistics and results have the layer's dtype (float32 or
# float64).
_Array = NDArray[np.floating[Any]]

class BatchNorm:
    @property
    def num_features(self) -> int: ...
    @property
    def feature_axis(self) -> int: ...
    @property
    def affine(self) -> bool: ...
    @property
    def track_running_stats(self) -> bool: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    training: bool
    dgamma: _Array | None
    dbeta: _Array | None
    dresidual: _Array | None
    @property
    def activation(self) -> Literal["relu"] | None: ...
    def __init__(
        self,
        num_features: SupportsIndex,
        *,
        feature_axis: SupportsIndex = 1,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: DTypeLike = ...,
        activation: Literal["relu"] | None = None,
    ) -> None: ...
    @property
    def eps(self) -> float: ...
    @eps.setter
    def eps(self, value: float) -> None: ...
    @property
    def momentum(self) -> float | None: ...
    @momentum.setter
    def momentum(self, value: float | None) -> None: ...
    @property
    def num_batches_tracked(self) -> int: ...
    @num_batches_tracked.setter
    def num_batches_tracked(self, value: SupportsIndex) -> None: ...
    # The setters copy into the existing array (shape (num_features,)); they
    # raise AttributeError when the getter returns None.
    @property
    def gamma(self) -> _Array | None: ...
    @gamma.setter
    def gamma(self, value: ArrayLike) -> None: ...
    @property
    def beta(self) -> _Array | None: ...
    @beta.setter
    def beta(self, value: ArrayLike) -> None: ...
    @property
    def running_mean(self) -> _Array | None: ...
    @running_mean.setter
    def running_mean(self, value: ArrayLike) -> None: ...
    @property
    def running_var(self) -> _Array | None: ...
    @running_var.setter
    def running_var(self, value: ArrayLike) -> None: ...
    def train(self, mode: bool = True) -> Self: ...
    def eval(self) -> Self: ...
    def reset_running_stats(self) -> None: ...
    def reset_parameters(self) -> None: ...
    def forward(self, x: ArrayLike, residual: ArrayLike | None = None) -> _Array: ...
    def __call__(self, x: ArrayLike, residual: ArrayLike | None = None) -> _Array: ...
    def backward(self, dy: ArrayLike) -> _Array: ...
    def state_dict(self) -> dict[str, NDArray[Any]]: ...
    def load_state_dict(self, state_dict: Mapping[str, ArrayLike]) -> None: ...
    def __reduce__(
        self,
    ) -> tuple[Callable[..., BatchNorm], tuple[Any, ...]]: ...

class _BatchNormNd(BatchNorm): ...

class BatchNorm1d(_BatchNormNd):
    def __init__(
        self,
        num_features: SupportsIndex,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: DTypeLike = ...,
        activation: Literal["relu"] | None = None,
    ) -> None: ...

class BatchNorm2d(_BatchNormNd):
    def __init__(
        self,
        num_features: SupportsIndex,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: DTypeLike = ...,
        activation: Literal["relu"] | None = None,
    ) -> None: ...

class BatchNorm3d(_BatchNormNd):
    def __init__(
        self,
        num_features: SupportsIndex,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: DTypeLike = ...,
        activation: Literal["relu"] | None = None,
    ) -> None: ...
