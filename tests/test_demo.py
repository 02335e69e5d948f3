"""The main job, ``python -m cbn demo`` (cbn/_demo.py and cbn/__main__.py).

The demo must show what it claims (the batch-norm run descends faster than
the plain one from the same start), be reproducible, compute honest
gradients, and its command line must work as documented, ``--plot``
included with and without matplotlib.
"""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import cbn
from cbn import _demo
from cbn.__main__ import main
from checks import assert_matches_finite_differences
from oracle import central_difference

REPO_ROOT = pathlib.Path(cbn.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def short_run():
    return _demo.run_demo(epochs=3)


def test_batch_norm_run_ends_with_lower_loss(short_run):
    plain, bn = short_run.plain, short_run.bn
    assert len(plain.loss) == len(bn.loss) == 3
    assert np.all(np.isfinite(plain.loss)) and np.all(np.isfinite(bn.loss))
    assert bn.loss[-1] < plain.loss[-1]
    assert bn.loss[-1] < bn.loss[0]


def test_default_demo_shows_a_clear_win():
    result = _demo.run_demo()
    plain, bn = result.plain, result.bn
    assert len(bn.loss) == _demo.DEFAULT_EPOCHS
    assert all(b < p for b, p in zip(bn.loss, plain.loss)), "batch norm behind in some epoch"
    assert bn.loss[-1] < 0.5 * plain.loss[-1]
    assert bn.test_accuracy > plain.test_accuracy + 0.25
    assert bn.test_accuracy > 0.75


def test_demo_is_reproducible(short_run):
    again = _demo.run_demo(epochs=3)
    assert again.plain.loss == short_run.plain.loss
    assert again.bn.loss == short_run.bn.loss
    assert again.bn.test_accuracy == short_run.bn.test_accuracy


def test_seed_changes_the_problem(short_run):
    other = _demo.run_demo(epochs=3, seed=1)
    assert other.bn.loss != short_run.bn.loss


def test_problem_is_badly_scaled_and_balanced():
    x, y, x_test, y_test = _demo.make_problem(np.random.default_rng(0))
    assert x.dtype == np.float32 and x.shape[0] == y.shape[0]
    std = x.std(axis=0)
    assert std.max() / std.min() > 30
    assert np.abs(x.mean(axis=0)).min() > 50          # large offsets
    counts = np.bincount(y)
    assert counts.min() > 0.1 * len(y)                 # every class well represented


def test_networks_start_from_the_same_weights_and_do_not_share_them():
    rng = np.random.default_rng(0)
    params = _demo.init_params(rng, (8, 16, 16, 3))
    plain = _demo.MLP(params, batch_norm=False)
    bn = _demo.MLP(params, batch_norm=True)
    for a, b, p in zip(plain.params, bn.params, params):
        np.testing.assert_array_equal(a["w"], p["w"])
        np.testing.assert_array_equal(b["w"], p["w"])
        assert not np.shares_memory(a["w"], b["w"]) and not np.shares_memory(a["w"], p["w"])


@pytest.mark.parametrize("batch_norm,fused", [(False, False), (True, False), (True, True)],
                         ids=["plain", "batchnorm", "batchnorm-relu-fused"])
def test_mlp_gradients_match_finite_differences(batch_norm, fused):
    # float64 weights make the network (and its BatchNorm1d layers) float64.
    rng = np.random.default_rng(3)
    params = _demo.init_params(rng, (4, 5, 6, 3))
    params = [{k: v.astype(np.float64) for k, v in layer.items()} for layer in params]
    model = _demo.MLP(params, batch_norm=batch_norm, fused=fused)
    for bn in model.norms:
        bn.gamma[...] = 1 + 0.3 * rng.standard_normal(bn.gamma.shape)
        bn.beta[...] = 0.3 * rng.standard_normal(bn.beta.shape)
    x = rng.standard_normal((7, 4))
    y = rng.integers(0, 3, 7)

    def loss():
        return _demo.cross_entropy(model.forward(x), y)[0]

    _, dlogits = _demo.cross_entropy(model.forward(x), y)
    grads = model.backward(dlogits)
    assert len(grads) == 6 + (4 if batch_norm else 0)
    for name, p, g in grads:
        assert_matches_finite_differences(g, central_difference(loss, p), err_msg=name)


def test_optimizer_updates_the_layers_own_parameters():
    # The demo trains gamma/beta by updating the arrays the layer hands out;
    # the update must reach the layer.
    rng = np.random.default_rng(0)
    model = _demo.MLP(_demo.init_params(rng, (4, 8, 8, 3)), batch_norm=True)
    x = rng.standard_normal((16, 4)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    _, dlogits = _demo.cross_entropy(model.forward(x), y)
    _demo.SGD(lr=0.1, momentum=0.0, clip=1e9).step(model.backward(dlogits))
    assert not np.all(model.norms[0].gamma == 1)
    assert not np.all(model.norms[0].beta == 0)


def test_report_has_a_row_per_epoch_and_both_accuracies(short_run):
    text = _demo.format_report(short_run)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["epoch"])
    assert "plain" in lines[header] and "BatchNorm1d" in lines[header]
    for epoch in range(1, 4):
        cells = lines[header + epoch].split()
        assert int(cells[0]) == epoch
        assert float(cells[1]) == pytest.approx(short_run.plain.loss[epoch - 1], abs=1e-4)
        assert float(cells[2]) == pytest.approx(short_run.bn.loss[epoch - 1], abs=1e-4)
    assert any(line.split()[:1] == ["train"] for line in lines)
    assert any(line.split()[:1] == ["test"] for line in lines)


def test_cli_demo_exits_zero_and_prints_the_table():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "cbn", "demo", "--epochs", "2"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["epoch"])
    assert "plain" in lines[header] and "BatchNorm1d" in lines[header]
    assert [lines[header + k].split()[0] for k in (1, 2)] == ["1", "2"]
    plain_loss, bn_loss = map(float, lines[header + 2].split()[1:3])
    assert bn_loss < plain_loss
    assert "accuracy" in proc.stdout


