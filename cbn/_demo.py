"""The main job: a small NumPy MLP trained with and without batch normalization.

``python -m cbn demo`` runs :func:`run_demo` and prints the result. The point
is the effect batch normalization is meant to have (Ioffe & Szegedy, 2015):
on badly scaled inputs, a plain network and the same network with
``cbn.BatchNorm1d`` after each hidden linear layer are trained side by side
from the same initial weights, and the normalized one descends much faster.

Design notes
------------
- Everything but the normalization is plain NumPy in float32 (the layers'
  default dtype), so the demo exercises cbn's layer API exactly as a user
  would: ``forward``/``backward``, ``dgamma``/``dbeta``, ``train``/``eval``.
- The normalized network's ReLUs are fused into its normalization layers
  (``BatchNorm1d(..., activation="relu")``): one pass over the hidden
  activations instead of two, and a bit per element kept for backward
  instead of the pre-activation array. The result is bit for bit that of
  the separate steps (``--unfused`` runs those).
- The two runs differ only in the normalization layers: same initial
  weights, same minibatches in the same order, same optimizer, same learning
  rate schedule.
- The data is badly scaled in the way raw measurements in mixed units are:
  per-feature scales spread over two decades and large offsets of either
  sign. Either alone sinks the plain network: its hidden pre-activations
  are tens to hundreds of times larger than its initialization assumes, so
  its first steps are huge and leave the ReLUs of its second hidden layer
  dead; its output becomes a constant and its loss stays at the loss of
  predicting the class frequencies. Batch normalization subtracts each
  unit's mean and divides out its scale, so the learning rate that suits a
  normalized network works for it. (It cannot undo the spread of scales
  *within* a unit's inputs, which is why the spread here is two decades,
  not twelve: features a million times smaller than the rest would be
  invisible to both networks.)
- The learning rate decays to zero (cosine schedule). Besides being common
  practice, this matters for batch normalization here: with large input
  offsets every weight update moves the first layer's pre-activation means
  a lot, and the running statistics used in evaluation (an exponential
  average) only catch up once the weights settle.
- The optimizer clips the global gradient norm, a common safeguard. It
  bounds the plain run's first steps (without it that run's first-epoch
  loss is around 1e5 instead of 50; it dies either way). The normalized
  run's gradients stay below the threshold, so clipping does not change it.
"""
import argparse
import dataclasses
import time

import numpy as np

#: Default number of epochs of ``python -m cbn demo``.
DEFAULT_EPOCHS = 20
#: Default seed of ``python -m cbn demo``.
DEFAULT_SEED = 0


def make_problem(rng, n_train=4096, n_test=1024, n_features=8, n_classes=3,
                 scale_range=(1.0, 100.0), offset_range=(100.0, 1000.0)):
    """Make the built-in, badly scaled classification problem.

    Labels come from a fixed random "teacher" network applied to standard
    normal latent features, so the class boundaries are nonlinear but
    learnable. The inputs are those latent features after a per-feature
    affine map: scales log-spaced over `scale_range` (in random order) and
    offsets log-uniform in `offset_range` with random signs.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness (latents, teacher, scales, offsets).
    n_train, n_test : int
        Number of training and test examples.
    n_features : int
        Number of input features.
    n_classes : int
        Number of classes.
    scale_range, offset_range : (float, float)
        Smallest and largest per-feature scale and offset magnitude.

    Returns
    -------
    x_train, y_train, x_test, y_test : ndarray
        float32 inputs of shape (n, n_features) and int64 labels of shape (n,).

    Examples
    --------
    >>> x, y, _, _ = make_problem(np.random.default_rng(0), n_train=100, n_test=10)
    >>> x.shape, x.dtype, y.shape
    ((100, 8), dtype('float32'), (100,))
    """
    n = n_train + n_test
    z = rng.standard_normal((n, n_features))
    # tanh of a scaled projection: a smooth, clearly nonlinear rule that a
    # 64-unit MLP learns to roughly 90 % accuracy from well-scaled inputs.
    a = rng.standard_normal((n_features, 4 * n_features)) * (2.0 / np.sqrt(n_features))
    b = rng.standard_normal((4 * n_features, n_classes))
    labels = np.argmax(np.tanh(z @ a) @ b, axis=1)
    scale = np.geomspace(*scale_range, n_features)
    rng.shuffle(scale)
    offset = (np.exp(rng.uniform(*np.log(offset_range), n_features))
              * rng.choice([-1.0, 1.0], n_features))
    x = (offset + scale * z).astype(np.float32)
    return x[:n_train], labels[:n_train], x[n_train:], labels[n_train:]


