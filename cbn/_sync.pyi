from typing import Any, Literal, SupportsIndex

from numpy.typing import DTypeLike

from cbn._layers import BatchNorm

class SyncBatchNorm(BatchNorm):
    def __init__(
        self,
        num_features: SupportsIndex,
        *,
        comm: Any = None,
        feature_axis: SupportsIndex = 1,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: DTypeLike = ...,
        activation: Literal["relu"] | None = None,
    ) -> None: ...
    @classmethod
    def from_batchnorm(cls, layer: BatchNorm, *, comm: Any = None) -> SyncBatchNorm: ...
    @property
    def comm(self) -> Any: ...