def test_cli_main_returns_zero(capsys):
    assert main(["demo", "--epochs", "1", "--seed", "2"]) == 0
    assert "BatchNorm1d" in capsys.readouterr().out


def test_float64_demo_trains_in_float64(capsys):
    """--float64 runs the same training in float64: the first epoch's losses
    agree with float32's to float32 rounding (amplified a little)."""
    from cbn._demo import run_demo
    r64 = run_demo(epochs=1, dtype=np.float64)
    r32 = run_demo(epochs=1)
    assert r64.bn.loss[0] == pytest.approx(r32.bn.loss[0], rel=1e-3)
    assert r64.bn.loss != r32.bn.loss
    assert main(["demo", "--epochs", "1", "--float64"]) == 0
    assert "BatchNorm1d" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["demo", "--epochs", "0"], ["demo", "--epochs", "x"],
                                  ["nonsense"]])
def test_cli_rejects_bad_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_cli_help_lists_the_demo(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_plot_without_matplotlib_fails_before_training(tmp_path, monkeypatch, capsys):
    # A None entry in sys.modules makes ``import matplotlib`` raise ImportError,
    # whether or not matplotlib is installed.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    target = tmp_path / "loss.png"
    assert main(["demo", "--epochs", "1", "--plot", str(target)]) == 1
    out, err = capsys.readouterr()
    assert "matplotlib" in err
    assert "epoch" not in out, "the demo trained although it could not plot"
    assert not target.exists()


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    target = tmp_path / "loss.png"
    assert main(["demo", "--epochs", "2", "--plot", str(target)]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(target) in capsys.readouterr().out


def test_fused_relu_gives_the_unfused_runs_numbers_bit_for_bit(short_run):
    # The default run fuses each ReLU into its BatchNorm1d; the separate
    # steps (BatchNorm1d, then numpy.maximum, and the mask a > 0 in
    # backward) must train the same network to the same bits.
    assert short_run.settings["fused"]
    unfused = _demo.run_demo(epochs=3, fused=False)
    assert unfused.bn.loss == short_run.bn.loss
    assert unfused.bn.test_accuracy == short_run.bn.test_accuracy
    assert unfused.plain.loss == short_run.plain.loss
    assert "fused" in _demo.format_report(short_run)


@pytest.mark.parametrize("fused", [True, False])
def test_mlp_layers_fuse_the_relu_when_asked(fused):
    rng = np.random.default_rng(0)
    model = _demo.MLP(_demo.init_params(rng, (4, 8, 8, 3)), batch_norm=True, fused=fused)
    assert [bn.activation for bn in model.norms] == ["relu" if fused else None] * 2