def init_params(rng, sizes):
    """He-initialized weights and zero biases for a ReLU MLP.

    Parameters
    ----------
    rng : numpy.random.Generator
    sizes : sequence of int
        Layer widths, input first, e.g. ``(8, 64, 64, 3)``.

    Returns
    -------
    list of dict
        One ``{"w": (fan_in, fan_out), "b": (fan_out,)}`` per linear layer,
        float32.
    """
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
        params.append({"w": w.astype(np.float32),
                       "b": np.zeros(fan_out, dtype=np.float32)})
    return params


class MLP:
    """A ReLU MLP, optionally with batch normalization after each hidden layer.

    Every hidden layer is ``linear -> [BatchNorm1d] -> ReLU``; the last layer
    is linear and produces logits.

    Parameters
    ----------
    params : list of dict
        Initial weights from :func:`init_params`. They are copied, so two
        networks can start from the same values; their dtype is the
        network's.
    batch_norm : bool
        Insert a normalization layer after each hidden linear layer.
    norm_layer : callable, optional
        Makes those layers: ``norm_layer(width, dtype=..., activation=...)``.
        Default ``cbn.BatchNorm1d``; examples/sync_bn_mpi.py passes
        ``cbn.SyncBatchNorm``.
    fused : bool, optional
        With ``batch_norm``, fuse each ReLU into the normalization layer
        before it (``activation="relu"``) rather than applying
        ``numpy.maximum`` after it: the same numbers, fewer passes over
        memory. Default True.
    """

    def __init__(self, params, batch_norm, norm_layer=None, fused=True):
        if norm_layer is None:
            # Imported here, not at module level, so that ``python -m cbn
            # --help`` and this module's helpers work even when only the
            # layer is broken.
            from cbn import BatchNorm1d as norm_layer

        self.params = [{k: v.copy() for k, v in layer.items()} for layer in params]
        self.norms = []
        self.fused = bool(batch_norm and fused)
        if batch_norm:
            # The layers take the weights' dtype: float32 in the demo,
            # float64 when the tests check gradients by finite differences.
            act = "relu" if self.fused else None
            self.norms = [norm_layer(layer["w"].shape[1], dtype=layer["w"].dtype,
                                     activation=act)
                          for layer in params[:-1]]

    def train(self, mode=True):
        """Put the normalization layers in training (or evaluation) mode."""
        for bn in self.norms:
            bn.train(mode)
        return self

    def forward(self, x):
        """Logits for a batch `x` of shape (n, features); saves what backward needs."""
        self._saved = []
        h = x
        for i, layer in enumerate(self.params[:-1]):
            a = h @ layer["w"] + layer["b"]
            self._saved.append((h, None if self.fused else a))
            if self.fused:  # the layer applies the ReLU and keeps its mask
                h = self.norms[i].forward(a)
                continue
            if self.norms:
                a = self.norms[i].forward(a)
                self._saved[-1] = (h, a)
            h = np.maximum(a, 0)
        self._saved.append((h, None))
        return h @ self.params[-1]["w"] + self.params[-1]["b"]

    def backward(self, dlogits):
        """Back-propagate d loss / d logits through the network.

        Returns
        -------
        list of (str, ndarray, ndarray)
            ``(name, parameter, gradient)`` for every trainable array, the
            normalization layers' ``gamma`` and ``beta`` included. Parameters
            are the arrays the network uses, so updating them in place trains
            it.
        """
        grads = []
        g = dlogits
        last = len(self.params) - 1
        for i in reversed(range(len(self.params))):
            h, a = self._saved[i]
            if i < last:
                if not self.fused:
                    g = g * (a > 0)
                if self.norms:
                    bn = self.norms[i]
                    g = bn.backward(g)
                    grads.append((f"gamma{i}", bn.gamma, bn.dgamma))
                    grads.append((f"beta{i}", bn.beta, bn.dbeta))
            layer = self.params[i]
            grads.append((f"w{i}", layer["w"], h.T @ g))
            grads.append((f"b{i}", layer["b"], g.sum(axis=0)))
            g = g @ layer["w"].T
        return grads


def cross_entropy(logits, labels, total=None):
    """Mean softmax cross-entropy and its gradient with respect to the logits.

    Computed in float64 through a log-softmax with the row maximum
    subtracted, so it stays finite however large the plain network's logits
    get.

    Parameters
    ----------
    logits : ndarray
        Shape (n, classes).
    labels : ndarray
        Shape (n,), integers.
    total : int, optional
        The number of examples the mean is over; default n. A process that
        holds a slice of a minibatch passes the minibatch's size, so that its
        loss and gradient are its share of the minibatch's.

    Returns
    -------
    loss : float
    dlogits : ndarray
        Same shape and dtype as `logits`.
    """
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    total = len(labels) if total is None else total
    loss = -logp[rows, labels].sum() / total
    grad = np.exp(logp)
    grad[rows, labels] -= 1.0
    return float(loss), (grad / total).astype(logits.dtype)


