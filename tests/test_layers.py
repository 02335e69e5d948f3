"""The layer API: cbn.BatchNorm and cbn.BatchNorm1d/2d/3d.

The layers are checked against ``oracle.BatchNormRef`` (a float64 reference
of the same semantics, running statistics included) and, for backward,
against central finite differences of a float64 layer. Every rejected call
is made with a snapshot of the layer's state (parameters, running
statistics, batch count, last gradients) that is compared afterwards, so a
layer that updates anything before noticing the problem fails.
"""
import copy
import pickle

import numpy as np
import pytest

import cbn
from checks import assert_close, assert_matches_finite_differences, assert_rounding_close
from oracle import BatchNormRef, central_difference

DTYPES = [np.float32, np.float64]

#: (layer class, input shape) for every input rank the Nd layers accept,
#: channels (C) always on axis 1.
ND_CASES = [
    (cbn.BatchNorm1d, (16, 3)),
    (cbn.BatchNorm1d, (6, 3, 5)),
    (cbn.BatchNorm2d, (4, 3, 5, 2)),
    (cbn.BatchNorm3d, (2, 3, 3, 2, 4)),
]
ND_IDS = ["1d-2D", "1d-3D", "2d", "3d"]

#: (input shape, feature_axis) for the general BatchNorm, 2-D..5-D input.
AXIS_CASES = [
    ((16, 3), 1),
    ((3, 16), 0),
    ((16, 3), -1),
    ((5, 4, 3), -1),
    ((5, 3, 4), 1),
    ((3, 5, 4), 0),
    ((4, 3, 5, 2), 1),          # NCHW
    ((4, 5, 2, 3), -1),         # NHWC
    ((4, 5, 3, 2), 2),
    ((4, 5, 3, 2), -2),
    ((2, 3, 3, 2, 4), 1),       # NCDHW
    ((2, 3, 2, 4, 3), -1),      # NDHWC
]


def data(rng, shape, dtype, loc=0.5, scale=1.5):
    """Normal test data of ``dtype`` with a non-zero mean."""
    return (loc + scale * rng.standard_normal(shape)).astype(dtype)


def set_params(layer, ref, rng):
    """Give ``layer`` and ``ref`` the same non-trivial gamma and beta."""
    c = len(layer.gamma)
    gamma = (1.0 + 0.5 * rng.standard_normal(c)).astype(layer.gamma.dtype)
    beta = rng.standard_normal(c).astype(layer.beta.dtype)
    layer.gamma[...] = gamma
    layer.beta[...] = beta
    ref.gamma = gamma.astype(np.float64)
    ref.beta = beta.astype(np.float64)


def make_pair(cls, c, dtype, **kwargs):
    """A cbn layer and the reference with the same settings."""
    feature_axis = kwargs.pop("feature_axis", 1)
    if cls is cbn.BatchNorm:
        layer = cls(c, feature_axis=feature_axis, dtype=dtype, **kwargs)
    else:
        layer = cls(c, dtype=dtype, **kwargs)
    return layer, BatchNormRef(c, feature_axis=feature_axis, **kwargs)


def assert_state_matches(layer, ref, dtype):
    """Running statistics and batch count of ``layer`` equal the reference's."""
    assert layer.num_batches_tracked == ref.num_batches_tracked
    if ref.running_mean is None:
        assert layer.running_mean is None and layer.running_var is None
    else:
        assert_close(layer.running_mean, ref.running_mean, dtype)
        assert_close(layer.running_var, ref.running_var, dtype)


def snapshot(layer):
    """Copies of everything a failed call must leave alone."""
    def cp(a):
        return None if a is None else np.array(a, copy=True)
    return {
        "gamma": cp(layer.gamma), "beta": cp(layer.beta),
        "running_mean": cp(layer.running_mean), "running_var": cp(layer.running_var),
        "num_batches_tracked": layer.num_batches_tracked,
        "dgamma": cp(layer.dgamma), "dbeta": cp(layer.dbeta),
        "training": layer.training,
    }


def assert_unchanged(layer, snap):
    after = snapshot(layer)
    assert after.keys() == snap.keys()
    for key, before in snap.items():
        now = after[key]
        if isinstance(before, np.ndarray):
            assert isinstance(now, np.ndarray), key
            assert now.dtype == before.dtype and now.tobytes() == before.tobytes(), \
                f"{key} was modified by a failed call"
        else:
            assert now == before, f"{key} was modified by a failed call"


def assert_raises_unchanged(exc, layer, method, *args, match=None):
    """``layer.method(*args)`` raises ``exc`` and leaves the layer's state alone."""
    snap = snapshot(layer)
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    copies = [a.copy() for a in arrays]
    with pytest.raises(exc, match=match):
        getattr(layer, method)(*args)
    assert_unchanged(layer, snap)
    for a, b in zip(arrays, copies):
        assert a.tobytes() == b.tobytes(), "an argument was modified by a failed call"


def trained_layer(cls, shape, dtype, rng, steps=3, **kwargs):
    """A layer with non-trivial parameters after a few training steps."""
    layer, ref = make_pair(cls, shape[kwargs.get("feature_axis", 1)], dtype, **kwargs)
    if layer.affine:
        set_params(layer, ref, rng)
    for _ in range(steps):
        layer.forward(data(rng, shape, dtype, loc=rng.normal(), scale=rng.uniform(0.5, 2)))
    return layer


# Construction ----------------------------------------------------------------

@pytest.mark.parametrize("cls", [cbn.BatchNorm, cbn.BatchNorm1d, cbn.BatchNorm2d,
                                 cbn.BatchNorm3d])
