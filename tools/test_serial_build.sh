#!/usr/bin/env bash
# Build cbn without OpenMP (CBN_NO_OPENMP=1, the serial build) into a scratch
# directory and run the whole test suite against that build, so a machine
# without an OpenMP runtime gets a library that builds and is tested.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

CBN_NO_OPENMP=1 python -m pip install --quiet --no-deps --target "$tmp/site" "$root"
cp -r "$root/tests" "$root/pyproject.toml" "$tmp/"
cd "$tmp"
PYTHONPATH="$tmp/site" python -c "import cbn, sys; sys.exit(cbn.kernels.openmp_version() != 0)" \
    || { echo "the serial build linked OpenMP" >&2; exit 1; }
PYTHONPATH="$tmp/site" python -m pytest -q -p no:cacheprovider tests