class SGD:
    """SGD with momentum and global gradient-norm clipping.

    Parameters are updated in place. Velocities are keyed by parameter name
    rather than by array identity, so the optimizer works whether a layer's
    ``gamma`` attribute hands out the same array object each time or a new
    view of the same memory.
    """

    def __init__(self, lr, momentum, clip):
        self.lr, self.momentum, self.clip = lr, momentum, clip
        self.velocity = {}

    def step(self, grads):
        """Apply one update from ``(name, parameter, gradient)`` triples."""
        norm = np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64)))
                           for _, _, g in grads))
        factor = min(1.0, self.clip / norm) if norm > 0 else 1.0
        for name, p, g in grads:
            v = self.velocity.setdefault(name, np.zeros(p.shape, dtype=p.dtype))
            v *= self.momentum
            v += factor * np.asarray(g, dtype=p.dtype)
            p -= self.lr * v


@dataclasses.dataclass
class RunResult:
    """What one training run produced.

    Attributes
    ----------
    loss : list of float
        Mean training minibatch loss of each epoch.
    train_accuracy, test_accuracy : float
        Accuracy after training, in evaluation mode.
    """

    loss: list
    train_accuracy: float
    test_accuracy: float


def accuracy(model, x, y):
    """Accuracy of `model` on ``(x, y)`` in evaluation mode."""
    model.train(False)
    pred = np.argmax(model.forward(x), axis=1)
    model.train(True)
    return float(np.mean(pred == y))


class SingleProcess:
    """How :func:`train` shares a minibatch among processes: here, not at all.

    Data-parallel training (examples/sync_bn_mpi.py) passes an object with
    the same two methods.
    """

    def shard(self, idx):
        """The indices of minibatch ``idx`` that this process trains on."""
        return idx

    def reduce(self, loss, grads):
        """The minibatch's loss and gradients from this process's shares
        (``(name, parameter, gradient)`` triples, as MLP.backward returns)."""
        return loss, grads


def train(model, data, *, epochs, batch_size, lr, momentum, clip, seed,
          parallel=None):
    """Train `model` on `data` (from :func:`make_problem`); return a RunResult.

    The minibatch order depends on `seed` only, so two models trained with
    the same seed see exactly the same batches. `parallel` shares each
    minibatch among processes (default :class:`SingleProcess`).
    """
    parallel = SingleProcess() if parallel is None else parallel
    x_train, y_train, x_test, y_test = data
    order_rng = np.random.default_rng(seed)
    opt = SGD(lr, momentum, clip)
    n = len(x_train)
    steps_per_epoch = n // batch_size
    total_steps = epochs * steps_per_epoch
    losses = []
    step = 0
    for _ in range(epochs):
        perm = order_rng.permutation(n)
        batch_losses = []
        # The ragged last batch is dropped: equal batch sizes keep the two
        # runs' steps comparable, and a batch of one would be an error for a
        # batch-norm layer in training.
        for k in range(steps_per_epoch):
            idx = parallel.shard(perm[k * batch_size:(k + 1) * batch_size])
            loss, dlogits = cross_entropy(model.forward(x_train[idx]), y_train[idx],
                                          total=batch_size)
            loss, grads = parallel.reduce(loss, model.backward(dlogits))
            batch_losses.append(loss)
            opt.lr = lr * 0.5 * (1.0 + np.cos(np.pi * step / total_steps))
            opt.step(grads)
            step += 1
        losses.append(float(np.mean(batch_losses)))
    return RunResult(losses, accuracy(model, x_train, y_train),
                     accuracy(model, x_test, y_test))


@dataclasses.dataclass
class DemoResult:
    """Both runs of :func:`run_demo` and the settings they shared."""

    plain: RunResult
    bn: RunResult
    sizes: tuple
    settings: dict
    seconds: float