@pytest.mark.parametrize("dtype", DTYPES)
def test_new_layer_has_pytorch_initial_state(cls, dtype):
    layer = cls(5, dtype=dtype)
    for name, value in [("gamma", 1), ("beta", 0), ("running_mean", 0),
                        ("running_var", 1)]:
        a = getattr(layer, name)
        assert isinstance(a, np.ndarray), name
        assert a.shape == (5,) and a.dtype == dtype, name
        assert np.all(a == value), name
    assert layer.num_batches_tracked == 0
    assert isinstance(layer.num_batches_tracked, int)
    assert layer.training is True
    assert layer.eps == 1e-5
    assert layer.momentum == 0.1
    assert layer.affine is True
    assert layer.track_running_stats is True


def test_constructor_arguments_become_attributes():
    layer = cbn.BatchNorm2d(3, eps=1e-3, momentum=None, affine=True,
                            track_running_stats=True, dtype=np.float64)
    assert layer.eps == 1e-3
    assert layer.momentum is None
    assert cbn.BatchNorm(3, momentum=0.25).momentum == 0.25


def test_affine_false_has_no_parameters():
    layer = cbn.BatchNorm1d(4, affine=False)
    assert layer.affine is False
    assert layer.gamma is None and layer.beta is None
    assert layer.running_mean is not None


def test_untracked_layer_has_no_running_stats():
    layer = cbn.BatchNorm2d(4, track_running_stats=False)
    assert layer.track_running_stats is False
    assert layer.running_mean is None and layer.running_var is None
    assert layer.gamma is not None


@pytest.mark.parametrize("cls", [cbn.BatchNorm, cbn.BatchNorm1d, cbn.BatchNorm2d,
                                 cbn.BatchNorm3d])
@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.int64, np.complex64,
                                   np.bool_, object])
def test_unsupported_layer_dtype_is_rejected(cls, dtype):
    with pytest.raises((TypeError, ValueError)):
        cls(3, dtype=dtype)


@pytest.mark.parametrize("cls", [cbn.BatchNorm, cbn.BatchNorm1d, cbn.BatchNorm2d,
                                 cbn.BatchNorm3d])
@pytest.mark.parametrize("num_features", [0, -1, -64])
def test_non_positive_num_features_raises_value_error(cls, num_features):
    with pytest.raises(ValueError):
        cls(num_features)


@pytest.mark.parametrize("cls", [cbn.BatchNorm, cbn.BatchNorm1d, cbn.BatchNorm2d])
@pytest.mark.parametrize("eps", [-1e-5, -1.0, float("nan")])
def test_negative_or_nan_eps_raises_value_error(cls, eps):
    with pytest.raises(ValueError):
        cls(3, eps=eps)


def test_zero_eps_is_allowed():
    layer = cbn.BatchNorm1d(2, eps=0.0, dtype=np.float64)
    x = np.array([[0.0, 1.0], [2.0, 5.0]])
    np.testing.assert_allclose(layer(x), [[-1, -1], [1, 1]], rtol=1e-12)


# repr --------------------------------------------------------------------------

@pytest.mark.parametrize("layer, text", [
    (cbn.BatchNorm2d(64),
     "BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"),
    (cbn.BatchNorm1d(3, eps=1e-3, momentum=None, affine=False,
                     track_running_stats=False),
     "BatchNorm1d(3, eps=0.001, momentum=None, affine=False, track_running_stats=False)"),
    (cbn.BatchNorm3d(8, momentum=0.5, dtype=np.float64),
     "BatchNorm3d(8, eps=1e-05, momentum=0.5, affine=True, track_running_stats=True)"),
])
def test_repr_is_pytorchs(layer, text):
    assert repr(layer) == text


def test_repr_of_general_layer_names_its_class_and_features():
    assert repr(cbn.BatchNorm(7, feature_axis=-1)).startswith("BatchNorm(7")


# Forward in training mode --------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, shape", ND_CASES, ids=ND_IDS)
def test_training_forward_and_running_stats_match_reference(cls, shape, dtype, rng):
    layer, ref = make_pair(cls, shape[1], dtype)
    set_params(layer, ref, rng)
    for step in range(4):
        x = data(rng, shape, dtype, loc=3.0 * step - 2, scale=0.5 + step)
        y = layer.forward(x)
        assert y.shape == x.shape and y.dtype == dtype
        assert_close(y, ref.forward(x))
        assert_state_matches(layer, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, feature_axis", AXIS_CASES)
def test_general_layer_normalizes_over_all_but_feature_axis(shape, feature_axis,
                                                           dtype, rng):
    layer, ref = make_pair(cbn.BatchNorm, shape[feature_axis], dtype,
                           feature_axis=feature_axis)
    set_params(layer, ref, rng)
    for step in range(3):
        x = data(rng, shape, dtype, loc=step - 1.0)
        assert_close(layer(x), ref.forward(x))
        assert_state_matches(layer, ref, dtype)
    layer.eval()
    ref.training = False
    x = data(rng, shape, dtype)
    assert_close(layer(x), ref.forward(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_channels_last_layer_equals_channels_first_on_transposed_input(dtype, rng):
    nchw = data(rng, (4, 3, 5, 6), dtype)
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    first = cbn.BatchNorm2d(3, dtype=dtype)
    last = cbn.BatchNorm(3, feature_axis=-1, dtype=dtype)
    assert_close(last(nhwc).transpose(0, 3, 1, 2), first(nchw).astype(np.float64),
                 dtype)
    assert_close(last.running_mean, first.running_mean.astype(np.float64), dtype)
    assert_close(last.running_var, first.running_var.astype(np.float64), dtype)


def test_call_is_forward(rng):
    x = data(rng, (8, 3), np.float64)
    a, b = cbn.BatchNorm1d(3, dtype=np.float64), cbn.BatchNorm1d(3, dtype=np.float64)
    np.testing.assert_array_equal(a(x), b.forward(x))
    assert a.num_batches_tracked == b.num_batches_tracked == 1


def test_training_output_has_zero_mean_and_unit_variance(rng):
    x = data(rng, (256, 4, 8), np.float64, loc=100.0, scale=7.0)
    y = cbn.BatchNorm1d(4, eps=0.0, dtype=np.float64)(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2)), 1, rtol=1e-12)


@pytest.mark.parametrize("cls, shape", ND_CASES, ids=ND_IDS)
def test_running_var_is_unbiased_over_all_batch_positions(cls, shape, rng):
    x = data(rng, shape, np.float64, loc=2.0, scale=3.0)
    layer = cls(shape[1], dtype=np.float64)
    layer(x)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    m = x.size // shape[1]
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var,
                               0.9 + 0.1 * x.var(axis=axes) * m / (m - 1), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * x.var(axis=axes, ddof=1),
                               rtol=1e-12)


