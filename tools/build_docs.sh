#!/usr/bin/env bash
# Build the documentation site warning-free and run its doctests: every
# ">>>" example of the docstrings (pulled in by autodoc) and of the pages, with
# Sphinx's doctest builder. Installs nothing: it needs cbn built in place
# (pip install -e ".[docs]") and the docs extra.
# -E: always re-read the docstrings, which live in the compiled modules and
# so escape Sphinx's change detection.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m sphinx -E -W --keep-going -q -b html docs docs/_build/html
python -m sphinx -E -W --keep-going -q -b doctest docs docs/_build/doctest
echo "docs: html in docs/_build/html; doctests passed"
