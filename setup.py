"""Build cbn's extension modules.

Metadata lives in pyproject.toml; this file only describes the compiled parts:

* ``cbn.kernels`` -- the C core (src_c/) plus its Cython face. It is the only
  module linked with the C sources; the others reach the kernels through
  Cython's cross-module cimport, so there is one copy of the core per process.
* ``cbn._block`` -- the block planner (an array as the core's (outer, C,
  inner) block) and the kernel calls on blocks, shared by:
* ``cbn._normalize`` and ``cbn._layers`` -- the array functions and layers.

The public C header, src_c/cbn.h, is copied into the package as
``cbn/include/cbn.h`` at build time (wheels, installs, editable and in-place
builds), where ``cbn.get_include()`` finds it; src_c/ stays its only source.

Environment variables:

* ``CBN_NO_OPENMP=1`` builds without OpenMP (serial kernels).
* ``CBN_NATIVE=1`` opt-in: adds ``-march=native`` for a local build tuned to
  this CPU. Never set it for wheels or anything shipped to other machines.
* ``CBN_SANITIZE=1`` (gcc/clang): builds every extension with AddressSanitizer
  and UndefinedBehaviorSanitizer, for tools/sanitize.sh, which also says how
  to run Python with it. Never for a build that is installed or shipped.
"""
import glob
import os
import shutil
import sys
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# One kernels_<level>.c per SIMD level; each compiles itself for its target
# with a pragma (no per-file flags), see src_c/simd/README.md.
C_SOURCES = ["src_c/dispatch.c", "src_c/cpu.c", "src_c/profiles.c",
             "src_c/targets/kernels_scalar.c", "src_c/targets/kernels_baseline.c",
             "src_c/targets/kernels_avx2.c", "src_c/targets/kernels_avx512.c"]
HEADERS = glob.glob("src_c/**/*.h", recursive=True)
# What downstream builds get under cbn.get_include(): the public contract only.
PUBLIC_HEADERS = ["src_c/cbn.h"]

OPENMP_TEST = textwrap.dedent("""\
    #include <omp.h>
    int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }
    """)


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _openmp_flags(compiler):
    """(compile args, link args) that enable OpenMP, or None if unsupported.

    Tries the spellings of gcc/clang, MSVC and Apple clang (with libomp, as
    scikit-learn's build does), compiling and linking a test program.
    """
    if compiler.compiler_type == "msvc":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]),
                      (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w") as f:
            f.write(OPENMP_TEST)
        for cflags, lflags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objs, "omp_test", output_dir=tmp,
                                         extra_postargs=lflags)
            except Exception:
                continue
            return cflags, lflags
    return None


def _ship_headers(package_dir):
    """Copy the public headers into ``<package_dir>/include``."""
    dest = os.path.join(package_dir, "include")
    os.makedirs(dest, exist_ok=True)
    for header in PUBLIC_HEADERS:
        shutil.copyfile(header, os.path.join(dest, os.path.basename(header)))


class BuildPy(build_py):
    """build_py that also ships the public headers (wheels, installs)."""

    def run(self):
        super().run()
        # An editable build serves the package from the source tree.
        if getattr(self, "editable_mode", False):
            _ship_headers("cbn")
        else:
            _ship_headers(os.path.join(self.build_lib, "cbn"))


class BuildExt(build_ext):
    """build_ext that detects OpenMP and sets warning/optimization flags."""

    def run(self):
        super().run()
        # ``build_ext --inplace`` (and ``pip install -e``) skip build_py.
        if self.inplace:
            _ship_headers("cbn")

    def build_extensions(self):
        cflags, lflags = [], []
        if self.compiler.compiler_type == "msvc":
            cflags += ["/O2"]
        else:
            # No contraction of a*b + c into an FMA behind the vector layer's
            # back (clang's default on FMA targets): only the *_fmadd
            # operations fuse, the same in vectors and tails (simd/README.md).
            cflags += ["-O3", "-std=c99", "-fno-math-errno", "-ffp-contract=off"]
            if _env_flag("CBN_NATIVE"):  # opt-in local tuning only
                cflags.append("-march=native")  # opt-in: CBN_NATIVE=1 only
            if _env_flag("CBN_SANITIZE"):
                # Any undefined behaviour aborts, as memory errors do; frame
                # pointers and -g give the reports whole, named stacks.
                # Python's own flags include -fwrapv, which defines signed
                # overflow and so hides it from UBSan: undone here.
                sanitize = ["-fsanitize=address,undefined",
                            "-fno-sanitize-recover=all", "-fno-wrapv",
                            "-fno-omit-frame-pointer", "-g"]
                cflags += sanitize
                lflags += sanitize
        omp = None if _env_flag("CBN_NO_OPENMP") else _openmp_flags(self.compiler)
        if omp is None:
            print("cbn: building without OpenMP (serial kernels)")
        else:
            print(f"cbn: building with OpenMP ({' '.join(omp[0])})")
        for ext in self.extensions:
            ext.extra_compile_args = cflags + (omp[0] if omp else [])
            ext.extra_link_args = lflags + (omp[1] if omp else [])
        super().build_extensions()


def extensions():
    common = dict(
        include_dirs=[numpy.get_include(), "src_c"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_25_API_VERSION"),
                       ("NPY_TARGET_VERSION", "NPY_1_25_API_VERSION")],
    )
    exts = [
        Extension("cbn.kernels", ["cbn/kernels.pyx"] + C_SOURCES,
                  depends=HEADERS, **common),
        Extension("cbn._block", ["cbn/_block.pyx"], **common),
        Extension("cbn._normalize", ["cbn/_normalize.pyx"], **common),
        Extension("cbn._layers", ["cbn/_layers.pyx"], **common),
    ]
    return cythonize(exts, language_level=3,
                     compiler_directives={"boundscheck": False,
                                          "wraparound": False,
                                          "cdivision": True})


setup(ext_modules=extensions(), cmdclass={"build_py": BuildPy, "build_ext": BuildExt})