@pytest.mark.parametrize("momentum", [0.1, 0.01, 0.5, 0.9, 1.0, 0.0, None])
@pytest.mark.parametrize("dtype", DTYPES)
def test_running_stats_follow_momentum(momentum, dtype, rng):
    layer, ref = make_pair(cbn.BatchNorm2d, 3, dtype, momentum=momentum)
    for step in range(5):
        x = data(rng, (4, 3, 3, 3), dtype, loc=rng.normal(0, 5), scale=rng.uniform(0.1, 4))
        layer(x)
        ref.forward(x)
        assert_state_matches(layer, ref, dtype)


def test_momentum_none_is_cumulative_average(rng):
    layer = cbn.BatchNorm1d(3, momentum=None, dtype=np.float64)
    batches = [data(rng, (10, 3), np.float64, loc=5.0 * k, scale=k + 1.0)
               for k in range(6)]
    for x in batches:
        layer(x)
    assert layer.num_batches_tracked == 6
    np.testing.assert_allclose(layer.running_mean,
                               np.mean([x.mean(axis=0) for x in batches], axis=0),
                               rtol=1e-12)
    np.testing.assert_allclose(layer.running_var,
                               np.mean([x.var(axis=0, ddof=1) for x in batches], axis=0),
                               rtol=1e-12)


def test_momentum_none_continues_average_after_load(rng):
    # f = 1/num_batches_tracked: a layer that loads a count of 3 weighs the
    # next batch by 1/4.
    layer = cbn.BatchNorm1d(2, momentum=None, dtype=np.float64)
    layer.load_state_dict({"weight": np.ones(2), "bias": np.zeros(2),
                           "running_mean": np.array([1.0, 2.0]),
                           "running_var": np.array([3.0, 4.0]),
                           "num_batches_tracked": np.array(3)})
    x = data(rng, (8, 2), np.float64)
    layer(x)
    assert layer.num_batches_tracked == 4
    np.testing.assert_allclose(layer.running_mean,
                               0.75 * np.array([1.0, 2.0]) + 0.25 * x.mean(axis=0),
                               rtol=1e-12)
    np.testing.assert_allclose(layer.running_var,
                               0.75 * np.array([3.0, 4.0]) + 0.25 * x.var(axis=0, ddof=1),
                               rtol=1e-12)


def test_gamma_and_beta_are_writable_and_used(rng):
    layer = cbn.BatchNorm1d(3, dtype=np.float64)
    x = data(rng, (10, 3), np.float64)
    base = layer(x)
    layer.gamma[...] = [2.0, 3.0, -1.0]
    layer.beta[...] = [0.5, 0.0, 1.0]
    np.testing.assert_allclose(layer(x), base * [2.0, 3.0, -1.0] + [0.5, 0.0, 1.0],
                               rtol=1e-12, atol=1e-12)


def test_affine_false_output_is_plain_normalization(rng):
    layer, ref = make_pair(cbn.BatchNorm2d, 3, np.float64, affine=False)
    x = data(rng, (4, 3, 2, 5), np.float64)
    assert_close(layer(x), ref.forward(x))
    dy = rng.standard_normal(x.shape)
    assert_close(layer.backward(dy), ref.backward(dy))


@pytest.mark.parametrize("dtype", DTYPES)
def test_untracked_layer_uses_batch_stats_in_both_modes(dtype, rng):
    layer, ref = make_pair(cbn.BatchNorm1d, 3, dtype, track_running_stats=False)
    set_params(layer, ref, rng)
    x = data(rng, (12, 3, 2), dtype, loc=4.0)
    y_train = layer(x)
    layer.eval()
    ref.training = False
    y_eval = layer(x)
    assert_close(y_train, ref.forward(x))
    assert_close(y_eval, ref.forward(x))
    assert layer.num_batches_tracked == 0
    assert layer.running_mean is None and layer.running_var is None


def test_input_is_not_modified(rng):
    x = data(rng, (8, 3, 4), np.float32)
    before = x.copy()
    layer = cbn.BatchNorm1d(3)
    y = layer(x)
    layer.backward(np.ones_like(y))
    layer.eval()(x)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make_view", [
    lambda a: a[::2],
    lambda a: a[:, :, ::-1],
    lambda a: np.asfortranarray(a),
    lambda a: a.transpose(0, 1, 3, 2),
], ids=["step-sliced", "reversed", "fortran", "transposed"])
def test_non_contiguous_input_equals_contiguous_copy(make_view, dtype, rng):
    view = make_view(data(rng, (8, 3, 5, 4), dtype))
    a, b = cbn.BatchNorm2d(3, dtype=dtype), cbn.BatchNorm2d(3, dtype=dtype)
    assert_close(a(view), b(np.ascontiguousarray(view)).astype(np.float64), dtype)
    dy = data(rng, view.shape, dtype)
    assert_close(a.backward(np.asfortranarray(dy)), b.backward(dy).astype(np.float64),
                 dtype)


