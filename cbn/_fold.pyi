from collections.abc import Mapping
from typing import Any, SupportsIndex

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cbn._layers import BatchNorm

def fold_batchnorm(
    weight: ArrayLike,
    bias: ArrayLike | None,
    bn: BatchNorm | Mapping[str, Any],
    *,
    axis: SupportsIndex = 0,
) -> tuple[NDArray[np.floating[Any]], NDArray[np.floating[Any]]]: ...
