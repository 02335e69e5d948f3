"""Tuning profiles and per-pass SIMD levels (src_c/profiles.c).

A profile, chosen from CPUID's vendor, family and model, names each pass's
SIMD level and the prefetch tunings that differ between microarchitectures.
It may choose which tested kernels compute a result, never what a given
level computes: every profile's results match the scalar reference, a pass
forced to a level gives that level's bits whatever the other passes run at,
and at one level every profile gives the same bits.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import cbn
from cbn import kernels
from test_simd import CASES, run_all

LEVELS = kernels.simd_levels()
PROFILES = kernels.cpu_profiles()
PASSES = ("train", "infer", "backward")

# Zen 4's models (family 19h), from AMD's processor programming references:
# Genoa, Raphael and Phoenix, Bergamo and Siena.
ZEN4_MODELS = list(range(0x10, 0x20)) + list(range(0x60, 0x80)) + list(range(0xa0, 0xb0))


@pytest.fixture
def restore():
    """Leave the profile and every pass's level as they were."""
    profile, levels = kernels.get_cpu_profile(), kernels.simd_by_pass()
    yield
    kernels.set_cpu_profile(profile)
    for p, level in levels.items():
        kernels.set_simd(level, passes=p)


def test_profiles_are_listed_and_this_cpu_selects_its_own(restore):
    assert PROFILES[0] == "generic" and "amd-zen4" in PROFILES
    assert len(set(PROFILES)) == len(PROFILES)
    vendor, family, model = kernels.cpu_id()
    kernels.set_cpu_profile("auto")
    if vendor == "AuthenticAMD" and family == 0x19 and model in ZEN4_MODELS:
        assert kernels.get_cpu_profile() == "amd-zen4"
    elif vendor == "AuthenticAMD" and family == 0x19:
        assert kernels.get_cpu_profile() == "generic"  # Zen 3: measured, generic is best
    if vendor != "AuthenticAMD":
        assert kernels.get_cpu_profile() == "generic"
    if sys.platform.startswith("linux") and vendor:
        # the same CPU as the kernel reports it
        info = open("/proc/cpuinfo").read()
        assert f"vendor_id\t: {vendor}" in info
        assert f"cpu family\t: {family}\n" in info
        assert f"model\t\t: {model}\n" in info


def test_every_profile_chooses_a_supported_level_for_every_pass(restore):
    for name in PROFILES:
        kernels.set_cpu_profile(name)
        assert kernels.get_cpu_profile() == name
        levels = kernels.simd_by_pass()
        assert sorted(levels) == sorted(PASSES)
        assert set(levels.values()) <= set(LEVELS)
        assert kernels.get_simd() == levels["train"]


def test_bad_names_are_rejected_and_nothing_changes(restore):
    kernels.set_simd("scalar", passes="infer")
    before = kernels.get_cpu_profile(), kernels.simd_by_pass()
    with pytest.raises(ValueError, match="no tuning profile"):
        kernels.set_cpu_profile("pentium")
    with pytest.raises(ValueError, match="passes"):
        kernels.set_simd("scalar", passes=("train", "forward"))
    with pytest.raises(ValueError, match="passes"):
        kernels.set_simd("scalar", passes=3)
    with pytest.raises(ValueError, match="every pass"):
        kernels.set_simd("auto", passes="train")
    with pytest.raises(ValueError, match="not available"):
        kernels.set_simd("avx9000", passes="train")
    assert (kernels.get_cpu_profile(), kernels.simd_by_pass()) == before


def test_one_pass_can_be_forced_and_auto_returns_to_the_profile(restore):
    kernels.set_cpu_profile("generic")
    chosen = kernels.simd_by_pass()
    kernels.set_simd("scalar", passes=["backward"])
    assert kernels.simd_by_pass() == {**chosen, "backward": "scalar"}
    kernels.set_simd("scalar")
    assert set(kernels.simd_by_pass().values()) == {"scalar"}
    kernels.set_simd("auto")
    assert kernels.simd_by_pass() == chosen
    kernels.set_simd("scalar")
    kernels.set_cpu_profile("generic")  # a profile also undoes forced levels
    assert kernels.simd_by_pass() == chosen


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["planes-long", "planes-short-segments", "rows-blocks",
                                  "rows-segments", "channels-last"])
