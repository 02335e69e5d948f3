"""Mergeable batch statistics: :func:`batch_stats`, :func:`merge_stats`,
:class:`BatchStats`.

Partial statistics of pieces of a batch -- the count m, the mean and
M2 = sum((x - mean)**2) per feature -- combine exactly into those of the
whole batch (Chan, Golub and LeVeque's parallel formula), so statistics can be
computed over data that never sits in one array: chunks streamed from disk,
or slices held by different processes (:class:`cbn.SyncBatchNorm` merges its
processes' statistics this way). Everything is float64; the merge adds only
non-negative terms to M2, so it does not cancel the way sum(x**2) - m*mean**2
does.
"""
import numpy as np

from cbn._args import asarray, index, real
from cbn._normalize import _batch_moments


def _feature_counts(count, shape):
    """Per-feature counts as a new int64 array of ``shape``."""
    if count.dtype.kind not in "biu":
        raise TypeError(f"count must hold integers, got dtype {count.dtype}")
    if count.shape != shape:
        raise ValueError(f"per-feature counts must have the shape of mean, {shape}, "
                         f"got {count.shape}")
    if (count < 0).any():
        raise ValueError("count must be non-negative")
    return count.astype(np.int64)


class BatchStats:
    """Partial statistics of a batch: count, mean and M2 per feature.

    Build them with :func:`batch_stats` and combine them with :meth:`merge`
    or :func:`merge_stats`; the object is immutable (its arrays are
    read-only), so a merge returns a new one.

    Parameters
    ----------
    count : int or array_like of int
        m, the number of values per feature (the batch size); >= 0. An int or
        numpy integer (anything with ``__index__``), not a float; or, for
        statistics that left out missing values, an integer array of the
        feature shape F with each feature's own count.
    mean : array_like
        Per-feature mean (float64, the feature shape F). Ignored (taken as 0)
        when ``count`` is 0.
    m2 : array_like
        Per-feature sum of squared deviations from the mean, shape F, >= 0.

    Attributes
    ----------
    count : int or ndarray
    mean, m2 : ndarray
        Read-only float64 arrays of the feature shape F.

    Raises
    ------
    TypeError
        If ``count`` is not an integer, or ``mean`` or ``m2`` is a
        ``numpy.ma.MaskedArray``.
    ValueError
        If ``count`` is negative, or ``mean`` and ``m2`` differ in shape (or
        per-feature counts from theirs).

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> s = cbn.batch_stats(np.array([[1.0, 10.0], [3.0, 30.0]]))
    >>> s
    BatchStats(count=2, mean=array([ 2., 20.]), m2=array([  2., 200.]))
    >>> s.var(), s.var(ddof=1)
    (array([  1., 100.]), array([  2., 200.]))
    """

    __slots__ = ("_count", "_mean", "_m2")

    def __init__(self, count, mean, m2):
        mean = np.array(asarray(mean, "mean"), dtype=np.float64)
        m2 = np.array(asarray(m2, "m2"), dtype=np.float64)
        if mean.shape != m2.shape:
            raise ValueError(f"mean and m2 must have one shape, got {mean.shape} "
                             f"and {m2.shape}")
        if isinstance(count, np.ndarray) and count.ndim > 0:
            n = _feature_counts(count, mean.shape)
        else:
            n = index(count, "count", "a non-negative integer")
            if n < 0:
                raise ValueError(f"count must be a non-negative integer, got {count!r}")
        self._hold(n, mean, m2)

    def _hold(self, count, mean, m2):
        """Keep count and the arrays mean, m2 (float64, of one shape, owned
        by this object alone), zeroed for an empty batch (NaN for a feature
        whose own count is 0) and made read-only."""
        if isinstance(count, np.ndarray):
            mean[count == 0] = np.nan
            m2[count == 0] = np.nan
            count.flags.writeable = False
        elif count == 0:
            mean[...] = 0.0
            m2[...] = 0.0
        mean.flags.writeable = False
        m2.flags.writeable = False
        self._count, self._mean, self._m2 = count, mean, m2

    @classmethod
    def _own(cls, count, mean, m2, frozen=False):
        """BatchStats holding arrays this module has just computed (float64,
        of one shape, referenced nowhere else), without the checks and copies
        of the constructor: they cost several times the kernel on a small
        batch. frozen: the arrays are read-only already, and zero for count
        0 (as _batch_moments makes them)."""
        self = cls.__new__(cls)
        if frozen:
            self._count, self._mean, self._m2 = count, mean, m2
        else:
            self._hold(count, mean, m2)
        return self

    @property
    def count(self):
        """int, or ndarray: m, the number of values per feature; with
        statistics over the values that are not NaN (``nan_policy='omit'``)
        each feature's own count, a read-only int64 array of the feature
        shape."""
        return self._count

    @property
    def mean(self):
        """ndarray: The per-feature mean (read-only, float64)."""
        return self._mean

    @property
    def m2(self):
        """ndarray: The per-feature sum of squared deviations from the mean
        (read-only, float64)."""
        return self._m2

    def var(self, ddof=0):
        """Per-feature variance ``m2 / (count - ddof)``.

        Parameters
        ----------
        ddof : int or float, optional
            Delta degrees of freedom: 0 (the default) for the biased variance
            that batch normalization uses, 1 for the unbiased one. Any real
            number, as :func:`numpy.var` takes; TypeError for others (a
            str, None).

        Returns
        -------
        ndarray
            float64, the feature shape; NaN where ``count <= ddof``, as
            :func:`numpy.var` gives (without its warning), feature by
            feature for per-feature counts.

        Examples
        --------
        >>> import numpy as np
        >>> import cbn
        >>> cbn.batch_stats(np.array([1.0, 2.0, 3.0, 4.0])).var(ddof=1)
        array(1.66666667)
        """
        d = self._count - real(ddof, "ddof")
        if isinstance(d, np.ndarray):  # per-feature counts
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(d > 0, self._m2 / np.where(d > 0, d, 1), np.nan)
        if d <= 0:
            return np.full(self._m2.shape, np.nan)
        return np.asarray(self._m2 / d)  # an array even for 0-d statistics

    def merge(self, *others):
        """The statistics of this batch and ``others`` together.

        Same as ``merge_stats(self, *others)``.

        Parameters
        ----------
        *others : BatchStats
            Statistics of the other pieces, of the same feature shape.

        Returns
        -------
        BatchStats

        Examples
        --------
        >>> import numpy as np
        >>> import cbn
        >>> a = cbn.batch_stats(np.array([1.0, 2.0]))
        >>> b = cbn.batch_stats(np.array([3.0, 4.0, 5.0]))
        >>> a.merge(b)
        BatchStats(count=5, mean=array(3.), m2=array(10.))
        """
        return merge_stats(self, *others)

    def __repr__(self):
        count = repr(self._count) if isinstance(self._count, np.ndarray) else self._count
        return (f"BatchStats(count={count}, mean={self._mean!r}, "
                f"m2={self._m2!r})")

    def __reduce__(self):
        return BatchStats, (self._count, self._mean, self._m2)