def test_nan_poisons_only_its_own_feature(rng):
    x = data(rng, (10, 3), np.float64)
    x[4, 1] = np.nan
    layer = cbn.BatchNorm1d(3, dtype=np.float64)
    y = layer(x)
    assert np.all(np.isnan(y[:, 1]))
    assert np.all(np.isfinite(y[:, [0, 2]]))
    assert np.isnan(layer.running_mean[1]) and np.all(np.isfinite(layer.running_mean[[0, 2]]))


# Eval mode -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, shape", ND_CASES, ids=ND_IDS)
def test_eval_uses_running_stats(cls, shape, dtype, rng):
    layer, ref = make_pair(cls, shape[1], dtype)
    set_params(layer, ref, rng)
    for _ in range(3):
        x = data(rng, shape, dtype, loc=rng.normal(), scale=rng.uniform(0.5, 2))
        layer(x)
        ref.forward(x)
    layer.eval()
    ref.training = False
    x = data(rng, shape, dtype, loc=1.0, scale=3.0)
    snap = snapshot(layer)
    assert_close(layer(x), ref.forward(x))
    # Eval never touches the running statistics or the batch count.
    snap["dgamma"], snap["dbeta"] = layer.dgamma, layer.dbeta
    assert_unchanged(layer, snap)


def test_eval_output_is_the_affine_map_of_the_running_stats(rng):
    layer = cbn.BatchNorm1d(2, eps=1e-3, dtype=np.float64).eval()
    layer.running_mean[...] = [10.0, -1.0]
    layer.running_var[...] = [4.0, 0.25]
    layer.gamma[...] = [2.0, 1.0]
    layer.beta[...] = [0.0, 5.0]
    x = data(rng, (5, 2), np.float64)
    expected = (x - [10.0, -1.0]) / np.sqrt(np.array([4.0, 0.25]) + 1e-3) * [2, 1] + [0, 5]
    assert_rounding_close(layer(x), expected, scale=0)


def test_eval_accepts_a_single_value_per_channel(rng):
    layer = cbn.BatchNorm1d(3).eval()
    x = data(rng, (1, 3), np.float32)
    assert_close(layer(x), x.astype(np.float64) / np.sqrt(1 + 1e-5))


def test_train_and_eval_return_self_and_set_training():
    layer = cbn.BatchNorm1d(3)
    assert layer.eval() is layer and layer.training is False
    assert layer.train() is layer and layer.training is True
    assert layer.train(False) is layer and layer.training is False
    assert layer.train(True) is layer and layer.training is True


# Backward --------------------------------------------------------------------------

def ref_after_forward(layer, ref, x, training):
    layer.train(training)
    ref.training = training
    return layer(x), ref.forward(x)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, shape", ND_CASES, ids=ND_IDS)
def test_backward_matches_reference(cls, shape, dtype, training, rng):
    layer, ref = make_pair(cls, shape[1], dtype)
    set_params(layer, ref, rng)
    for _ in range(2):
        x = data(rng, shape, dtype, loc=rng.normal())
        layer(x)
        ref.forward(x)
    x = data(rng, shape, dtype, loc=-1.0, scale=2.0)
    ref_after_forward(layer, ref, x, training)
    dy = data(rng, shape, dtype)
    dx = layer.backward(dy)
    assert dx.shape == x.shape and dx.dtype == dtype
    m = x.size // shape[1]
    assert_close(dx, ref.backward(dy))
    assert_close(layer.dgamma, ref.dgamma, dtype, scale=m)
    assert_close(layer.dbeta, ref.dbeta, dtype, scale=m)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, feature_axis", AXIS_CASES[::2])
def test_general_layer_backward_matches_reference(shape, feature_axis, dtype, rng):
    layer, ref = make_pair(cbn.BatchNorm, shape[feature_axis], dtype,
                           feature_axis=feature_axis)
    set_params(layer, ref, rng)
    x = data(rng, shape, dtype)
    layer(x)
    ref.forward(x)
    dy = data(rng, shape, dtype)
    m = x.size // shape[feature_axis]
    assert_close(layer.backward(dy), ref.backward(dy))
    assert_close(layer.dgamma, ref.dgamma, dtype, scale=m)
    assert_close(layer.dbeta, ref.dbeta, dtype, scale=m)


