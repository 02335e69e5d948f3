"""Build the example: ``python setup.py build_ext --inplace``.

Needs cbn installed (its cbn/kernels.pxd is found on sys.path), Cython and
setuptools; no include directories and no libraries: the kernels come from
the module cbn.kernels at import time.
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    name="cbn-example",
    ext_modules=cythonize([Extension("cbn_example", ["cbn_example.pyx"])],
                          language_level=3),
)
