"""Sphinx configuration for cbn's documentation.

The API reference is generated from the docstrings of the built package, so
build cbn in place first (``python setup.py build_ext --inplace``);
``tools/build_docs.sh`` builds the html and runs every docstring example
with Sphinx's doctest builder.
"""
import os
import sys

# Document the checkout (built in place), not some other installed copy.
sys.path.insert(0, os.path.abspath(".."))

import cbn  # noqa: E402

project = "cbn"
author = "the cbn developers"
copyright = "2026, the cbn developers"
version = release = cbn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# design.md and performance.md are also read on GitHub, where their headings
# are anchors; give MyST the same.
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

autodoc_default_options = {"members": True, "member-order": "bysource"}
# Cython functions carry their signature (binding=True); the docstrings
# document the types, so keep the signatures short.
autodoc_typehints = "none"

# Members are listed by autodoc; numpydoc would list them a second time.
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# Every ``>>>`` block in the docstrings and pages is a doctest.
doctest_global_setup = "import numpy as np\nimport cbn"
doctest_test_doctest_blocks = "default"

html_theme = "pydata_sphinx_theme"
html_title = f"cbn {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path = []