def test_untracked_eval_backward_includes_batch_stat_paths(rng):
    layer, ref = make_pair(cbn.BatchNorm1d, 3, np.float64, track_running_stats=False)
    set_params(layer, ref, rng)
    x = data(rng, (9, 3), np.float64)
    ref_after_forward(layer, ref, x, training=False)
    dy = rng.standard_normal(x.shape)
    dx = layer.backward(dy)
    assert_close(dx, ref.backward(dy))
    # With batch statistics the gradient sums to zero over the batch.
    np.testing.assert_allclose(dx.sum(axis=0), 0, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_overwrites_gradients_instead_of_accumulating(dtype, rng):
    layer = cbn.BatchNorm2d(3, dtype=dtype)
    x = data(rng, (4, 3, 2, 2), dtype)
    layer(x)
    dy1 = data(rng, x.shape, dtype)
    dy2 = data(rng, x.shape, dtype)
    dx1 = layer.backward(dy1)
    g1, b1 = layer.dgamma.copy(), layer.dbeta.copy()
    dx1_again = layer.backward(dy1)
    np.testing.assert_array_equal(dx1_again, dx1)
    np.testing.assert_array_equal(layer.dgamma, g1)
    np.testing.assert_array_equal(layer.dbeta, b1)
    layer.backward(dy2)
    fresh = cbn.BatchNorm2d(3, dtype=dtype)
    fresh(x)
    fresh.backward(dy2)
    np.testing.assert_array_equal(layer.dgamma, fresh.dgamma)
    np.testing.assert_array_equal(layer.dbeta, fresh.dbeta)


def test_backward_uses_the_last_forward(rng):
    layer, ref = make_pair(cbn.BatchNorm1d, 3, np.float64)
    for shape in [(5, 3), (7, 3, 2)]:
        x = data(rng, shape, np.float64)
        layer(x)
        ref.forward(x)
    dy = rng.standard_normal((7, 3, 2))
    assert_close(layer.backward(dy), ref.backward(dy))
    with pytest.raises(ValueError):
        layer.backward(rng.standard_normal((5, 3)))


@pytest.mark.parametrize("mode", ["train", "eval", "eval-untracked"])
@pytest.mark.parametrize("cls, shape", [
    (cbn.BatchNorm1d, (5, 3)),
    (cbn.BatchNorm1d, (3, 2, 3)),
    (cbn.BatchNorm2d, (2, 3, 2, 2)),
    (cbn.BatchNorm3d, (2, 2, 2, 1, 2)),
], ids=["1d-2D", "1d-3D", "2d", "3d"])
def test_backward_matches_finite_differences(cls, shape, mode, rng):
    layer = cls(shape[1], dtype=np.float64, track_running_stats=mode != "eval-untracked")
    layer.gamma[...] = 1 + 0.5 * rng.standard_normal(shape[1])
    layer.beta[...] = rng.standard_normal(shape[1])
    if mode == "eval":
        layer.running_mean[...] = rng.standard_normal(shape[1])
        layer.running_var[...] = rng.uniform(0.5, 2, shape[1])
    layer.train(mode == "train")
    x = data(rng, shape, np.float64)
    w = rng.standard_normal(shape)   # loss = sum(w * y), so dy = w

    def loss():
        return float(np.sum(w * layer.forward(x)))

    num_dx = central_difference(loss, x)
    num_dgamma = central_difference(loss, layer.gamma)
    num_dbeta = central_difference(loss, layer.beta)
    layer.forward(x)
    dx = layer.backward(w)
    assert_matches_finite_differences(dx, num_dx)
    assert_matches_finite_differences(layer.dgamma, num_dgamma)
    assert_matches_finite_differences(layer.dbeta, num_dbeta)


@pytest.mark.parametrize("shape, feature_axis", [((4, 3), 0), ((2, 3, 3), -1),
                                                 ((2, 2, 3, 2), 2)])
def test_general_layer_backward_matches_finite_differences(shape, feature_axis, rng):
    c = shape[feature_axis]
    layer = cbn.BatchNorm(c, feature_axis=feature_axis, dtype=np.float64)
    layer.gamma[...] = 1 + 0.5 * rng.standard_normal(c)
    x = data(rng, shape, np.float64)
    w = rng.standard_normal(shape)

    def loss():
        return float(np.sum(w * layer.forward(x)))

    num_dx = central_difference(loss, x)
    num_dgamma = central_difference(loss, layer.gamma)
    layer.forward(x)
    assert_matches_finite_differences(layer.backward(w), num_dx)
    assert_matches_finite_differences(layer.dgamma, num_dgamma)


# Resets ------------------------------------------------------------------------------

def test_reset_running_stats_keeps_parameters(rng):
    layer = trained_layer(cbn.BatchNorm2d, (4, 3, 2, 2), np.float32, rng)
    gamma, beta = layer.gamma.copy(), layer.beta.copy()
    layer.reset_running_stats()
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)
    assert layer.num_batches_tracked == 0
    np.testing.assert_array_equal(layer.gamma, gamma)
    np.testing.assert_array_equal(layer.beta, beta)
    assert layer.running_mean.dtype == layer.running_var.dtype == np.float32


