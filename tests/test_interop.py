"""Arrays of other libraries (cbn/_interop.py): torch tensors and other
DLPack arrays, pandas DataFrames and Series, in and out of normalize_batch,
normalize_batch_backward and zscore. The oracle is the same call on the
NumPy array of the same values: the results must be equal bit for bit, and
of the input's kind."""
import numpy as np
import pytest

import cbn


class Wrapped:
    """A minimal array-API array around an ndarray: DLPack out, and a
    namespace whose from_dlpack wraps again -- the protocol cbn relies on,
    without any third-party library."""

    def __init__(self, a, device=(1, 0)):
        self.a = a
        self.device = device

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.device

    def __array_namespace__(self, api_version=None):
        return WrappedNamespace


class WrappedNamespace:
    @staticmethod
    def from_dlpack(x):
        return Wrapped(np.from_dlpack(x))


def test_array_api_object_comes_back_through_its_namespace(rng):
    x = rng.standard_normal((6, 3)).astype(np.float32)
    y = cbn.normalize_batch(Wrapped(x))
    assert isinstance(y, Wrapped)
    assert y.a.tobytes() == cbn.normalize_batch(x).tobytes()
    z = cbn.zscore(Wrapped(x), ddof=1)
    assert isinstance(z, Wrapped)
    assert z.a.tobytes() == cbn.zscore(x, ddof=1).tobytes()


def test_array_on_a_gpu_raises_type_error_naming_the_device(rng):
    x = Wrapped(rng.standard_normal((6, 3)), device=(2, 1))
    for call in (cbn.normalize_batch, cbn.zscore):
        with pytest.raises(TypeError, match=r"is on cuda:1; cbn computes on the CPU"):
            call(x)


def test_lists_and_ndarray_subclasses_stay_numpy(rng):
    assert type(cbn.zscore([[1.0, 2.0], [3.0, 5.0]])) is np.ndarray
    sub = np.array([[1.0, 2.0], [3.0, 5.0]]).view(type("Sub", (np.ndarray,), {}))
    assert type(cbn.normalize_batch(sub)) is np.ndarray


# ------------------------------------------------------------------ torch --

@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
def test_torch_tensor_in_torch_tensor_out(rng, dtype, channels_last):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((8, 3, 4, 5)).astype(dtype)
    t = torch.from_numpy(x)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    x = t.numpy()  # the same memory layout: the same kernels, bit for bit
    gamma, beta = rng.uniform(0.5, 2.0, 3), rng.standard_normal(3)
    y, mean, var = cbn.normalize_batch(t, gamma, beta, axis=(0, 2, 3), return_stats=True)
    y_np, mean_np, var_np = cbn.normalize_batch(x, gamma, beta, axis=(0, 2, 3),
                                                return_stats=True)
    assert isinstance(y, torch.Tensor) and y.dtype == getattr(torch, dtype)
    assert y.numpy().tobytes() == y_np.tobytes()
    assert isinstance(mean, np.ndarray) and mean.tobytes() == mean_np.tobytes()
    dy = torch.from_numpy(rng.standard_normal(x.shape).astype(dtype))
    dx, dgamma, dbeta = cbn.normalize_batch_backward(dy, t, mean, var, gamma,
                                                     axis=(0, 2, 3))
    ref = cbn.normalize_batch_backward(dy.numpy(), x, mean, var, gamma, axis=(0, 2, 3))
    assert isinstance(dx, torch.Tensor) and dx.numpy().tobytes() == ref[0].tobytes()
    assert dgamma.tobytes() == ref[1].tobytes()
    z = cbn.zscore(t, axis=(0, 2, 3), nan_policy="omit")
    assert isinstance(z, torch.Tensor)
    assert z.numpy().tobytes() == cbn.zscore(x, axis=(0, 2, 3)).tobytes()


def test_torch_tensor_is_read_without_a_copy():
    # numpy.from_dlpack views the tensor's memory: the result reflects what
    # the tensor held when the call was made, and a change to the tensor
    # shows in the NumPy view cbn reads.
    torch = pytest.importorskip("torch")
    from cbn._interop import foreign
    t = torch.arange(12.0).reshape(4, 3)
    arr, wrap = foreign(t, "x")
    t[0, 0] = 100.0
    assert arr[0, 0] == 100.0
    assert isinstance(wrap(np.zeros(2)), torch.Tensor)


def test_torch_tensor_requiring_grad_raises_type_error():
    torch = pytest.importorskip("torch")
    t = torch.ones(4, 3, requires_grad=True)
    for call in (cbn.normalize_batch, cbn.zscore):
        with pytest.raises(TypeError, match=r"requires grad.*x?\.detach\(\)"):
            call(t)
    with pytest.raises(TypeError, match=r"^dy requires grad"):
        cbn.normalize_batch_backward(t, t.detach(), np.zeros(3), np.ones(3))


def test_torch_bfloat16_raises_type_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"cannot be read as a NumPy array through DLPack"):
        cbn.zscore(torch.ones(4, 3, dtype=torch.bfloat16))


# ----------------------------------------------------------------- pandas --

def test_dataframe_in_dataframe_out():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [2.0, np.nan, 3.0, 9.0]},
                      index=list("wxyz"))
    z = cbn.zscore(df, nan_policy="omit")
    assert isinstance(z, pd.DataFrame)
    assert list(z.index) == list("wxyz") and list(z.columns) == ["a", "b"]
    assert z.to_numpy().tobytes() == cbn.zscore(df.to_numpy(), nan_policy="omit").tobytes()
    y = cbn.normalize_batch(df, eps=0, nan_policy="omit")
    assert isinstance(y, pd.DataFrame) and y.to_numpy().tobytes() == z.to_numpy().tobytes()
    s = cbn.zscore(df["a"], ddof=1)
    assert isinstance(s, pd.Series) and s.name == "a" and list(s.index) == list("wxyz")
    np.testing.assert_array_equal(s.to_numpy(), cbn.zscore(df["a"].to_numpy(), ddof=1))
