# cython: language_level=3
"""Batch-normalization layers with PyTorch's semantics, on NumPy arrays.

A layer owns its parameters (gamma, beta) and running statistics as ndarrays
of the layer's dtype, and calls the same block planner and kernels as
:func:`cbn.normalize_batch`. ``forward`` saves what ``backward`` needs (the
input block, the statistics used and gamma as it was) so that updating the
parameters between the two calls does not change the gradient.
"""
import numpy as np
cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t
from libc.string cimport memset

from cbn cimport kernels as K
from cbn._block cimport (Block, make_block, empty_like_block, from_doubles,
                         check_status, run_forward_train, run_forward_infer,
                         run_backward, run_stats, run_backward_dx, relu_bits)
from cbn._normalize cimport as_ndarray, as_type, residual_block
from cbn._args import asarray as _asarray, index as _index, real as _real
from cbn._normalize import _check_eps

cnp.import_array()

_STATE_KEYS = ("weight", "bias", "running_mean", "running_var",
               "num_batches_tracked")


def _count(value, int least, str what):
    """``value`` as an int in [least, 2**63) (it is kept in an int64_t):
    TypeError naming ``what`` unless it is an integer (has ``__index__``, see
    cbn._args.index: a float such as 3.0 is not), else ValueError outside the
    range (where the int64_t would raise OverflowError)."""
    kind = "a positive integer" if least else "a non-negative integer"
    n = _index(value, what, kind)
    if not least <= n < 2**63:
        raise ValueError(f"{what} must be {kind}, got {value!r}")
    return n


def _check_momentum(value):
    """``value`` as a float in [0, 1], or None: TypeError if it is neither a
    real number (see cbn._args.real) nor None, ValueError outside [0, 1] or
    NaN."""
    if value is None:
        return None
    f = _real(value, "momentum", "a real number or None")
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"momentum must be in [0, 1] or None, got {value!r}")
    return f


_ACTIVATIONS = (None, "relu")