@pytest.mark.parametrize("dtype", DTYPES)
def test_reset_parameters_restores_initial_state(dtype, rng):
    layer = trained_layer(cbn.BatchNorm1d, (6, 3), dtype, rng)
    layer.reset_parameters()
    fresh = cbn.BatchNorm1d(3, dtype=dtype)
    for name in ["gamma", "beta", "running_mean", "running_var"]:
        a, b = getattr(layer, name), getattr(fresh, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert layer.num_batches_tracked == 0


def test_resets_are_harmless_without_affine_or_running_stats(rng):
    layer = cbn.BatchNorm1d(3, affine=False, track_running_stats=False)
    layer(data(rng, (4, 3), np.float32))
    layer.reset_running_stats()
    layer.reset_parameters()
    assert layer.gamma is None and layer.running_mean is None


def test_momentum_none_restarts_average_after_reset(rng):
    layer = cbn.BatchNorm1d(2, momentum=None, dtype=np.float64)
    layer(data(rng, (6, 2), np.float64, loc=50.0))
    layer.reset_running_stats()
    x = data(rng, (6, 2), np.float64)
    layer(x)
    np.testing.assert_allclose(layer.running_mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, x.var(axis=0, ddof=1), rtol=1e-12)


# state_dict ----------------------------------------------------------------------------

@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
def test_state_dict_has_pytorchs_keys(affine, track):
    layer = cbn.BatchNorm2d(3, affine=affine, track_running_stats=track)
    expected = (["weight", "bias"] if affine else []) + (
        ["running_mean", "running_var", "num_batches_tracked"] if track else [])
    sd = layer.state_dict()
    assert set(sd) == set(expected)
    assert all(isinstance(v, np.ndarray) for v in sd.values())


@pytest.mark.parametrize("dtype", DTYPES)
def test_state_dict_holds_current_values(dtype, rng):
    layer = trained_layer(cbn.BatchNorm1d, (6, 3, 2), dtype, rng, steps=4)
    sd = layer.state_dict()
    np.testing.assert_array_equal(sd["weight"], layer.gamma)
    np.testing.assert_array_equal(sd["bias"], layer.beta)
    np.testing.assert_array_equal(sd["running_mean"], layer.running_mean)
    np.testing.assert_array_equal(sd["running_var"], layer.running_var)
    assert int(sd["num_batches_tracked"]) == 4
    assert sd["num_batches_tracked"].dtype.kind in "iu"


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_load_state_dict_round_trip_reproduces_behaviour(affine, track, dtype, rng):
    shape = (6, 3, 4)
    a = trained_layer(cbn.BatchNorm1d, shape, dtype, rng, affine=affine,
                      track_running_stats=track)
    b = cbn.BatchNorm1d(3, affine=affine, track_running_stats=track, dtype=dtype)
    b.load_state_dict(a.state_dict())
    assert_same_state(a, b)
    x = data(rng, shape, dtype)
    for training in [False, True]:
        a.train(training)
        b.train(training)
        np.testing.assert_array_equal(a(x), b(x))
        assert_same_state(a, b)
    # b owns its arrays: training a further leaves b alone.
    before = snapshot(b)
    a(data(rng, shape, dtype, loc=9.0))
    if affine:
        a.gamma[...] += 1
    assert_unchanged(b, before)


def test_load_state_dict_keeps_layer_dtype(rng):
    layer = cbn.BatchNorm1d(2)
    layer.load_state_dict({"weight": np.array([2.0, 3.0]), "bias": np.array([1, 2]),
                           "running_mean": [0.5, 0.25], "running_var": (2.0, 4.0),
                           "num_batches_tracked": 7})
    for name in ["gamma", "beta", "running_mean", "running_var"]:
        assert getattr(layer, name).dtype == np.float32
    np.testing.assert_array_equal(layer.gamma, [2, 3])
    np.testing.assert_array_equal(layer.running_var, [2, 4])
    assert layer.num_batches_tracked == 7


def assert_same_state(a, b):
    for name in ["gamma", "beta", "running_mean", "running_var"]:
        va, vb = getattr(a, name), getattr(b, name)
        if va is None:
            assert vb is None, name
        else:
            assert va.dtype == vb.dtype, name
            np.testing.assert_array_equal(va, vb, err_msg=name)
            assert not np.shares_memory(va, vb), name
    assert a.num_batches_tracked == b.num_batches_tracked


# pickle and deepcopy ----------------------------------------------------------------------

def pickle_round_trip(layer):
    return pickle.loads(pickle.dumps(layer))


@pytest.mark.parametrize("clone", [pickle_round_trip, copy.deepcopy], ids=["pickle", "deepcopy"])
@pytest.mark.parametrize("cls, shape, kwargs", [
    (cbn.BatchNorm1d, (8, 3), {}),
    (cbn.BatchNorm2d, (4, 3, 2, 2), {"momentum": None, "eps": 1e-3}),
    (cbn.BatchNorm3d, (2, 3, 2, 2, 2), {"affine": False}),
    (cbn.BatchNorm1d, (8, 3, 2), {"track_running_stats": False}),
    (cbn.BatchNorm, (4, 2, 2, 3), {"feature_axis": -1}),
    (cbn.BatchNorm, (3, 5, 2), {"feature_axis": 0, "momentum": 0.7}),
], ids=["1d", "2d-cumulative", "3d-no-affine", "1d-untracked", "nhwc", "axis0"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_clone_has_equal_state_and_behaviour(clone, cls, shape, kwargs, dtype,
                                             training, rng):
    layer = trained_layer(cls, shape, dtype, rng, **kwargs)
    layer.train(training)
    c = clone(layer)
    assert type(c) is cls
    assert repr(c) == repr(layer)
    for name in ["eps", "momentum", "affine", "track_running_stats", "training"]:
        assert getattr(c, name) == getattr(layer, name), name
    assert_same_state(layer, c)
    x = data(rng, shape, dtype, loc=2.0)
    np.testing.assert_array_equal(c(x), layer(x))
    dy = data(rng, shape, dtype)
    np.testing.assert_array_equal(c.backward(dy), layer.backward(dy))
    assert_same_state(layer, c)
    # A further training step gives both the same running statistics.
    c.train()
    layer.train()
    x = data(rng, shape, dtype, loc=-3.0)
    np.testing.assert_array_equal(c(x), layer(x))
    assert_same_state(layer, c)


@pytest.mark.parametrize("clone", [pickle_round_trip, copy.deepcopy], ids=["pickle", "deepcopy"])
def test_clone_is_independent_of_original(clone, rng):
    layer = trained_layer(cbn.BatchNorm1d, (8, 3), np.float32, rng)
    c = clone(layer)
    before = snapshot(layer)
    c.gamma[...] = 5
    c.beta[...] = -5
    c(data(rng, (8, 3), np.float32, loc=100.0))
    c.eval()
    assert_unchanged(layer, before)
    assert layer.training is True


# Bad input: a clear error, nothing changed -------------------------------------------------

def used_layer(cls, shape, dtype, rng, **kwargs):
    """A layer after training steps and a backward, so every piece of state is set."""
    layer = trained_layer(cls, shape, dtype, rng, **kwargs)
    y = layer(data(rng, shape, dtype))
    layer.backward(data(rng, y.shape, dtype))
    return layer


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layer_dtype, x_dtype", [
    (np.float32, np.float64), (np.float64, np.float32), (np.float32, np.float16),
    (np.float32, np.int32), (np.float64, np.int64), (np.float64, np.bool_),
    (np.float64, np.complex128),
])
def test_input_dtype_other_than_layers_raises_type_error(layer_dtype, x_dtype,
                                                         training, rng):
    layer = used_layer(cbn.BatchNorm1d, (6, 3), layer_dtype, rng).train(training)
    x = data(rng, (6, 3), np.float64).astype(x_dtype)
    assert_raises_unchanged(TypeError, layer, "forward", x)
    assert_raises_unchanged(TypeError, layer, "__call__", x)


@pytest.mark.parametrize("cls, good, bad, message", [
    (cbn.BatchNorm1d, (6, 3), (6,), "expected 2D or 3D input (got 1D input)"),
    (cbn.BatchNorm1d, (6, 3), (2, 3, 2, 2), "expected 2D or 3D input (got 4D input)"),
    (cbn.BatchNorm2d, (2, 3, 2, 2), (6, 3, 4), "expected 4D input (got 3D input)"),
    (cbn.BatchNorm2d, (2, 3, 2, 2), (2, 3, 2, 2, 2), "expected 4D input (got 5D input)"),
    (cbn.BatchNorm2d, (2, 3, 2, 2), (6, 3), "expected 4D input (got 2D input)"),
    (cbn.BatchNorm3d, (2, 3, 2, 2, 2), (2, 3, 2, 2), "expected 5D input (got 4D input)"),
    (cbn.BatchNorm3d, (2, 3, 2, 2, 2), (2, 3, 2, 2, 2, 1),
     "expected 5D input (got 6D input)"),
], ids=["1d-1D", "1d-4D", "2d-3D", "2d-5D", "2d-2D", "3d-4D", "3d-6D"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_wrong_ndim_raises_value_error_like_pytorch(cls, good, bad, message,
                                                   training, rng):
    layer = used_layer(cls, good, np.float32, rng).train(training)
    assert_raises_unchanged(ValueError, layer, "forward", data(rng, bad, np.float32),
                            match=message.replace("(", r"\(").replace(")", r"\)"))


@pytest.mark.parametrize("shape", [(3,), ()])
def test_general_layer_rejects_input_below_2d(shape, rng):
    layer = used_layer(cbn.BatchNorm, (4, 3), np.float64, rng)
    assert_raises_unchanged(ValueError, layer, "forward", np.ones(shape))


@pytest.mark.parametrize("feature_axis, shape", [(2, (4, 3)), (-3, (4, 3)), (5, (2, 3, 2, 2, 2)),
                                                 (-6, (2, 3, 2, 2, 2))])
def test_feature_axis_out_of_range_raises_value_error(feature_axis, shape, rng):
    layer = cbn.BatchNorm(3, feature_axis=feature_axis)
    assert_raises_unchanged(ValueError, layer, "forward", data(rng, shape, np.float32))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cls, good, bad, kwargs", [
    (cbn.BatchNorm1d, (6, 3), (6, 4), {}),
    (cbn.BatchNorm1d, (6, 3, 2), (6, 2, 3), {}),
    (cbn.BatchNorm2d, (2, 3, 2, 2), (2, 2, 3, 2), {}),
    (cbn.BatchNorm3d, (2, 3, 2, 2, 2), (2, 1, 2, 2, 2), {}),
    (cbn.BatchNorm, (4, 2, 3), (4, 3, 2), {"feature_axis": -1}),
    (cbn.BatchNorm, (3, 4), (4, 3), {"feature_axis": 0}),
], ids=["1d", "1d-3D", "2d", "3d", "nhwc", "axis0"])
def test_wrong_channel_count_raises_value_error(cls, good, bad, kwargs, training, rng):
    layer = used_layer(cls, good, np.float32, rng, **kwargs).train(training)
    assert_raises_unchanged(ValueError, layer, "forward", data(rng, bad, np.float32))


@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("cls, good, bad", [
    (cbn.BatchNorm1d, (6, 3), (1, 3)),
    (cbn.BatchNorm1d, (6, 3, 2), (1, 3, 1)),
    (cbn.BatchNorm2d, (2, 3, 2, 2), (1, 3, 1, 1)),
    (cbn.BatchNorm3d, (2, 3, 2, 2, 2), (1, 3, 1, 1, 1)),
], ids=["1d", "1d-3D", "2d", "3d"])
def test_single_value_per_channel_in_training_raises_value_error(cls, good, bad,
                                                                 track, rng):
    layer = used_layer(cls, good, np.float32, rng, track_running_stats=track)
    assert_raises_unchanged(
        ValueError, layer, "forward", data(rng, bad, np.float32),
        match="^Expected more than 1 value per channel when training")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cls, good, bad", [
    (cbn.BatchNorm1d, (6, 3), (0, 3)),
    (cbn.BatchNorm1d, (6, 3, 2), (6, 3, 0)),
    (cbn.BatchNorm2d, (2, 3, 2, 2), (0, 3, 2, 2)),
    (cbn.BatchNorm3d, (2, 3, 2, 2, 2), (2, 3, 2, 0, 2)),
], ids=["1d", "1d-3D", "2d", "3d"])
def test_empty_batch_with_batch_stats_raises_value_error(cls, good, bad, training, rng):
    # Batch statistics are needed in training, and in eval without running stats.
    layer = used_layer(cls, good, np.float32, rng, track_running_stats=training)
    layer.train(training)
    assert_raises_unchanged(ValueError, layer, "forward", np.zeros(bad, np.float32))


