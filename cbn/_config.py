"""cbn.show_config: what this build of cbn runs with."""
import platform
from typing import Optional

import numpy as np

from cbn import kernels


def _openmp_runtimes() -> Optional[list[str]]:
    """File paths of the OpenMP runtimes loaded in this process (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [i["filepath"] for i in threadpool_info() if i.get("user_api") == "openmp"]


def _cpu_text() -> str:
    vendor, family, model = kernels.cpu_id()
    if not vendor:
        return f"{platform.machine()} (no CPUID)"
    return f"{vendor} family {family} model {model} ({family:x}h, {model:x}h)"


def _levels_text() -> str:
    """One level, or each pass's where they differ."""
    levels = kernels.simd_by_pass()
    if len(set(levels.values())) == 1:
        return f"{next(iter(levels.values()))} (every pass)"
    return ", ".join(f"{p} {lv}" for p, lv in levels.items())


def show_config() -> None:
    """Print cbn's build and run-time configuration.

    The CPU (CPUID's vendor, family and model) and the tuning profile it
    selected, the SIMD level of each pass and those the CPU supports, the
    OpenMP version the C core was built with and the runtime library loaded
    (when threadpoolctl is installed), and the thread count large inputs
    use.

    Examples
    --------
    >>> import cbn
    >>> cbn.show_config()  # doctest: +ELLIPSIS
    cbn ...
    """
    from cbn import __version__
    omp = kernels.openmp_version()
    runtimes = _openmp_runtimes()
    lines = [
        f"cbn {__version__} (numpy {np.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()})",
        f"  CPU:                {_cpu_text()}",
        f"  tuning profile:     {kernels.get_cpu_profile()}",
        f"  SIMD level in use:  {_levels_text()}",
        f"  SIMD levels here:   {', '.join(kernels.simd_levels())}",
        f"  OpenMP:             {('version ' + str(omp)) if omp else 'none (serial build)'}",
    ]
    if runtimes is not None:
        lines.append(f"  OpenMP runtime:     {', '.join(runtimes) or 'not loaded'}")
    lines.append(f"  threads:            {kernels.get_num_threads()}")
    print("\n".join(lines))
