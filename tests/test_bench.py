"""The benchmark's command line, ``python -m cbn bench`` (cbn/bench/).

A smoke test only: timings depend on the machine and on what else runs on
it, so nothing here asserts a speed. It checks that a quick run measures
every case and writes well-formed numbers, and that the options behave as
documented, ``--plot`` included with and without matplotlib.
"""
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import cbn
from cbn.bench.cases import CASES, QUICK, select_cases
from cbn.bench.variants import (CBN_VARIANTS, FUSED_VARIANTS, NAN_VARIANTS, OPERATIONS,
                                TORCH_VARIANTS)
from cbn.__main__ import main

REPO_ROOT = pathlib.Path(cbn.__file__).resolve().parent.parent
THREADS = (1, 2)


def run_cli(*argv, timeout=120):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "cbn", "bench", *argv], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run through the command line: its output and JSON."""
    target = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = run_cli("--quick", "--threads", ",".join(map(str, THREADS)),
                   "--json", str(target))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(target.read_text())


def test_quick_run_measures_every_case_at_every_thread_count(quick_run):
    _, result = quick_run
    expected = [c.name for c in select_cases(quick=True)]
    assert len(expected) == len(CASES) - sum(c.large for c in CASES) == len(CASES) - 2
    for n in THREADS:
        assert [r["case"] for r in result["records"] if r["threads"] == n] == expected
    assert result["meta"]["threads"] == list(THREADS)
    assert result["meta"]["simd"] in result["meta"]["simd_levels"]


def test_records_hold_positive_finite_numbers(quick_run):
    _, result = quick_run
    variants = ["floor", *CBN_VARIANTS]
    if result["meta"]["torch"]:
        variants += TORCH_VARIANTS
    for r in result["records"]:
        assert set(r["seconds"]) == set(variants)
        assert set(r["ratio_to_floor"]) == set(variants) - {"floor"}
        stats = list(r["seconds"].values()) + list(r["ratio_to_floor"].values())
        if result["meta"]["torch"]:
            assert set(r["speedup_over_torch"]) == set(OPERATIONS)
            stats += list(r["speedup_over_torch"].values())
        else:
            assert "speedup_over_torch" not in r
        for s in stats:
            assert len(s["rounds"]) == QUICK.rounds
            assert s["min"] <= s["median"] <= s["max"]
            for value in [s["median"], s["min"], s["max"], *s["rounds"]]:
                assert math.isfinite(value) and value > 0
        assert math.isfinite(r["gbps_train"]) and r["gbps_train"] > 0


@pytest.mark.skipif(not has_torch(), reason="torch is not installed")
def test_torch_computes_what_cbn_computes(quick_run):
    # Otherwise the comparison would be between two different operations.
    _, result = quick_run
    for r in result["records"]:
        for op, diff in r["max_abs_diff_vs_torch"].items():
            assert diff < 1e-3, (r["label"], op)


def test_report_has_a_table_per_thread_count(quick_run):
    out, result = quick_run
    assert result["meta"]["cpu"] in out and result["meta"]["simd"] in out
    assert f"cbn tuning profile: {result['meta']['cpu_profile']}" in out
    lines = out.splitlines()
    for n in THREADS:
        start = lines.index(f"threads: {n}")
        rows = lines[start + 3:start + 3 + len(select_cases(quick=True))]
        assert [row.split(" (")[0] for row in rows] == [
            c.title for c in select_cases(quick=True)]
    assert "µs" in next(line for line in lines if line.startswith("tiny"))


def test_case_filter_and_bad_options(capsys):
    assert [c.name for c in select_cases(patterns=["F64"])] == [
        "2d-wide-f64", "nchw-f64", "table-f64"]
    assert not {"nchw-large", "2d-large"} & {c.name for c in select_cases(quick=True)}
    assert main(["bench", "--cases", "no-such-case"]) == 2
    assert "no case matches" in capsys.readouterr().err
    for argv in (["--threads", "0"], ["--threads", "x"], ["--threads", ""]):
        with pytest.raises(SystemExit) as exit_info:
            main(["bench", *argv])
        assert exit_info.value.code == 2


def test_plot_without_matplotlib_fails_before_measuring(tmp_path, monkeypatch, capsys):
    # A None entry in sys.modules makes ``import matplotlib`` raise ImportError,
    # whether or not matplotlib is installed.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    target = tmp_path / "bars.png"
    assert main(["bench", "--quick", "--plot", str(target)]) == 1
    out, err = capsys.readouterr()
    assert "matplotlib" in err
    assert "threads:" not in out, "the benchmark ran although it could not plot"
    assert not target.exists()


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "bars.png"
    proc = run_cli("--quick", "--cases", "2d-tall,tiny", "--threads", "1",
                   "--plot", str(target))
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(target) in proc.stdout


def test_bounds_probe_builds_and_reports_every_pass(tmp_path):
    """tools/bounds/ (the least-work loops quoted beside the benchmark's
    targets) still compiles warning-free and prints every pass as a finite,
    positive multiple of the copy, at each level it has that the CPU runs."""
    import re
    import shutil
    sources = sorted((REPO_ROOT / "tools" / "bounds").glob("*.c"))
    if not sources:
        pytest.skip("tools/bounds/ is not in this tree (installed from a wheel)")
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    from cbn import kernels
    levels = [lv for lv in ("avx2", "avx512") if lv in kernels.simd_levels()]
    if not levels:
        pytest.skip("the probe's loops need AVX2 and FMA, or AVX-512F")
    exe = tmp_path / "bounds"
    build = subprocess.run(["gcc", "-O3", "-Wall", "-Wextra", "-Werror", "-std=c11",
                            "-I", str(REPO_ROOT / "src_c"), "-o", str(exe),
                            *map(str, sources)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    for level in levels:
        run = subprocess.run([str(exe), "4,8,512", "512,32,1"], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "CBN_SIMD": level})
        assert run.returncode == 0, run.stderr
        assert run.stdout.count(f"{level} loops") == 2, run.stdout
        ratios = re.findall(r"^\s+(\S+)\s+([0-9.]+)x the copy", run.stdout, re.M)
        assert sorted({name for name, _ in ratios}) == sorted(
            ["stats", "norm", "norm-nt", "train", "backward"]), run.stdout
        assert len(ratios) == 10 and all(0 < float(r) < 1e3 for _, r in ratios), run.stdout


def test_fused_group_times_the_fused_forward_against_its_steps(tmp_path):
    target = tmp_path / "bench.json"
    proc = run_cli("--quick", "--threads", "1", "--cases", "2d-tall,tiny", "--fused",
                   "--no-torch", "--json", str(target))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(target.read_text())
    assert result["meta"]["fused"] is True
    table = proc.stdout[proc.stdout.index("fused forward and backward, threads: 1"):].splitlines()
    by_case = {r["case"]: r for r in result["records"]}
    tall, tiny = by_case["2d-tall"], by_case["tiny"]
    assert "fused" not in tiny and not set(FUSED_VARIANTS) & set(tiny["seconds"])
    assert set(FUSED_VARIANTS) <= set(tall["seconds"])
    assert set(tall["fused"]) == {"relu_vs_plain", "steps_vs_relu", "res_relu_vs_plain",
                                  "steps_vs_res_relu", "bwd_relu_vs_plain", "steps_vs_bwd_relu",
                                  "layer_relu_vs_plain"}
    for s in tall["fused"].values():
        assert all(math.isfinite(v) and v > 0 for v in s["rounds"])
    row = next(line for line in table if line.startswith(tall["label"]))
    cells = row.split("|")[1:5]
    assert f"{tall['fused']['relu_vs_plain']['median']:.2f}x" in cells[0]
    assert f"{tall['fused']['steps_vs_res_relu']['median']:.1f}x" in cells[1]
    assert f"{tall['fused']['bwd_relu_vs_plain']['median']:.2f}x" in cells[2]
    assert f"{tall['fused']['steps_vs_bwd_relu']['median']:.1f}x" in cells[2]
    assert f"{tall['fused']['layer_relu_vs_plain']['median']:.2f}x" in cells[3]
    assert not any(line.startswith(tiny["label"]) for line in table)


def test_nan_group_times_the_policies_and_zscore_against_scipy(tmp_path):
    pytest.importorskip("scipy")
    target = tmp_path / "bench.json"
    proc = run_cli("--quick", "--threads", "1", "--cases", "2d-tall,tiny", "--nan",
                   "--no-torch", "--json", str(target))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(target.read_text())
    assert result["meta"]["nan"] is True
    table = proc.stdout[proc.stdout.index("missing values (nan_policy), threads: 1"):].splitlines()
    by_case = {r["case"]: r for r in result["records"]}
    tall, tiny = by_case["2d-tall"], by_case["tiny"]
    assert "nan" not in tiny and not set(NAN_VARIANTS) & set(tiny["seconds"])
    assert set(NAN_VARIANTS) <= set(tall["seconds"])
    assert set(tall["nan"]) == {"omit_vs_plain", "omit_nan_vs_plain", "raise_vs_plain",
                                "raise_alloc_vs_plain", "scipy_vs_zscore"}
    for s in tall["nan"].values():
        assert all(math.isfinite(v) and v > 0 for v in s["rounds"])
    row = next(line for line in table if line.startswith(tall["label"]))
    cells = row.split("|")[1:3]
    assert f"{tall['nan']['omit_nan_vs_plain']['median']:.2f}x" in cells[0]
    assert f"{tall['nan']['scipy_vs_zscore']['median']:.1f}x" in cells[1]
    assert not any(line.startswith(tiny["label"]) for line in table)


@pytest.mark.slow
@pytest.mark.skipif(not has_torch(), reason="torch is not installed")
def test_compile_column_times_inductor_or_says_why_not(tmp_path):
    target = tmp_path / "bench.json"
    proc = run_cli("--quick", "--threads", "1", "--cases", "tiny,2d-tall", "--compile",
                   "--json", str(target), timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(target.read_text())
    assert result["meta"]["compile"] is True
    table = proc.stdout[proc.stdout.index("torch.compile (inductor), threads: 1"):]
    for r in result["records"]:
        assert r["label"] in table
        if "compile_error" in r:     # inductor could not build here: it says why
            assert r["compile_error"] and "not compiled" in table
            continue
        for s in [r["seconds"]["compile_train"], r["seconds"]["compile_fb"],
                  *r["speedup_over_compile"].values(), r["ratio_to_floor"]["cbn_fb"]]:
            assert len(s["rounds"]) == QUICK.rounds
            assert all(math.isfinite(v) and v > 0 for v in s["rounds"])
        # forward + backward is compared with cbn's forward plus backward
        fb = np.add(r["seconds"]["cbn_train"]["rounds"], r["seconds"]["cbn_bwd"]["rounds"])
        assert r["speedup_over_compile"]["fb"]["median"] == pytest.approx(
            np.median(np.divide(r["seconds"]["compile_fb"]["rounds"], fb)))


@pytest.mark.skipif(not has_torch(), reason="torch is not installed")
def test_compile_failure_is_reported_not_raised(monkeypatch):
    import torch
    from cbn.bench.variants import compiled_timers

    def no_compiler(fn, **kwargs):
        def run(*args):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", no_compiler)
    case = select_cases(patterns=["tiny"])[0]
    x = np.ones(case.shape, np.float32)
    timers, error = compiled_timers(case, torch, x, x)
    assert timers is None
    assert error == "RuntimeError: InvalidCxxCompiler: no working C++ compiler found"


def test_compile_needs_torch(capsys):
    assert main(["bench", "--compile", "--no-torch"]) == 2
    assert "--compile needs torch" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not has_torch(), reason="torch is not installed")
def test_torch_model_times_a_resnet_step_with_both_batch_norms(tmp_path):
    target = tmp_path / "model.json"
    proc = run_cli("--torch-model", "--quick", "--threads", "1", "--json", str(target),
                   timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(target.read_text())
    assert result["model"].startswith("ResNet-18")
    (record,) = result["records"]
    assert record["threads"] == 1
    for k in ("torch_step", "cbn_step", "torch_eval", "cbn_eval"):
        assert len(record["seconds"][k]["rounds"]) == result["rounds"]
        assert all(t > 0 for t in record["seconds"][k]["rounds"])
    # both models spend time in their own batch-norm operators, and only there
    assert 0 < record["bn_share"]["torch"] < 1 and 0 < record["bn_share"]["cbn"] < 1
    row = proc.stdout.splitlines()[2]
    assert f"{record['seconds']['cbn_step']['median'] * 1e3:.1f} ms" in row
