#!/usr/bin/env bash
# Build cbn's C core and Cython extensions with AddressSanitizer and
# UndefinedBehaviorSanitizer (CBN_SANITIZE=1, see setup.py) in a scratch copy
# of the working tree, then run the test suite against that build. Fails on
# any sanitizer report, from the test process or from any process it starts.
#
#   bash tools/sanitize.sh [pytest arguments; default: tests]
#
# Needs gcc (its libasan and libubsan) and git. The repository's own in-place
# build is left alone.
#
# How it runs: CPython is not built with ASan, so the sanitizer runtimes must
# be loaded before anything else: LD_PRELOAD. Leak detection is off because
# CPython keeps objects alive until exit by design (interned strings, static
# types, module state), which LeakSanitizer reports as leaks; tests/
# test_memory.py checks that cbn's calls do not grow the process instead.
# malloc returns NULL for impossible sizes (allocator_may_return_null) so
# that NumPy raises MemoryError as it does without ASan. ASan's reports go
# to log files, so that one from a child process (a forked worker, a
# subprocess whose output a test captures) cannot be lost: any log file fails
# the run. gcc's libubsan ignores log_path and writes to stderr, then exits
# with status 1; pytest therefore captures only Python's sys.stderr, not
# file descriptor 2, so that a report from the test process is printed rather
# than lost with the capture file when the process exits.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
src=$tmp/src
logs=$tmp/logs
mkdir -p "$src" "$logs"

# Whatever step ends the script, sanitizer reports fail it.
finish() {
    local status=$?
    if compgen -G "$logs/*" >/dev/null; then
        for f in "$logs"/*; do
            echo "==== $(basename "$f")" >&2
            cat "$f" >&2
        done
        echo "sanitize.sh: sanitizer reports above" >&2
        status=1
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap finish EXIT

# The working tree's sources: tracked files and new ones, not ignored build
# output.
(cd "$root" && git ls-files -z --cached --others --exclude-standard \
    | tar --null -T - -cf -) | tar -xf - -C "$src"
cd "$src"
CBN_SANITIZE=1 python setup.py build_ext --inplace -q

export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:log_path=$logs/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"

# The tests must import this build, and it must be instrumented.
python - "$src" <<'EOF'
import os, sys
import cbn.kernels
so = cbn.kernels.__file__
if not so.startswith(sys.argv[1] + os.sep):
    sys.exit(f"sanitize.sh: the tests would import {so}, not the sanitized build")
if b"__asan_init" not in open(so, "rb").read():
    sys.exit(f"sanitize.sh: {so} is not built with AddressSanitizer")
EOF

python -m pytest -q -p no:cacheprovider --capture=sys "${@:-tests}"
