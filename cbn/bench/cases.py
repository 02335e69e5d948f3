"""The cases ``python -m cbn bench`` measures, and how long it measures them.

A case is an array shape, dtype and batch axes (:class:`Case`); :data:`CASES`
lists them in table order and :func:`select_cases` picks those of a run
(``--cases``, ``--quick``). :data:`FULL` and :data:`QUICK` are the two
:class:`Settings` of the command line.
"""
import dataclasses
import math

import numpy as np

#: Thread counts of a default run.
DEFAULT_THREADS = (1, 2)


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long to measure.

    Attributes
    ----------
    rounds : int
        Rounds of interleaved loops per case.
    target : float
        Seconds one timed loop should take.
    quick : bool
        Shrink the batch of big cases and skip the ``large`` ones.
    """

    rounds: int
    target: float
    quick: bool


FULL = Settings(rounds=11, target=0.025, quick=False)
QUICK = Settings(rounds=3, target=0.004, quick=True)


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark case.

    Attributes
    ----------
    name : str
        Short stable name, used by ``--cases`` and in the JSON.
    title : str
        What the table calls it, before the shape.
    shape : tuple of int
        Shape of x as cbn sees it (NHWC cases are NHWC here).
    dtype : str
    axis : int or tuple of int
        The batch axes.
    layout : str
        ``'NCHW'``, ``'NHWC'`` or ``'NC'``: how torch's tensor is made.
    tiny : bool
        Measures the fixed cost per call (allocating calls, µs in the table).
    large : bool
        Well beyond a last-level cache (hundreds of MB touched per call);
        left out of ``--quick``.
    """

    name: str
    title: str
    shape: tuple
    dtype: str
    axis: object
    layout: str
    tiny: bool = False
    large: bool = False

    @property
    def label(self):
        """Title, shape and dtype, e.g. ``'NCHW (32,64,56,56) f32'``."""
        dims = ",".join(str(n) for n in self.shape)
        return f"{self.title} ({dims}) f{np.dtype(self.dtype).itemsize * 8}"

    @property
    def channels(self):
        """Number of features (torch's C)."""
        return self.shape[-1] if self.layout == "NHWC" else self.shape[1]


NCHW_AXES = (0, 2, 3)
NHWC_AXES = (0, 1, 2)

#: Every case, in table order: the cases of issue 3's table, the two cases
#: well beyond a last-level cache (NCHW and rows), the float64 cases, and the
#: tables scipy.stats.zscore is compared on (``--nan``).
CASES = (
    Case("nchw", "NCHW", (32, 64, 56, 56), "float32", NCHW_AXES, "NCHW"),
    Case("nchw-c256", "NCHW", (32, 256, 14, 14), "float32", NCHW_AXES, "NCHW"),
    Case("nchw-c3", "NCHW small C", (8, 3, 224, 224), "float32", NCHW_AXES, "NCHW"),
    Case("nhwc", "NHWC", (32, 56, 56, 64), "float32", NHWC_AXES, "NHWC"),
    Case("2d-wide", "2-D", (256, 1024), "float32", 0, "NC"),
    Case("2d-tall", "2-D", (4096, 64), "float32", 0, "NC"),
    Case("tiny", "tiny", (16, 32), "float32", 0, "NC", tiny=True),
    Case("nchw-large", "NCHW 205 MB", (64, 64, 112, 112), "float32", NCHW_AXES,
         "NCHW", large=True),
    Case("2d-large", "2-D 128 MiB", (65536, 512), "float32", 0, "NC", large=True),
    Case("2d-wide-f64", "2-D", (256, 1024), "float64", 0, "NC"),
    Case("nchw-f64", "NCHW", (32, 64, 56, 56), "float64", NCHW_AXES, "NCHW"),
    Case("table-f64", "table", (100000, 64), "float64", 0, "NC"),
    Case("table-f32", "table", (100000, 64), "float32", 0, "NC"),
)

#: With ``--quick``, cases of at least this many elements get a batch this
#: many times smaller, which keeps the quick run (and its test) short.
QUICK_MIN_ELEMENTS = 1 << 20
QUICK_BATCH_DIVISOR = 4


def select_cases(quick=False, patterns=None):
    """The cases a run measures.

    Parameters
    ----------
    quick : bool
        Leave out the large case and shrink the batch (first axis) of cases
        with at least :data:`QUICK_MIN_ELEMENTS` elements.
    patterns : sequence of str, optional
        Keep only cases whose name or label contains one of these
        (case-insensitive).

    Returns
    -------
    list of Case

    Examples
    --------
    >>> [c.label for c in select_cases(patterns=["2d"])]
    ['2-D (256,1024) f32', '2-D (4096,64) f32', '2-D (256,1024) f64']
    >>> select_cases(quick=True, patterns=["c256"])[0].shape
    (8, 256, 14, 14)
    """
    chosen = []
    for case in CASES:
        if patterns and not any(p.lower() in case.name.lower()
                                or p.lower() in case.label.lower() for p in patterns):
            continue
        if quick:
            if case.large:
                continue
            if math.prod(case.shape) >= QUICK_MIN_ELEMENTS:
                case = dataclasses.replace(
                    case, shape=(max(1, case.shape[0] // QUICK_BATCH_DIVISOR),)
                    + case.shape[1:])
        chosen.append(case)
    return chosen