def batch_stats(x, *, axis=0, nan_policy="propagate"):
    """Partial statistics of ``x`` over the batch axes, for merging.

    The mean and M2 = sum((x - mean)**2) per feature, in float64, from the
    same kernels as :func:`normalize_batch` (one read of the data: shifted
    sums per cache-sized chunk, redone exactly while the chunk is still in
    cache when the shift would cost precision; the threads and SIMD level cbn
    uses), and the count m.

    Parameters
    ----------
    x : array_like
        Data, with the dtypes :func:`normalize_batch` accepts. An empty batch
        gives count 0 (and zero mean and M2), which merges as nothing.
    axis : int, tuple of ints or None, optional
        The batch axes, as in :func:`normalize_batch`; the other axes are the
        features. Default 0.
    nan_policy : {'propagate', 'raise', 'omit'}, optional
        'propagate' (default): a NaN makes its feature's mean and M2 NaN.
        'raise': ValueError if ``x`` holds a NaN. 'omit': each feature's
        statistics over its values that are not NaN; ``count`` is then an
        int64 array of the feature shape (a feature with none gets count 0
        and NaN mean and M2), and merges stay exact feature by feature.

    Returns
    -------
    BatchStats

    Raises
    ------
    TypeError
        If ``x`` is not real, or is a ``numpy.ma.MaskedArray`` (refused: give
        ``x.filled(np.nan)`` with ``nan_policy='omit'``; ``numpy.matrix`` and
        ``numpy.memmap`` are read as plain ndarrays).
    ValueError
        For an unknown ``nan_policy``, or a NaN with ``nan_policy='raise'``.
    numpy.exceptions.AxisError
        For an out-of-range or repeated axis.

    See Also
    --------
    merge_stats : combine the statistics of several pieces.

    Examples
    --------
    Statistics of data too big for memory, chunk by chunk:

    >>> import numpy as np
    >>> import cbn
    >>> rng = np.random.default_rng(0)
    >>> chunks = [rng.normal(5.0, 2.0, (1000, 3)) for _ in range(10)]
    >>> total = cbn.batch_stats(chunks[0])
    >>> for chunk in chunks[1:]:
    ...     total = total.merge(cbn.batch_stats(chunk))
    >>> whole = np.concatenate(chunks)
    >>> total.count
    10000
    >>> bool(np.allclose(total.mean, whole.mean(axis=0), rtol=1e-14))
    True
    >>> bool(np.allclose(total.var(), whole.var(axis=0), rtol=1e-13))
    True

    NCHW images, one set of statistics per channel:

    >>> imgs = rng.normal(size=(8, 3, 4, 4)).astype(np.float32)
    >>> cbn.batch_stats(imgs, axis=(0, 2, 3)).mean.shape
    (3,)

    Missing values, left out feature by feature:

    >>> s = cbn.batch_stats(np.array([[1.0, np.nan], [3.0, 4.0]]), nan_policy="omit")
    >>> s.count, s.mean
    (array([2, 1]), array([2., 4.]))
    """
    m, mean, m2 = _batch_moments(x, axis, nan_policy)
    return BatchStats._own(m, mean, m2, True)


