from collections.abc import Iterable
from typing import Any, Literal, SupportsIndex

import numpy as np
from numpy.typing import ArrayLike, NDArray

_F64 = NDArray[np.float64]

class BatchStats:
    def __init__(
        self, count: SupportsIndex | ArrayLike, mean: ArrayLike, m2: ArrayLike
    ) -> None: ...
    @property
    def count(self) -> int | NDArray[np.int64]: ...
    @property
    def mean(self) -> _F64: ...
    @property
    def m2(self) -> _F64: ...
    def var(self, ddof: float = 0) -> _F64: ...
    def merge(self, *others: BatchStats) -> BatchStats: ...

def batch_stats(
    x: ArrayLike,
    *,
    axis: SupportsIndex | tuple[SupportsIndex, ...] | None = 0,
    nan_policy: Literal["propagate", "raise", "omit"] = "propagate",
) -> BatchStats: ...
def merge_stats(*parts: BatchStats) -> BatchStats: ...
def merge_moments(
    parts: Iterable[tuple[int | NDArray[np.int64], NDArray[Any], NDArray[Any]]]
) -> tuple[int | NDArray[np.int64], _F64, _F64]: ...
