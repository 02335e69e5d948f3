"""Bitwise digests of the kernels' results, stored: refactors change no bit.

A reorganisation of the C core (files, threading skeleton, loop shapes) must
give exactly the results it gave before. ``tests/digests.json`` holds the
sha256 of every result of forward (training and inference), the statistics
and backward (with and without batch statistics) on fixed inputs that reach
every loop shape -- planes (NCHW-like, inner > 1: short and long runs,
several segments), rows (one and several column blocks, the flat rows pass,
few features with the batch split over threads), channels-last and 1-D --
for both dtypes and every SIMD level. The results do not depend on the
number of threads (tests/test_threads.py), so one digest serves all.

The inputs are made from integer arithmetic, not a random generator, so
that they are the same bits under every NumPy version the wheel supports.

A change that is *meant* to change results (a new summation method, say)
regenerates the file, and says so in its commit::

    python tests/test_digests.py --update
"""
import hashlib
import json
import os
import sys

import numpy as np
import pytest

import cbn
from cbn import kernels

HERE = os.path.dirname(os.path.abspath(__file__))
DIGESTS = os.path.join(HERE, "digests.json")

# name -> (shape, batch axes)
CASES = {
    "planes-short-runs": ((4, 6, 9, 33), (0, 2, 3)),
    "planes-long-runs": ((3, 2, 5000), (0, 2)),
    "planes-segments": ((9, 3, 37000), (0, 2)),
    "rows-narrow": ((37, 19), 0),
    "rows-flat": ((300, 300), 0),
    "rows-block-edge": ((40, 1024), 0),
    "rows-three-blocks": ((50, 2500), 0),
    "rows-few-features": ((100000, 3), 0),
    "rows-tall": ((1030, 5), 0),
    "channels-last": ((4, 5, 6, 7), (0, 1, 2)),
    "one-dimensional": ((1001,), 0),
}
DTYPES = ("float32", "float64")


def test_cases_reach_the_paths_they_name():
    # The shapes are fixed (the digests are of them); this fails if a tuning
    # constant moves so that a case no longer reaches its path.
    segment = kernels.SEG_CHUNKS * kernels.CHUNK
    assert np.prod(CASES["planes-short-runs"][0][2:]) < kernels.CHUNK
    assert CASES["planes-long-runs"][0][2] > kernels.CHUNK
    assert CASES["planes-segments"][0][2] > segment
    assert CASES["rows-flat"][0][1] < kernels.ROW_BLOCK
    assert CASES["rows-block-edge"][0][1] == kernels.ROW_BLOCK
    assert 2 * kernels.ROW_BLOCK < CASES["rows-three-blocks"][0][1] <= 3 * kernels.ROW_BLOCK
    few = CASES["rows-few-features"][0]
    assert few[0] > segment and few[0] * few[1] >= kernels.PARALLEL_MIN_WORK


def pseudo_random(n, seed):
    """n values in [0, 1) from a 64-bit LCG: the same under every NumPy."""
    with np.errstate(over="ignore"):
        k = np.arange(n, dtype=np.uint64) + np.uint64(seed * 1000003)
        k = k * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)
        k ^= k >> np.uint64(29)
        k = k * np.uint64(6364136223846793005)
    return (k >> np.uint64(11)).astype(np.float64) / 2.0**53


def inputs(shape, dtype, seed):
    n = int(np.prod(shape))
    u = pseudo_random(n, seed).reshape(shape)
    feature = pseudo_random(n, seed + 1).reshape(shape)
    # an offset of 100, per-element spread of 3, plus a little of a second
    # stream so that no two features are alike
    x = (100.0 + 6.0 * (u - 0.5) + 0.1 * feature).astype(dtype)
    dy = (2.0 * pseudo_random(n, seed + 2).reshape(shape) - 0.7).astype(dtype)
    return x, dy


def results(shape, axis, dtype):
    x, dy = inputs(shape, dtype, seed=len(shape) * 7 + shape[-1])
    y, mean, var = cbn.normalize_batch(x, 1.5, -0.5, axis=axis, return_stats=True)
    ye = cbn.normalize_batch(x, 1.5, -0.5, axis=axis, mean=mean + 0.25, var=var * 2)
    stats = cbn.batch_stats(x, axis=axis)
    grads = cbn.normalize_batch_backward(dy, x, mean, var, 1.5, axis=axis)
    frozen = cbn.normalize_batch_backward(dy, x, mean, var, 1.5, axis=axis,
                                          batch_stats=False)
    return (y, mean, var, ye, stats.mean, stats.var()) + tuple(grads) + tuple(frozen)


def digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def compute(level):
    before = kernels.simd_by_pass()
    kernels.set_simd(level)
    try:
        return {f"{name} {dt}": digest(results(shape, axis, np.dtype(dt)))
                for name, (shape, axis) in CASES.items() for dt in DTYPES}
    finally:
        for p, lv in before.items():
            kernels.set_simd(lv, passes=p)


def stored():
    with open(DIGESTS) as f:
        return json.load(f)


@pytest.mark.parametrize("level", ["scalar", "sse2", "neon", "avx2", "avx512"])
def test_results_are_bitwise_the_stored_ones(level):
    want = stored()
    if level not in kernels.simd_levels():
        pytest.skip(f"this CPU does not run the {level} level")
    assert level in want, f"no digests stored for {level}: run with --update"
    got = compute(level)
    assert sorted(got) == sorted(want[level])
    changed = [k for k in got if got[k] != want[level][k]]
    assert not changed, f"results changed at {level} for: {', '.join(changed)}"


def test_the_stored_file_covers_every_case():
    want = stored()
    for level, table in want.items():
        assert sorted(table) == sorted(f"{n} {dt}" for n in CASES for dt in DTYPES), level


def update():
    table = stored() if os.path.exists(DIGESTS) else {}
    for level in kernels.simd_levels():
        table[level] = compute(level)
        print(f"{level}: {len(table[level])} digests")
    with open(DIGESTS, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(__doc__)
    update()
