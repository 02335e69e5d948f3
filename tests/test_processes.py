"""Processes: a child forked after cbn used OpenMP threads can still call cbn,
and Ctrl-C stops a loop of cbn calls as it stops any Python loop.

Each scenario runs in a subprocess of its own under a timeout, so that a hang
fails the test instead of stopping the suite.
"""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 120

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"),
                                reason="fork and SIGINT are POSIX")


def _python(code):
    """``python -c code`` importing the cbn these tests import."""
    import cbn
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(cbn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent, env.get("PYTHONPATH", "")])
    return [sys.executable, "-c", textwrap.dedent(code)], env


FORK_SCRIPT = """
    import multiprocessing as mp
    import sys
    import numpy as np
    import cbn

    # 2 OpenMP threads, and calls large enough to open parallel regions:
    # GNU libgomp now has a thread pool, which a forked child inherits
    # without its threads.
    cbn.set_num_threads(2)
    threads = cbn.get_num_threads()  # 1 in a build without OpenMP
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, (256, 8, 64)).astype(np.float32)      # 131072 elements
    rows = rng.normal(size=(4096, 32))
    y = cbn.normalize_batch(x, axis=(0, 2))
    r = cbn.normalize_batch(rows)
    bn = cbn.BatchNorm1d(8)
    z = bn(x)
    dx = bn.backward(x)

    def child(queue):
        fresh = cbn.BatchNorm1d(8)
        zc = fresh(x)
        queue.put({
            "threads": cbn.get_num_threads(),
            "array function": bool(np.array_equal(cbn.normalize_batch(x, axis=(0, 2)), y)),
            "rows": bool(np.array_equal(cbn.normalize_batch(rows), r)),
            "layer forward": bool(np.array_equal(zc, z)),
            "layer backward": bool(np.array_equal(fresh.backward(x), dx)),
        })

    if __name__ == "__main__":
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        p = ctx.Process(target=child, args=(queue,))
        p.start()
        p.join(60)
        if p.is_alive():
            p.kill()
            sys.exit("the forked child hung")
        print(queue.get(timeout=10))
        # The parent keeps its threads and its results.
        print(cbn.get_num_threads() == threads,
              bool(np.array_equal(cbn.normalize_batch(x, axis=(0, 2)), y)))
"""


def test_forked_child_calls_cbn_serially_with_the_same_results():
    cmd, env = _python(FORK_SCRIPT)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    child, parent = proc.stdout.splitlines()
    assert child == str({"threads": 1, "array function": True, "rows": True,
                         "layer forward": True, "layer backward": True})
    assert parent == "True True"


LOOP_SCRIPT = """
    import sys
    import numpy as np
    import cbn

    cbn.set_num_threads(2)
    x = np.random.default_rng(0).normal(size=(256, 8, 64)).astype(np.float32)
    bn = cbn.BatchNorm1d(8)
    try:
        steps = 0
        while True:  # a training loop's shape: array function and layer
            cbn.normalize_batch(x, axis=(0, 2))
            bn.backward(bn(x))
            steps += 1
            if steps == 1:  # inside the try, so the interrupt lands in it
                print("ready", flush=True)
    except KeyboardInterrupt:
        # Wherever the interrupt landed, the layer is usable afterwards.
        bn.backward(bn(x))
        print("layer usable after the interrupt", flush=True)
        raise
"""


def test_ctrl_c_interrupts_a_loop_of_cbn_calls():
    cmd, env = _python(LOOP_SCRIPT)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # Python exits from an unhandled KeyboardInterrupt by dying of SIGINT.
    assert proc.returncode == -signal.SIGINT, err
    assert "KeyboardInterrupt" in err
    assert out == "layer usable after the interrupt\n"