@pytest.mark.parametrize("cls, shape", ND_CASES, ids=ND_IDS)
@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"track_running_stats": False}])
def test_backward_before_forward_raises_runtime_error(cls, shape, kwargs, rng):
    layer = cls(shape[1], **kwargs)
    assert_raises_unchanged(RuntimeError, layer, "backward", data(rng, shape, np.float32))


def test_backward_after_only_failed_forward_raises_runtime_error(rng):
    layer = cbn.BatchNorm1d(3)
    with pytest.raises(ValueError):
        layer(data(rng, (1, 3), np.float32))
    assert_raises_unchanged(RuntimeError, layer, "backward", data(rng, (1, 3), np.float32))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cls, shape, bad", [
    (cbn.BatchNorm1d, (6, 3), (6, 4)),
    (cbn.BatchNorm1d, (6, 3), (3, 6)),
    (cbn.BatchNorm1d, (6, 3), (5, 3)),
    (cbn.BatchNorm1d, (6, 3), (6, 3, 1)),
    (cbn.BatchNorm1d, (6, 3), (18,)),
    (cbn.BatchNorm2d, (2, 3, 2, 2), (2, 3, 4)),
    (cbn.BatchNorm2d, (2, 3, 2, 2), (2, 3, 2, 1)),
    (cbn.BatchNorm, (4, 2, 3), (4, 3, 2)),
], ids=["channels", "transposed", "batch", "extra-dim", "flat", "merged", "spatial",
        "general"])