def test_every_profile_matches_the_scalar_reference(restore, profile, dtype, case):
    shape, axis = CASES[case]
    rng = np.random.default_rng(11)
    x = (rng.normal(size=shape) * 3 + 100).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    kernels.set_simd("scalar")
    ref = run_all(x, axis, dy)
    kernels.set_cpu_profile(profile)
    got = run_all(x, axis, dy)
    rtol = 1e-12 if dtype == np.float64 else 2e-6  # as test_simd's levels
    for r, g in zip(ref, got):
        assert g.dtype == r.dtype and g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=0, atol=rtol * max(1.0, float(np.abs(r).max())))


def _by_pass(x, axis, dy):
    """run_all's results, grouped by the pass that computes them."""
    out = run_all(x, axis, dy)
    return {"train": out[:3], "infer": out[3:4], "backward": out[4:]}


@pytest.mark.parametrize("case", ["planes-long-segments", "rows-one-block", "channels-last"])
def test_a_forced_pass_gives_its_levels_bits_whatever_the_others_run(restore, case):
    shape, axis = CASES[case]
    rng = np.random.default_rng(5)
    x = rng.normal(2, 3, size=shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    alone = {}
    for level in LEVELS:
        kernels.set_simd(level)
        alone[level] = _by_pass(x, axis, dy)
    # each pass at another level than its neighbours, in every rotation
    for shift in range(len(LEVELS)):
        mix = {p: LEVELS[(i + shift) % len(LEVELS)] for i, p in enumerate(PASSES)}
        for p, level in mix.items():
            kernels.set_simd(level, passes=p)
        assert kernels.simd_by_pass() == mix
        got = _by_pass(x, axis, dy)
        for p, level in mix.items():
            for g, w in zip(got[p], alone[level][p]):
                assert g.tobytes() == w.tobytes(), (p, level)


@pytest.mark.parametrize("dtype,shape", [(np.float64, (9, 8, 128, 128)),    # 37.7 MB
                                         (np.float32, (17, 8, 128, 128))])  # 71 MB
def test_profiles_give_the_same_bits_at_one_level(restore, dtype, shape):
    # Blocks beyond 32 MiB: the planes passes prefetch along under the
    # generic profile and not under amd-zen4's; prefetches change no value.
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape).astype(dtype)
    x[:, 2] += 40.0
    dy = rng.standard_normal(shape).astype(dtype)
    axis = (0, 2, 3)
    results = []
    for profile in PROFILES:
        kernels.set_cpu_profile(profile)
        kernels.set_simd(LEVELS[-1])
        results.append(run_all(x, axis, dy))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()


def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(cbn.__file__)))


def test_environment_variables_choose_the_profile_then_the_level():
    show = "import cbn.kernels as k; print(k.get_cpu_profile(), k.simd_by_pass()['infer'])"
    r = _python(show, CBN_CPU_PROFILE="generic", CBN_SIMD="scalar")
    assert r.returncode == 0 and r.stdout.split() == ["generic", "scalar"], r.stderr
    r = _python(show, CBN_CPU_PROFILE="amd-zen4", CBN_SIMD="")
    assert r.returncode == 0 and r.stdout.split()[0] == "amd-zen4", r.stderr
    r = _python(show, CBN_CPU_PROFILE="nonsense", CBN_SIMD="")
    assert r.returncode == 0 and "ignoring CBN_CPU_PROFILE" in r.stderr


def test_show_config_names_the_cpu_profile_and_levels(restore, capsys):
    vendor, family, model = kernels.cpu_id()
    kernels.set_cpu_profile("generic")
    kernels.set_simd("scalar", passes="infer")
    cbn.show_config()
    out = capsys.readouterr().out
    assert "tuning profile:     generic" in out
    if vendor:
        assert f"{vendor} family {family} model {model}" in out
    levels = kernels.simd_by_pass()
    if len(set(levels.values())) > 1:
        assert ", ".join(f"{p} {lv}" for p, lv in levels.items()) in out
    kernels.set_simd("auto")
    cbn.show_config()
    out = capsys.readouterr().out
    if len(set(kernels.simd_by_pass().values())) == 1:
        assert f"SIMD level in use:  {kernels.get_simd()} (every pass)" in out