def _check_activation(value):
    """``value`` if it is an activation the layers fuse (None or "relu"):
    TypeError unless it is None or a str, ValueError for another name."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"activation must be None or a str, not "
                        f"{type(value).__name__}")
    if value not in _ACTIVATIONS:
        raise ValueError(f"activation must be None or 'relu', got {value!r}")
    return value


def _rebuild(cls, kwargs, state):
    """Unpickle a layer: construct it, then restore its state."""
    layer = cls(**kwargs)
    layer._set_state(state)
    return layer


cdef class BatchNorm:
    """Batch normalization over every axis but one (the feature axis).

    During training, normalizes each feature with the mean and biased
    variance of the batch and updates running estimates of them; in eval
    mode, uses the running estimates (unless ``track_running_stats`` is
    False). Semantics, defaults and ``state_dict`` keys follow
    ``torch.nn.BatchNorm2d``.

    Parameters
    ----------
    num_features : int
        C, the size of the feature axis. Integer arguments take anything
        with ``__index__`` (int, numpy integers), as NumPy does, not 3.0 or
        "3".
    feature_axis : int, optional
        The axis holding the features: 1 for N x C and NCHW (PyTorch's
        layout), -1 for channels-last (NHWC, Keras' layout). Default 1.
    eps : float, optional
        Added to the variance for numerical stability. Default 1e-5. Real
        arguments take int, float, numpy real scalars and 0-d real arrays,
        not strings or complex numbers.
    momentum : float or None, optional
        Weight of the current batch in the running averages:
        ``running = (1 - momentum)*running + momentum*batch``. None gives the
        cumulative (plain) average over all batches seen. Default 0.1.
    affine : bool, optional
        Learn a per-feature scale ``gamma`` and shift ``beta``. Default True.
    track_running_stats : bool, optional
        Keep running statistics and use them in eval mode. Default True.
    dtype : numpy.float32 or numpy.float64, optional
        The dtype of parameters, statistics and accepted inputs.
    activation : None or "relu", optional
        Fused after the normalization (and after the residual that
        :meth:`forward` may add): "relu" gives ``max(y, 0)`` with NaN kept,
        as ``numpy.maximum`` does, in the same pass over memory. Default
        None. For backward the layer keeps where the output was > 0 as a
        bit mask, one bit per element.

    Attributes
    ----------
    gamma, beta : ndarray or None
        Scale (initially 1) and shift (initially 0), shape (C,), writable;
        None when ``affine`` is False.
    running_mean, running_var : ndarray or None
        Running statistics (initially 0 and 1), shape (C,); the variance is
        the unbiased one. None when ``track_running_stats`` is False.
    num_batches_tracked : int
        Training batches seen since the last reset.
    dgamma, dbeta : ndarray or None
        Gradients of the last ``backward`` call (overwritten, not
        accumulated); None before it or when ``affine`` is False.
    dresidual : ndarray or None
        Gradient with respect to the residual of the last forward call, set
        by ``backward``; None when that call had no residual.
    training : bool
        True in training mode (the default), False after ``eval()``.

    Raises
    ------
    TypeError
        If ``num_features`` or ``feature_axis`` is not an integer, ``eps`` is
        not a real number, ``momentum`` is neither a real number nor None
        (a str, bytes or complex number is none of these), ``dtype`` is
        not float32 or float64, or ``activation`` is neither None nor a str. Assigning ``eps``, ``momentum`` or
        ``num_batches_tracked`` checks the same way.
    ValueError
        If ``num_features`` < 1, ``eps`` is negative or NaN, ``momentum``
        is outside [0, 1], or ``activation`` names another function than
        "relu". A failed assignment leaves the old value.

    Notes
    -----
    Threads: several threads may call :meth:`forward` on one layer in eval
    mode at once (the kernels release the GIL, so they run in parallel).
    A training-mode :meth:`forward` updates the running statistics and
    saves what :meth:`backward` uses, so a training-mode forward or a
    backward must not overlap any other forward or backward call on the same
    layer: such a call raises RuntimeError instead of corrupting the layer
    (the call already running is unaffected). Train one layer per thread, or
    serialize the calls with a lock held from forward to backward. Changing
    parameters or statistics (assignment, :meth:`load_state_dict`, the
    ``reset_*`` methods, in-place operations on the arrays) while another
    thread calls the layer is not detected; that is the caller's to avoid.
    See :doc:`/threads`.

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> bn = cbn.BatchNorm(3, feature_axis=-1)  # channels-last
    >>> x = np.random.default_rng(0).normal(2, 3, (16, 8, 8, 3)).astype(np.float32)
    >>> y = bn(x)
    >>> bool(np.allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-5))
    True
    >>> bn.num_batches_tracked
    1
    >>> dx = bn.backward(np.ones_like(y))
    >>> bn.dbeta
    array([1024., 1024., 1024.], dtype=float32)
    """

    cdef readonly int64_t num_features
    """int: C, the number of features (read-only).

    Examples
    --------
    >>> import cbn
    >>> cbn.BatchNorm2d(16).num_features
    16
    """
    cdef readonly int feature_axis
    """int: The axis of the input that holds the features, as given
    (read-only; 1 for BatchNorm1d/2d/3d).

    Examples
    --------
    >>> import cbn
    >>> cbn.BatchNorm(8, feature_axis=-1).feature_axis
    -1
    """
    cdef readonly bint affine
    """bool: Whether the layer has ``gamma`` and ``beta`` (read-only).

    Examples
    --------
    >>> import cbn
    >>> bn = cbn.BatchNorm1d(4, affine=False)
    >>> bn.affine, bn.gamma
    (False, None)
    """
    cdef readonly bint track_running_stats
    """bool: Whether the layer keeps running statistics (read-only).

    Without them, eval mode normalizes with the batch statistics too.

    Examples
    --------
    >>> import cbn
    >>> bn = cbn.BatchNorm1d(4, track_running_stats=False)
    >>> bn.track_running_stats, bn.running_mean
    (False, None)
    """
    cdef readonly object dtype
    """numpy.dtype: float32 or float64, the dtype of parameters, running
    statistics, inputs and outputs (read-only).

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> cbn.BatchNorm1d(4, dtype=np.float64).dtype
    dtype('float64')
    """
    cdef readonly object activation
    """None or str: The activation fused after the normalization: None or
    "relu" (read-only).

    Examples
    --------
    >>> import cbn
    >>> cbn.BatchNorm2d(8, activation="relu").activation
    'relu'
    """
    cdef int _typenum          # dtype's type number (NPY_FLOAT or NPY_DOUBLE)
    cdef double _eps
    cdef object _momentum
    cdef public bint training
    """bool: True in training mode (the default), False in eval mode.

    Set by :meth:`train` and :meth:`eval`, or directly.

    Examples
    --------
    >>> import cbn
    >>> bn = cbn.BatchNorm1d(4)
    >>> bn.training
    True
    >>> bn.eval().training
    False
    """
    cdef cnp.ndarray _gamma, _beta, _running_mean, _running_var
    cdef int64_t _num_batches_tracked
    cdef public object dgamma
    """ndarray or None: Gradient of the loss with respect to ``gamma`` from
    the last :meth:`backward` call (overwritten, not accumulated); None
    before it or when ``affine`` is False.

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> bn = cbn.BatchNorm1d(2)
    >>> y = bn(np.array([[0.0, 1.0], [2.0, 5.0]], np.float32))
    >>> dx = bn.backward(y)          # the gradient of sum(y**2)/2
    >>> bn.dgamma
    array([1.99998 , 1.999995], dtype=float32)
    """
    cdef public object dbeta
    """ndarray or None: Gradient of the loss with respect to ``beta`` from
    the last :meth:`backward` call (overwritten, not accumulated); None
    before it or when ``affine`` is False.

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> bn = cbn.BatchNorm1d(2)
    >>> y = bn(np.array([[0.0, 1.0], [2.0, 5.0]], np.float32))
    >>> dx = bn.backward(np.ones_like(y))
    >>> bn.dbeta
    array([2., 2.], dtype=float32)
    """
    cdef public object dresidual
    """ndarray or None: Gradient of the loss with respect to the residual
    of the last forward call, set by :meth:`backward`: dy where the
    activation passed it (dy itself, possibly the very array given, without
    an activation); None when that forward call had no residual.

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> bn = cbn.BatchNorm1d(2, activation="relu")
    >>> x = np.array([[0.0, 10.0], [2.0, 30.0]], np.float32)
    >>> y = bn(x, residual=np.array([[5.0, 0.0], [0.0, 0.0]], np.float32))
    >>> y
    array([[4.000005  , 0.        ],
           [0.999995  , 0.99999994]], dtype=float32)
    >>> _ = bn.backward(np.ones_like(y))
    >>> bn.dresidual
    array([[1., 0.],
           [1., 1.]], dtype=float32)
    """
    cdef tuple _ndims          # accepted input ndims, () for "any >= 2"
    cdef bint _relu            # activation == "relu"
    # What backward needs from the last forward call: its input as a block
    # (None before the first call), the input's shape, whether it used batch
    # statistics, and a float64 array of the mean and variance it used and,
    # when affine, gamma and beta as they were.
    # With an activation, _saved_mask holds where its output was > 0, one
    # bit per element in block order (numpy.packbits, little bit order):
    # the gradient passes there. _saved_residual: the call had a residual.
    cdef Block _saved
    cdef cnp.ndarray _saved_mask
    cdef bint _saved_residual
    cdef cnp.npy_intp _saved_shape[cnp.NPY_MAXDIMS]
    cdef int _saved_ndim
    cdef bint _saved_batch
    cdef cnp.ndarray _saved_values
    # The processes whose batches make one batch, set by cbn.SyncBatchNorm
    # (cbn/_sync.py): None, or an object whose combine_stats and sum_grads
    # methods combine this process's statistics and gradient sums with
    # theirs; forward and backward with batch statistics then go through it.
    # A call refused here goes through refuse_stats / refuse_grads instead,
    # which raise the group's error after the exchange the others are in.
    # _saved_count is the whole batch's size in the last such forward call.
    cdef object _group
    cdef int64_t _saved_count
    # Who is inside forward/backward now (see _enter): the number of eval-mode
    # forward calls, and the name of the one training-mode forward or
    # backward call (None when there is none).
    cdef int _readers
    cdef str _writer

    def __init__(self, num_features, *, feature_axis=1, eps=1e-5,
                 momentum=0.1, affine=True, track_running_stats=True,
                 dtype=np.float32, activation=None):
        self._setup(num_features, feature_axis, eps, momentum, affine,
                    track_running_stats, dtype, activation, ())

    cdef _setup(self, num_features, feature_axis, eps, momentum, affine,
                track_running_stats, dtype, activation, tuple ndims):
        # Every argument is checked before anything is set.
        n = _count(num_features, 1, "num_features")
        fa = _index(feature_axis, "feature_axis")
        dt = np.dtype(dtype)
        if dt != np.float32 and dt != np.float64:
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        e = _check_eps(eps)
        momentum = _check_momentum(momentum)
        activation = _check_activation(activation)
        self.num_features = n
        self.feature_axis = fa
        self.dtype = dt
        self._typenum = dt.num
        self._eps = e
        self._momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self._ndims = ndims
        self.activation = activation
        self._relu = activation == "relu"
        self.training = True
        self._gamma = np.ones(n, dt) if self.affine else None
        self._beta = np.zeros(n, dt) if self.affine else None
        self._running_mean = np.zeros(n, dt) if self.track_running_stats else None
        self._running_var = np.ones(n, dt) if self.track_running_stats else None
        self._num_batches_tracked = 0
        self.dgamma = self.dbeta = self.dresidual = None
        self._saved = None
        self._saved_mask = None
        self._group = None

    def _join(self, group):
        """Normalize with the statistics of a group of processes (see _group)."""
        self._group = group

    # ------------------------------------------------------------ attributes

    @property
    def eps(self):
        """float: Added to the variance for numerical stability; >= 0.

        Assigning a value that is not a real number raises TypeError, and a
        negative or NaN one ValueError; both leave the old value.

        Examples
        --------
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(4)
        >>> bn.eps
        1e-05
        >>> bn.eps = 1e-3
        >>> bn.eps
        0.001
        """
        return self._eps

    @eps.setter
    def eps(self, value):
        self._eps = _check_eps(value)

    @property
    def momentum(self):
        """float or None: Weight of the current batch in the running averages,
        in [0, 1]; None for the cumulative average (see :doc:`/math`).

        Assigning anything but a real number or None raises TypeError, and a
        value outside [0, 1] ValueError; both leave the old value.

        Examples
        --------
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(4)
        >>> bn.momentum
        0.1
        >>> bn.momentum = None
        >>> bn.momentum is None
        True
        """
        return self._momentum

    @momentum.setter
    def momentum(self, value):
        self._momentum = _check_momentum(value)

    @property
    def num_batches_tracked(self):
        """int: Training batches seen since the last reset; the count that the
        cumulative average (``momentum=None``) divides by.

        Assigning a value that is not an integer (2.0, "2") raises
        TypeError, and a negative one ValueError; both leave the old value.

        Examples
        --------
        >>> import numpy as np
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(2)
        >>> _ = bn(np.ones((3, 2), np.float32))
        >>> bn.num_batches_tracked
        1
        """
        return self._num_batches_tracked

    @num_batches_tracked.setter
    def num_batches_tracked(self, value):
        self._num_batches_tracked = _count(value, 0, "num_batches_tracked")

    cdef cnp.ndarray _checked_vector(self, value, str name):
        """``value`` as a fresh (C,) array of the layer's dtype, or ValueError."""
        a = _asarray(value, name)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
        if a.shape != (self.num_features,):
            raise ValueError(f"{name} must have shape ({self.num_features},), got {a.shape}")
        return np.array(a, dtype=self.dtype)

    cdef _assign(self, str name, value):
        """Set a parameter or statistic in place, keeping the array object."""
        cdef cnp.ndarray target = getattr(self, name)
        if target is None:
            raise AttributeError(f"{name} is None for this layer "
                                 f"(affine={self.affine}, track_running_stats="
                                 f"{self.track_running_stats})")
        target[...] = self._checked_vector(value, name)

    @property
    def gamma(self):
        """ndarray or None: The per-feature scale, shape (C,), initially 1;
        None when ``affine`` is False.

        Assigning copies the values into the layer's array, which keeps its
        identity, so references held by an optimizer stay valid. A
        ``numpy.ma.MaskedArray`` is refused with TypeError (no mask support),
        the layer left unchanged.

        Examples
        --------
        >>> import numpy as np
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(3)
        >>> bn.gamma
        array([1., 1., 1.], dtype=float32)
        >>> bn.gamma = [1, 2, 3]
        >>> bn.gamma
        array([1., 2., 3.], dtype=float32)
        """
        return self._gamma

    @gamma.setter
    def gamma(self, value):
        self._assign("gamma", value)

    @property
    def beta(self):
        """ndarray or None: The per-feature shift, shape (C,), initially 0;
        None when ``affine`` is False. Assigning copies, as for :attr:`gamma`.

        Examples
        --------
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(3)
        >>> bn.beta -= 0.5
        >>> bn.beta
        array([-0.5, -0.5, -0.5], dtype=float32)
        """
        return self._beta

    @beta.setter
    def beta(self, value):
        self._assign("beta", value)

    @property
    def running_mean(self):
        """ndarray or None: Running mean of the training batches, shape (C,),
        initially 0; None when ``track_running_stats`` is False. Assigning
        copies, as for :attr:`gamma`.

        Examples
        --------
        >>> import numpy as np
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(2)
        >>> _ = bn(np.array([[1.0, 10.0], [3.0, 30.0]], np.float32))
        >>> bn.running_mean                     # 0.9*0 + 0.1*batch mean
        array([0.2, 2. ], dtype=float32)
        """
        return self._running_mean

    @running_mean.setter
    def running_mean(self, value):
        self._assign("running_mean", value)

    @property
    def running_var(self):
        """ndarray or None: Running *unbiased* variance of the training batches,
        shape (C,), initially 1; None when ``track_running_stats`` is False.
        Assigning copies, as for :attr:`gamma`.

        Examples
        --------
        >>> import numpy as np
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(2)
        >>> _ = bn(np.array([[1.0, 10.0], [3.0, 30.0]], np.float32))
        >>> bn.running_var                      # 0.9*1 + 0.1*unbiased var
        array([ 1.1, 20.9], dtype=float32)
        """
        return self._running_var

    @running_var.setter
    def running_var(self, value):
        self._assign("running_var", value)

    # --------------------------------------------------------------- modes

    def train(self, mode=True):
        """Set training mode (True) or eval mode (False).

        Parameters
        ----------
        mode : bool, optional
            True (the default) for training, False for eval.

        Returns
        -------
        BatchNorm
            The layer itself, so that calls chain.

        Examples
        --------
        >>> import cbn
        >>> bn = cbn.BatchNorm2d(3).train(False)
        >>> bn.training
        False
        >>> bn.train().training
        True
        """
        self.training = bool(mode)
        return self

    def eval(self):
        """Set eval mode: normalize with the running statistics.

        Same as ``train(False)``.

        Returns
        -------
        BatchNorm
            The layer itself.

        Examples
        --------
        >>> import numpy as np
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(2).eval()
        >>> bn(np.array([[1.0, 2.0]], np.float32))  # running mean 0, var 1
        array([[0.999995, 1.99999 ]], dtype=float32)
        """
        return self.train(False)

    def reset_running_stats(self):
        """Set the running mean to 0, the running variance to 1 and the
        batch count to 0 (nothing when statistics are not tracked).

        Examples
        --------
        >>> import numpy as np
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(2)
        >>> _ = bn(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
        >>> bn.reset_running_stats()
        >>> bn.running_mean, bn.num_batches_tracked
        (array([0., 0.], dtype=float32), 0)
        """
        if self.track_running_stats:
            self._running_mean[...] = 0
            self._running_var[...] = 1
            self._num_batches_tracked = 0

    def reset_parameters(self):
        """Reset the running statistics and set gamma to 1 and beta to 0.

        Examples
        --------
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(2)
        >>> bn.gamma = [3, 4]
        >>> bn.reset_parameters()
        >>> bn.gamma
        array([1., 1.], dtype=float32)
        """
        self.reset_running_stats()
        if self.affine:
            self._gamma[...] = 1
            self._beta[...] = 0

    # ------------------------------------------------------------- compute

    cdef bint _has_dtype(self, cnp.ndarray a):
        """Whether ``a`` has the layer's dtype, in any byte order."""
        return (cnp.PyArray_TYPE(a) == self._typenum
                or a.dtype.newbyteorder("=") == self.dtype)

    cdef cnp.ndarray _check_input(self, x, char *is_batch):
        """Validate an input; return it as a native array of the layer's dtype
        and set ``is_batch`` to true for every axis but the feature axis."""
        cdef cnp.ndarray xa = as_ndarray(x)
        if not self._has_dtype(xa):
            raise TypeError(f"input dtype {xa.dtype} does not match the layer's "
                            f"dtype {self.dtype}")
        cdef int nd = cnp.PyArray_NDIM(xa)
        if self._ndims:
            if nd not in self._ndims:
                want = " or ".join(f"{d}D" for d in self._ndims)
                raise ValueError(f"expected {want} input (got {nd}D input)")
        elif nd < 2:
            raise ValueError(f"expected at least 2D input (got {nd}D input)")
        if not -nd <= self.feature_axis < nd:
            raise ValueError(f"feature_axis {self.feature_axis} is out of range "
                             f"for {nd}D input")
        cdef int fa = self.feature_axis + nd if self.feature_axis < 0 else self.feature_axis
        if cnp.PyArray_DIM(xa, fa) != self.num_features:
            raise ValueError(f"expected {self.num_features} features along axis "
                             f"{fa}, got input of shape {(<object>xa).shape}")
        memset(is_batch, True, nd)
        is_batch[fa] = False
        return as_type(xa, self._typenum)

    cdef void _to_doubles(self, cnp.ndarray v, double *out) noexcept:
        """The layer's own (C,) array ``v`` (C-contiguous, the layer's dtype)
        as doubles in ``out``."""
        cdef int64_t i
        cdef float *f
        cdef double *d
        if self._typenum == cnp.NPY_FLOAT:
            f = <float *>cnp.PyArray_DATA(v)
            for i in range(self.num_features):
                out[i] = f[i]
        else:
            d = <double *>cnp.PyArray_DATA(v)
            for i in range(self.num_features):
                out[i] = d[i]

    cdef int _enter(self, str method, bint exclusive) except -1:
        """Mark a forward (``exclusive`` False: eval mode) or a training-mode
        forward or backward (``exclusive`` True) call as running, or raise
        RuntimeError if it conflicts with one running in another thread.

        Eval-mode forward calls only read the layer, so any number may run
        at once. A training-mode forward updates the running statistics and
        a backward uses what the last forward saved, so each excludes every
        other call: interleaved, they would pair one thread's forward with
        another's backward, and a backward could lose the saved arrays its
        kernel is reading. Detecting costs two integer tests, where a lock
        would still leave that pairing wrong. The test and the update are
        atomic because the GIL is held from one to the other.
        """
        if self._writer is not None or (exclusive and self._readers):
            busy = (f"{self._writer}()" if self._writer is not None
                    else "forward() in eval mode")
            raise RuntimeError(
                f"{type(self).__name__}.{method}() called while another thread "
                f"is in {busy} on the same layer: training-mode forward and "
                f"backward keep per-layer state, so they must not overlap with "
                f"any other call on that layer. Give each thread its own "
                f"layer, or serialize the calls (see the Notes of "
                f"cbn.BatchNorm).")
        if exclusive:
            self._writer = method
        else:
            self._readers += 1
        return 0

    cdef void _leave(self, bint exclusive) noexcept:
        if exclusive:
            self._writer = None
        else:
            self._readers -= 1

    cpdef forward(self, x, residual=None):
        """Normalize a batch ``x`` (features along ``feature_axis``).

        In training mode uses the batch statistics and, if tracked, updates
        the running statistics; in eval mode uses the running statistics.
        Then adds ``residual`` when given and applies the layer's
        ``activation``, in the same pass: ``act(BN(x) + residual)``, the end
        of a ResNet block.

        Parameters
        ----------
        x : ndarray
            Input of the layer's dtype with ``num_features`` along the
            feature axis.
        residual : array_like, optional
            Added to the normalized batch before the activation: x's shape,
            a dtype that casts safely to the layer's, any strides. The sum is
            rounded in the layer's dtype, as ``y + residual`` would be.

        Returns
        -------
        ndarray
            The normalized batch, x's shape and dtype.

        Notes
        -----
        The input is kept (not copied) for :meth:`backward`; modifying it in
        place before calling :meth:`backward` changes the gradient.

        Raises
        ------
        TypeError
            If x's dtype is not the layer's, or x is a
            ``numpy.ma.MaskedArray`` (no mask support yet: pass
            ``np.asarray(x)`` to ignore the mask, or ``x.filled(np.nan)``).
            ``numpy.matrix`` and ``numpy.memmap`` are read as plain ndarrays.
            And if ``residual`` does not cast safely to the layer's dtype.
        ValueError
            For a wrong number of dimensions or features, a residual of
            another shape than x's, an empty batch, or a single value per
            feature in training mode. Nothing is changed then.
        RuntimeError
            If another thread is in a training-mode forward or a backward
            on this layer, or, in training mode, in any forward (see Notes
            of :class:`BatchNorm`).

        Examples
        --------
        >>> import numpy as np
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(2)
        >>> bn.forward(np.array([[0.0, 10.0], [2.0, 30.0]], np.float32))
        array([[-0.999995  , -0.99999994],
               [ 0.999995  ,  0.99999994]], dtype=float32)

        A residual block's end, ``relu(BN(x) + shortcut)``, in one pass:

        >>> block_end = cbn.BatchNorm1d(2, activation="relu")
        >>> block_end(np.array([[0.0, 10.0], [2.0, 30.0]], np.float32),
        ...           residual=np.array([[0.5, 0.5], [0.5, -2.0]], np.float32))
        array([[0.      , 0.      ],
               [1.499995, 0.      ]], dtype=float32)
        """
        cdef bint training = self.training
        self._enter("forward", training)
        try:
            return self._forward(x, residual, training)
        finally:
            self._leave(training)

    cdef _forward(self, x, residual, bint training):
        """The work of :meth:`forward`, in the mode it was entered in."""
        cdef char is_batch[cnp.NPY_MAXDIMS]
        cdef bint use_batch = training or not self.track_running_stats
        # A group checks the size of the whole batch, once it knows it.
        cdef bint grouped = use_batch and self._group is not None
        cdef cnp.ndarray xa, rt
        cdef Block b
        try:
            xa = self._check_input(x, is_batch)
            b = make_block(xa, is_batch)
            rt = residual_block(b, residual, xa, self._typenum, self._typenum)
        except (TypeError, ValueError) as e:
            if grouped:  # the others wait in the exchange: join it, refusing
                self._group.refuse_stats(e)
            raise
        cdef int64_t C = self.num_features
        cdef int64_t m = cnp.PyArray_SIZE(xa) // C
        if use_batch and m == 0 and not grouped:
            raise ValueError(f"cannot compute batch statistics of an empty "
                             f"batch (input of shape {(<object>xa).shape})")
        if training and m == 1 and not grouped:
            raise ValueError(f"Expected more than 1 value per channel when "
                             f"training, got input size {(<object>xa).shape}")
        # One allocation for this call's per-feature values: mean, var and,
        # when affine, gamma and beta (kept for backward, see _saved).
        cdef cnp.npy_intp n = (4 if self.affine else 2) * C
        cdef cnp.ndarray values = cnp.PyArray_EMPTY(1, &n, cnp.NPY_DOUBLE, 0)
        cdef double *mean = <double *>cnp.PyArray_DATA(values)
        cdef double *var = mean + C
        cdef double *g = NULL
        cdef double *be = NULL
        if self.affine:
            g, be = mean + 2 * C, mean + 3 * C
            self._to_doubles(self._gamma, g)
            self._to_doubles(self._beta, be)
        cdef cnp.ndarray yt = empty_like_block(b)
        cdef int64_t count
        if grouped:
            count = self._group_stats(b, values, m, (<object>xa).shape, training)
            run_forward_infer(b, yt, mean, var, g, be, self._eps, rt, self._relu)
            if training and self.track_running_stats:
                self._update_running(mean, var, count)
            self._saved_count = count
        elif use_batch:
            run_forward_train(b, yt, g, be, self._eps, mean, var, rt, self._relu)
            if training and self.track_running_stats:
                self._update_running(mean, var, m)
        else:
            self._to_doubles(self._running_mean, mean)
            self._to_doubles(self._running_var, var)
            run_forward_infer(b, yt, mean, var, g, be, self._eps, rt, self._relu)
        # Where the ReLU passed its input, as bits: 1/32 of a float32 output.
        # Made before any saved field changes (the kernel releases the GIL), so
        # that those change together.
        mask = relu_bits(yt) if self._relu else None
        self._saved = b
        self._saved_mask = mask
        self._saved_residual = rt is not None
        self._saved_values = values
        self._saved_batch = use_batch
        self._saved_ndim = cnp.PyArray_NDIM(xa)
        cdef int i
        for i in range(self._saved_ndim):
            self._saved_shape[i] = cnp.PyArray_DIM(xa, i)
        return b.restore(yt)

    cdef int64_t _group_stats(self, Block b, cnp.ndarray values, int64_t m,
                              tuple shape, bint training) except -1:
        """This process's statistics into values[:2C], then the group's
        mean and biased variance in their place; returns the group's batch
        size. Every process calls it (an empty batch too) and raises the
        same errors, after the collective."""
        cdef int64_t C = self.num_features
        cdef double *mean = <double *>cnp.PyArray_DATA(values)
        stats = values[:2 * C]
        if m > 0:
            run_stats(b, mean, mean + C)
        else:
            stats[...] = 0.0
        cdef int64_t count = self._group.combine_stats(m, stats)
        if count == 0:
            raise ValueError(f"cannot compute batch statistics of an empty "
                             f"batch (input of shape {shape} on every process)")
        if training and count == 1:
            raise ValueError(f"Expected more than 1 value per channel when "
                             f"training, got 1 over all processes (input size "
                             f"{shape} here)")
        return count

    cdef _update_running(self, const double *mean, const double *var, int64_t m):
        cdef double f
        cdef int s
        cdef int64_t C = self.num_features
        cdef int64_t n = self._num_batches_tracked + 1
        f = 1.0 / n if self._momentum is None else self._momentum
        cdef void *rm = cnp.PyArray_DATA(self._running_mean)
        cdef void *rv = cnp.PyArray_DATA(self._running_var)
        if self._typenum == cnp.NPY_FLOAT:
            with nogil:
                s = K.update_running_f32(<float *>rm, <float *>rv, mean, var, C, m, f)
        else:
            with nogil:
                s = K.update_running_f64(<double *>rm, <double *>rv, mean, var, C, m, f)
        check_status(s)
        self._num_batches_tracked = n  # counted once the update has happened

    def __call__(self, x, residual=None):
        """Same as :meth:`forward`: ``bn(x)`` is ``bn.forward(x)``.

        Examples
        --------
        >>> import numpy as np
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(2).eval()
        >>> x = np.ones((4, 2), np.float32)
        >>> bool(np.array_equal(bn(x), bn.forward(x)))
        True
        """
        return self.forward(x, residual)

    def backward(self, dy):
        """Back-propagate ``dy`` through the last :meth:`forward` call.

        Sets ``dgamma`` and ``dbeta`` (when ``affine``), and ``dresidual``
        (when the forward call had a residual), and returns dx. The
        gradient accounts for the batch statistics when the forward call
        used them (training mode, or eval without running statistics), and
        passes the activation only where its output was > 0 (not at 0, not
        at NaN).

        Parameters
        ----------
        dy : ndarray
            Gradient of the loss with respect to the last output: its shape,
            the layer's dtype.

        Returns
        -------
        ndarray
            Gradient with respect to the last input.

        Raises
        ------
        RuntimeError
            If no forward call came first, or another thread is in forward
            or backward on this layer (see Notes of :class:`BatchNorm`).
        ValueError
            If dy's shape differs from the last input's.
        TypeError
            If dy's dtype is not the layer's, or dy is a
            ``numpy.ma.MaskedArray`` (as for :meth:`forward`).

        Examples
        --------
        >>> import numpy as np
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(2)
        >>> y = bn(np.array([[0.0, 10.0], [2.0, 30.0], [4.0, 20.0]], np.float32))
        >>> dx = bn.backward(np.ones_like(y))  # sum(y) does not depend on x
        >>> bool(np.abs(dx).max() < 1e-6), bn.dbeta
        (True, array([3., 3.], dtype=float32))

        The mathematics: :doc:`/math`.
        """
        self._enter("backward", True)
        try:
            return self._backward(dy)
        finally:
            self._leave(True)

    cdef _backward(self, dy):
        """The work of :meth:`backward`."""
        cdef Block b = self._saved
        cdef cnp.ndarray dya
        try:
            dya = self._check_dy(dy)
        except (TypeError, ValueError, RuntimeError) as e:
            # In a group, the others may wait in the gradient exchange: the
            # one the last forward's mode implies (or, before any forward,
            # the present mode's).
            if self._group is not None and (
                    self._saved_batch if b is not None
                    else self.training or not self.track_running_stats):
                self._group.refuse_grads(e)
            raise
        dya = as_type(dya, self._typenum)
        dyt = b.take(dya)
        # dy through the ReLU: the kernels gate it with the saved bits as
        # they read it; the masked dy is made here only where it is a result
        # (dresidual) or a group's two kernel calls need it.
        cdef cnp.ndarray bits = self._saved_mask
        if bits is not None and (self._saved_residual or
                                 (self._saved_batch and self._group is not None)):
            keep = np.unpackbits(bits, count=cnp.PyArray_SIZE(dyt),
                                 bitorder="little").view(np.bool_)
            dyt = np.where(keep.reshape((<object>dyt).shape), dyt,
                           dyt.dtype.type(0))
            bits = None
        # dy reaches the residual as it reaches BN's output
        dresidual = None
        if self._saved_residual:
            dresidual = b.restore(dyt) if self._saved_mask is not None else dya
        dxt = empty_like_block(b)
        cdef int64_t C = self.num_features
        cdef cnp.npy_intp n = C
        cdef double *mean = <double *>cnp.PyArray_DATA(self._saved_values)
        cdef double *sums
        if self._saved_batch and self._group is not None:
            dx = self._group_backward(b, dyt, dxt)
            self.dresidual = dresidual
            return dx
        if not self.affine:
            run_backward(b, dyt, dxt, mean, mean + C, NULL, self._eps,
                         self._saved_batch, NULL, NULL, None, bits)
            self.dresidual = dresidual
            return b.restore(dxt)
        # The kernel sums in double; the gradients take the layer's dtype.
        sums = <double *>PyMem_Malloc(2 * C * sizeof(double))
        if sums == NULL:
            raise MemoryError()
        try:
            run_backward(b, dyt, dxt, mean, mean + C, mean + 2 * C, self._eps,
                         self._saved_batch, sums, sums + C, None, bits)
            self.dgamma = from_doubles(sums, 1, &n, self._typenum)
            self.dbeta = from_doubles(sums + C, 1, &n, self._typenum)
            self.dresidual = dresidual
        finally:
            PyMem_Free(sums)
        return b.restore(dxt)

    cdef cnp.ndarray _check_dy(self, dy):
        """``dy`` as an ndarray, checked against the last forward call."""
        if self._saved is None:
            raise RuntimeError("backward() called before forward()")
        cdef cnp.ndarray dya = as_ndarray(dy, "dy")
        if not self._is_saved_shape(dya):
            shape = tuple([self._saved_shape[i] for i in range(self._saved_ndim)])
            raise ValueError(f"dy has shape {(<object>dya).shape}, expected the last "
                             f"input's shape {shape}")
        if not self._has_dtype(dya):
            raise TypeError(f"dy dtype {dya.dtype} does not match the layer's "
                            f"dtype {self.dtype}")
        return dya

    cdef object _group_backward(self, Block b, cnp.ndarray dyt, cnp.ndarray dxt):
        """backward with a group's statistics: this process's gradient sums,
        the group's totals, then dx from those (cbn_backward_dx)."""
        cdef int64_t C = self.num_features
        cdef cnp.npy_intp n = C, n2 = 2 * C
        cdef double *mean = <double *>cnp.PyArray_DATA(self._saved_values)
        cdef double *g = mean + 2 * C if self.affine else NULL
        cdef cnp.ndarray sums = cnp.PyArray_EMPTY(1, &n2, cnp.NPY_DOUBLE, 0)
        cdef double *dg = <double *>cnp.PyArray_DATA(sums)
        run_backward(b, dyt, None, mean, mean + C, g, self._eps, False, dg, dg + C)
        self._group.sum_grads(sums)
        run_backward_dx(b, dyt, dxt, mean, mean + C, g, self._eps,
                        self._saved_count, dg, dg + C)
        if self.affine:
            self.dgamma = from_doubles(dg, 1, &n, self._typenum)
            self.dbeta = from_doubles(dg + C, 1, &n, self._typenum)
        return b.restore(dxt)

    cdef bint _is_saved_shape(self, cnp.ndarray a):
        """Whether ``a`` has the shape of the last forward call's input."""
        cdef int i
        if cnp.PyArray_NDIM(a) != self._saved_ndim:
            return False
        for i in range(self._saved_ndim):
            if cnp.PyArray_DIM(a, i) != self._saved_shape[i]:
                return False
        return True

    # ----------------------------------------------------------- state I/O

    def state_dict(self):
        """The layer's state as a dict of ndarray copies, with PyTorch's keys.

        ``weight`` and ``bias`` (if affine), ``running_mean``,
        ``running_var`` and ``num_batches_tracked`` (if tracking), so that
        ``torch_module.load_state_dict({k: torch.from_numpy(v) ...})`` and
        :meth:`load_state_dict` both accept it; and, for a layer with an
        activation, ``activation`` (a 0-d str array such as
        ``array('relu')``), so that the state says what the layer computed.
        A torch batch-norm module has no activation: drop that key for it.

        Returns
        -------
        dict of str to ndarray
            Copies: changing them does not change the layer.

        Examples
        --------
        >>> import cbn
        >>> state = cbn.BatchNorm1d(2).state_dict()
        >>> list(state)
        ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
        >>> state["num_batches_tracked"]
        array(0)
        >>> cbn.BatchNorm1d(2, activation="relu").state_dict()["activation"]
        array('relu', dtype='<U4')
        """
        d = {}
        if self.affine:
            d["weight"] = self._gamma.copy()
            d["bias"] = self._beta.copy()
        if self.track_running_stats:
            d["running_mean"] = self._running_mean.copy()
            d["running_var"] = self._running_var.copy()
            d["num_batches_tracked"] = np.array(self._num_batches_tracked,
                                                dtype=np.int64)
        if self.activation is not None:
            d["activation"] = np.array(self.activation)
        return d

    def load_state_dict(self, state_dict):
        """Load a state dict (from :meth:`state_dict` or a torch module).

        Values go through ``numpy.asarray``, so torch tensors work. The keys
        must be exactly those :meth:`state_dict` returns, but that
        ``activation`` may be left out (a torch module's state has none);
        when given, it must be the layer's. Everything is checked before
        anything is changed.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Values for ``weight``, ``bias``, ``running_mean``,
            ``running_var`` and ``num_batches_tracked`` (those the layer has).

        Raises
        ------
        ValueError
            For missing or unexpected keys, values of the wrong shape, or an
            ``activation`` other than the layer's.
        TypeError
            For values that do not hold real numbers, or are a
            ``numpy.ma.MaskedArray`` (no mask support).

        Examples
        --------
        >>> import numpy as np
        >>> import cbn
        >>> bn = cbn.BatchNorm1d(2)
        >>> state = bn.state_dict()
        >>> state["running_mean"] = np.array([0.5, -0.5])
        >>> bn.load_state_dict(state)
        >>> bn.running_mean
        array([ 0.5, -0.5], dtype=float32)
        """
        expected = set(self.state_dict())
        got = set(state_dict)
        if "activation" in got:
            act = _asarray(state_dict["activation"], "activation")
            if (act.shape != () or act.dtype.kind != "U"
                    or act.item() != self.activation):
                shown = act.item() if act.shape == () else act
                raise ValueError(f"state_dict has activation {shown!r}, but this "
                                 f"layer's is {self.activation!r}")
            got.discard("activation")
        expected.discard("activation")
        if got != expected:
            raise ValueError(f"state_dict keys do not match: missing "
                             f"{sorted(expected - got)}, unexpected "
                             f"{sorted(got - expected)}")
        new = {}
        for name, attr in (("weight", "gamma"), ("bias", "beta"),
                           ("running_mean", "running_mean"),
                           ("running_var", "running_var")):
            if name in expected:
                new[attr] = self._checked_vector(state_dict[name], name)
        if "num_batches_tracked" in expected:
            n = _asarray(state_dict["num_batches_tracked"], "num_batches_tracked")
            if n.shape not in ((), (1,)) or n.dtype.kind not in "iu":
                raise ValueError(f"num_batches_tracked must be a non-negative "
                                 f"integer, got {n!r}")
            new["num_batches_tracked"] = _count(int(n.reshape(())), 0,
                                                "num_batches_tracked")
        for attr, value in new.items():
            if attr == "num_batches_tracked":
                self._num_batches_tracked = value
            else:
                getattr(self, attr)[...] = value

    cdef dict _init_kwargs(self):
        return dict(num_features=self.num_features, feature_axis=self.feature_axis,
                    eps=self._eps, momentum=self._momentum, affine=self.affine,
                    track_running_stats=self.track_running_stats,
                    dtype=self.dtype, activation=self.activation)

    def _set_state(self, state):
        self.load_state_dict(state["state_dict"])
        self.training = state["training"]

    def __reduce__(self):
        state = {"state_dict": self.state_dict(), "training": self.training}
        return _rebuild, (type(self), self._init_kwargs(), state)

    def _extra_repr(self):
        return f", feature_axis={self.feature_axis}"

    def __repr__(self):
        return (f"{type(self).__name__}({self.num_features}{self._extra_repr()}, "
                f"eps={self._eps}, momentum={self._momentum}, "
                f"affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}"
                + ("" if self.activation is None
                   else f", activation={self.activation!r}") + ")")