def merge_stats(*parts):
    """Combine the statistics of pieces of a batch into the whole batch's.

    Chan, Golub and LeVeque's parallel update, applied left to right: for
    pieces a and b with ``d = mean_b - mean_a`` and ``m = m_a + m_b``,
    ``mean = mean_a + d*m_b/m`` and ``M2 = M2_a + M2_b + d**2*m_a*m_b/m``,
    in float64 and vectorized over the features. Pieces with count 0 are
    skipped. The result does not depend on how the data were cut beyond
    rounding; for a fixed list of pieces it is bitwise reproducible.

    Parameters
    ----------
    *parts : BatchStats
        At least one, all of the same feature shape.

    Returns
    -------
    BatchStats

    Raises
    ------
    TypeError
        If no statistics, or something else than BatchStats, are given.
    ValueError
        If the feature shapes differ.

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> x = np.arange(12.0).reshape(6, 2)
    >>> parts = [cbn.batch_stats(x[:1]), cbn.batch_stats(x[1:1]), cbn.batch_stats(x[1:])]
    >>> s = cbn.merge_stats(*parts)
    >>> s.count, s.mean, s.var()
    (6, array([5., 6.]), array([11.66666667, 11.66666667]))
    """
    if not parts:
        raise TypeError("merge_stats needs at least one BatchStats")
    for p in parts:
        if not isinstance(p, BatchStats):
            raise TypeError(f"merge_stats combines BatchStats, not {type(p).__name__}")
    shape = parts[0].mean.shape
    for p in parts[1:]:
        if p.mean.shape != shape:
            raise ValueError(f"cannot merge statistics of feature shapes {shape} "
                             f"and {p.mean.shape}")
    n, mean, m2 = merge_moments([(p.count, p.mean, p.m2) for p in parts])
    return BatchStats._own(n, mean, m2)  # merge_moments made them afresh


def merge_moments(parts):
    """Chan's merge of ``(count, mean, m2)`` triples (float64 arrays of one
    shape), left to right; returns the merged triple. Shared by
    :func:`merge_stats` and :class:`cbn.SyncBatchNorm`, whose processes each
    merge the gathered triples in rank order and so agree bitwise. A count
    may be an array of per-feature counts (statistics that left out NaN):
    then each feature merges alone, with the same arithmetic, and the
    merged count is an int64 array."""
    parts = list(parts)
    if any(isinstance(k, np.ndarray) for k, _, _ in parts):
        return _merge_per_feature(parts)
    n = 0
    mean = m2 = None
    for k, pmean, pm2 in parts:
        if k == 0:
            continue
        if n == 0:
            n, mean, m2 = k, np.array(pmean, dtype=np.float64), np.array(pm2, dtype=np.float64)
            continue
        total = n + k
        wb = k / total
        d = pmean - mean
        mean += d * wb
        m2 += pm2 + d * d * (n * wb)
        n = total
    if n == 0:
        shape = np.shape(parts[0][1])
        return 0, np.zeros(shape), np.zeros(shape)
    return n, mean, m2


def _merge_per_feature(parts):
    """merge_moments with per-feature counts: where a part's count is 0 it
    is skipped, where the merged count is still 0 the part is taken, else
    the update of merge_moments. Features no part counts keep NaN."""
    shape = np.shape(parts[0][1])
    n = np.zeros(shape, np.int64)
    mean = np.full(shape, np.nan)
    m2 = np.full(shape, np.nan)
    for k, pmean, pm2 in parts:
        k = np.broadcast_to(np.asarray(k, dtype=np.int64), shape)
        first = (n == 0) & (k > 0)
        both = (n > 0) & (k > 0)
        mean = np.where(first, pmean, mean)
        m2 = np.where(first, pm2, m2)
        if both.any():
            total = np.where(both, n + k, 1)
            wb = k / total
            d = pmean - mean
            mean = np.where(both, mean + d * wb, mean)
            m2 = np.where(both, m2 + (pm2 + d * d * (n * wb)), m2)
        n = n + k
    return n, mean, m2