def run_demo(epochs=DEFAULT_EPOCHS, seed=DEFAULT_SEED, *, hidden=64, batch_size=64,
             lr=0.05, momentum=0.9, clip=5.0, parallel=None, norm_layer=None,
             dtype=np.float32, fused=True):
    """Train the same MLP with and without ``cbn.BatchNorm1d``.

    Parameters
    ----------
    epochs : int
        Passes over the training set.
    seed : int
        Seeds the data, the initial weights and the minibatch order.
    hidden : int
        Width of both hidden layers.
    batch_size : int
        Minibatch size.
    lr : float
        Initial learning rate, shared by both runs; it decays to 0 over the
        run (cosine schedule).
    momentum : float
        SGD momentum.
    clip : float
        Largest global gradient norm; larger gradients are scaled down.
    parallel : object, optional
        Shares the minibatches among processes (see :func:`train`).
    norm_layer : callable, optional
        The normalization layer of the second run (see :class:`MLP`).
    dtype : numpy.float32 or numpy.float64
        Of the inputs, weights and layers. Training amplifies rounding
        differences (another SIMD level, another summation order) by orders
        of magnitude per epoch; runs to be compared closely use float64.
    fused : bool
        Fuse the ReLUs into the normalization layers (see :class:`MLP`).

    Returns
    -------
    DemoResult

    Examples
    --------
    >>> r = run_demo(epochs=2)
    >>> r.bn.loss[-1] < r.plain.loss[-1]
    True
    """
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    x_train, y_train, x_test, y_test = make_problem(rng)
    data = (x_train.astype(dtype), y_train, x_test.astype(dtype), y_test)
    sizes = (x_train.shape[1], hidden, hidden, int(y_train.max()) + 1)
    params = [{k: v.astype(dtype) for k, v in layer.items()}
              for layer in init_params(rng, sizes)]
    settings = dict(epochs=epochs, batch_size=batch_size, lr=lr,
                    momentum=momentum, clip=clip)
    plain = train(MLP(params, batch_norm=False), data, seed=seed + 1,
                  parallel=parallel, **settings)
    bn = train(MLP(params, batch_norm=True, norm_layer=norm_layer, fused=fused), data,
               seed=seed + 1, parallel=parallel, **settings)
    settings.update(n_train=len(data[0]), n_test=len(data[2]), fused=fused)
    return DemoResult(plain, bn, sizes, settings, time.perf_counter() - start)


def format_report(result):
    """The text ``python -m cbn demo`` prints for a :class:`DemoResult`."""
    s = result.settings
    arch = " -> ".join(str(n) for n in result.sizes)
    lines = [
        f"MLP {arch} (ReLU, softmax cross-entropy), trained twice from the same "
        "initial weights",
        f"on a synthetic {result.sizes[-1]}-class problem with badly scaled inputs "
        f"({s['n_train']} train / {s['n_test']} test examples).",
        f"SGD: lr {s['lr']:g} (cosine decay), momentum {s['momentum']:g}, "
        f"batch {s['batch_size']}, gradient norm clipped at {s['clip']:g}.",
        ("BatchNorm1d and ReLU fused: BatchNorm1d(width, activation='relu')."
         if s.get("fused", True) else
         "BatchNorm1d, then ReLU (numpy.maximum) as a separate step."),
        "",
        "mean training loss per epoch",
        f"{'epoch':>5}  {'plain':>12}  {'BatchNorm1d':>12}",
    ]
    for epoch, (lp, lb) in enumerate(zip(result.plain.loss, result.bn.loss), 1):
        lines.append(f"{epoch:>5}  {lp:>12.4f}  {lb:>12.4f}")
    lines += [
        "",
        f"{'accuracy':>14}  {'plain':>8}  {'BatchNorm1d':>11}",
        f"{'train':>14}  {result.plain.train_accuracy:>8.1%}  "
        f"{result.bn.train_accuracy:>11.1%}",
        f"{'test':>14}  {result.plain.test_accuracy:>8.1%}  "
        f"{result.bn.test_accuracy:>11.1%}",
        "",
        f"({result.seconds:.1f} s)",
    ]
    return "\n".join(lines)


def plot_losses(result, path):
    """Save both runs' loss curves to `path` with matplotlib.

    The loss axis is logarithmic: the plain run's first epochs are orders of
    magnitude above everything else.
    """
    import matplotlib

    matplotlib.use("Agg")  # a file is wanted, not a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(result.plain.loss) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, result.plain.loss, marker="o", label="plain")
    ax.plot(epochs, result.bn.loss, marker="o", label="cbn.BatchNorm1d")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss")
    ax.set_title("MLP on badly scaled data")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_arguments(parser):
    """Add the ``demo`` subcommand's options to an argparse parser."""
    parser.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS,
                        help="passes over the training set (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed for data, weights and batch order "
                             "(default %(default)s)")
    parser.add_argument("--float64", action="store_true",
                        help="train in float64 rather than float32 (runs on "
                             "other machines or process counts then agree to "
                             "many digits; float32 rounding differences grow "
                             "during training)")
    parser.add_argument("--unfused", action="store_true",
                        help="apply the ReLUs after the normalization layers "
                             "with numpy.maximum, rather than fused into them "
                             "(activation='relu'); the numbers are the same")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also save the two loss curves to FILE.png; needs "
                             "matplotlib, and without it the demo stops with "
                             "exit status 1 before training")


def main(args):
    """Run the ``demo`` subcommand; return the exit status."""
    result = run_demo(epochs=args.epochs, seed=args.seed,
                      dtype=np.float64 if args.float64 else np.float32,
                      fused=not args.unfused)
    print(format_report(result))
    if args.plot is not None:
        plot_losses(result, args.plot)
        print(f"loss curves saved to {args.plot}")
    return 0