cdef class _BatchNormNd(BatchNorm):
    """BatchNorm with the feature axis fixed at 1 (PyTorch's layout)."""

    cdef dict _init_kwargs(self):
        d = BatchNorm._init_kwargs(self)
        del d["feature_axis"]
        return d

    def _extra_repr(self):
        return ""


cdef class BatchNorm1d(_BatchNormNd):
    """Batch normalization of (N, C) or (N, C, L) input, over N (and L).

    The same arguments and attributes as :class:`BatchNorm` without
    ``feature_axis`` (fixed at 1); accepts 2-D or 3-D input.

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> bn = cbn.BatchNorm1d(4)
    >>> bn
    BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    >>> y = bn(np.arange(8, dtype=np.float32).reshape(2, 4))
    >>> y
    array([[-0.99999875, -0.99999875, -0.99999875, -0.99999875],
           [ 0.99999875,  0.99999875,  0.99999875,  0.99999875]],
          dtype=float32)
    >>> bn.running_mean
    array([0.2, 0.3, 0.4, 0.5], dtype=float32)
    """

    def __init__(self, num_features, *, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32, activation=None):
        self._setup(num_features, 1, eps, momentum, affine,
                    track_running_stats, dtype, activation, (2, 3))


cdef class BatchNorm2d(_BatchNormNd):
    """Batch normalization of NCHW input, over N, H and W.

    The same arguments and attributes as :class:`BatchNorm` without
    ``feature_axis`` (fixed at 1); accepts 4-D input.

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> bn = cbn.BatchNorm2d(3)
    >>> x = np.random.default_rng(0).normal(size=(8, 3, 5, 5)).astype(np.float32)
    >>> bn(x).shape
    (8, 3, 5, 5)
    """

    def __init__(self, num_features, *, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32, activation=None):
        self._setup(num_features, 1, eps, momentum, affine,
                    track_running_stats, dtype, activation, (4,))


cdef class BatchNorm3d(_BatchNormNd):
    """Batch normalization of NCDHW input, over N, D, H and W.

    The same arguments and attributes as :class:`BatchNorm` without
    ``feature_axis`` (fixed at 1); accepts 5-D input.

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> bn = cbn.BatchNorm3d(2, dtype=np.float64)
    >>> x = np.random.default_rng(0).normal(size=(4, 2, 3, 3, 3))
    >>> bn(x).dtype
    dtype('float64')
    """

    def __init__(self, num_features, *, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32, activation=None):
        self._setup(num_features, 1, eps, momentum, affine,
                    track_running_stats, dtype, activation, (5,))