def test_dy_of_wrong_shape_raises_value_error(cls, shape, bad, training, rng):
    kwargs = {"feature_axis": -1} if cls is cbn.BatchNorm else {}
    layer = used_layer(cls, shape, np.float32, rng, **kwargs).train(training)
    layer(data(rng, shape, np.float32))
    assert_raises_unchanged(ValueError, layer, "backward", data(rng, bad, np.float32))
    # The layer still works afterwards.
    layer.backward(data(rng, shape, np.float32))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dy_dtype", [np.float64, np.float16, np.int32, np.complex64])
def test_dy_of_wrong_dtype_raises_type_error(dy_dtype, training, rng):
    layer = used_layer(cbn.BatchNorm1d, (6, 3), np.float32, rng).train(training)
    layer(data(rng, (6, 3), np.float32))
    assert_raises_unchanged(TypeError, layer, "backward",
                            data(rng, (6, 3), np.float64).astype(dy_dtype))


@pytest.mark.parametrize("name, value, exc", [
    ("eps", -1e-5, ValueError), ("eps", np.nan, ValueError), ("eps", "x", TypeError),
    ("eps", None, TypeError),
    ("momentum", 1.5, ValueError), ("momentum", -0.1, ValueError),
    ("momentum", np.nan, ValueError), ("momentum", "x", TypeError),
    ("num_batches_tracked", -1, ValueError), ("num_batches_tracked", 2.5, TypeError),
    ("num_batches_tracked", np.inf, TypeError), ("num_batches_tracked", 1e300, TypeError),
    ("num_batches_tracked", 2**63, ValueError), ("num_batches_tracked", np.nan, TypeError),
    ("num_batches_tracked", 2.0, TypeError),
    ("gamma", np.ones(4), ValueError), ("gamma", np.ones((1, 3)), ValueError),
    ("gamma", np.ones(3, np.complex64), TypeError), ("beta", [1.0, 2.0], ValueError),
    ("running_mean", np.ones(2), ValueError), ("running_var", "abc", TypeError),
    ("running_var", np.ones(3, dtype=object), TypeError),
])
def test_bad_attribute_value_raises_and_changes_nothing(name, value, exc, rng):
    layer = used_layer(cbn.BatchNorm1d, (6, 3), np.float32, rng)
    assert_raises_unchanged(exc, layer, "__setattr__", name, value)


@pytest.mark.parametrize("name", ["gamma", "beta", "running_mean", "running_var"])
def test_setting_an_absent_parameter_raises_attribute_error(name, rng):
    layer = used_layer(cbn.BatchNorm1d, (6, 3), np.float32, rng, affine=False,
                       track_running_stats=False)
    assert_raises_unchanged(AttributeError, layer, "__setattr__", name, np.ones(3))


def _state_with(layer, **changes):
    state = layer.state_dict()
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


@pytest.mark.parametrize("change, exc", [
    ({"weight": np.ones(4)}, ValueError), ({"bias": np.ones((3, 1))}, ValueError),
    ({"running_mean": np.ones(2)}, ValueError),
    ({"running_var": np.ones(3, np.complex128)}, TypeError), ({"weight": "abc"}, TypeError),
    ({"num_batches_tracked": np.array(-1)}, ValueError),
    ({"num_batches_tracked": np.array(2.0)}, ValueError),
    ({"num_batches_tracked": np.array([1, 2])}, ValueError),
    ({"num_batches_tracked": np.array(2**64 - 1, np.uint64)}, ValueError),
    ({"num_batches_tracked": np.array(2**63, np.uint64)}, ValueError),
    ({"extra": np.ones(3)}, ValueError), ({"running_var": None}, ValueError),
], ids=["weight-shape", "bias-2d", "mean-shape", "var-complex", "weight-str",
        "count-negative", "count-float", "count-shape", "count-uint64-max",
        "count-2**63", "extra-key", "missing-key"])
def test_bad_state_dict_raises_and_loads_nothing(change, exc, rng):
    layer = used_layer(cbn.BatchNorm1d, (6, 3), np.float32, rng)
    bad = _state_with(layer, **change)
    # Valid entries that would visibly change the layer if they were loaded
    # before the bad one is noticed (the count is checked last).
    for key in ("weight", "bias", "running_mean"):
        if key not in change:
            bad[key] = bad[key] + 5
    assert_raises_unchanged(exc, layer, "load_state_dict", bad)
