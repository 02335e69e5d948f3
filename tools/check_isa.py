"""Check that AVX instructions come only from the AVX kernel files.

Usage: python tools/check_isa.py EXTENSION.so...

A portable wheel is built for the x86-64 baseline (SSE2): only
src_c/targets/kernels_avx2.c and kernels_avx512.c are compiled for AVX, and the
dispatcher calls them only on CPUs that have it. An AVX instruction anywhere
else (from ``-march=native``, a stray ``-mavx2``, or an AVX helper inlined
into common code) would crash older CPUs with SIGILL at import or first call.

Instructions are attributed to source files through the DWARF compile units'
address ranges, so the modules must carry debug information (the default
``-g`` of CPython's build flags); pyelftools (an auditwheel dependency) reads
it and objdump disassembles.
"""
import re
import subprocess
import sys

from elftools.elf.elffile import ELFFile

AVX_SOURCES = ("kernels_avx2.c", "kernels_avx512.c")
# VEX/EVEX-encoded instructions (the AVX families) are exactly the mnemonics
# starting with "v", apart from verr/verw (segment checks) and VMX (vm*).
AVX_MNEMONIC = re.compile(r"^v(?!err|erw|m)[a-z0-9]+$")
INSN = re.compile(r"^\s*([0-9a-f]+):\s+([a-z][a-z0-9.]*)")


def unit_ranges(elf):
    """[(low, high, source file)] of every compile unit."""
    dwarf = elf.get_dwarf_info()
    ranges = []
    for cu in dwarf.iter_CUs():
        top = cu.get_top_DIE()
        name = top.attributes["DW_AT_name"].value.decode()
        if "DW_AT_ranges" in top.attributes:
            rl = dwarf.range_lists()
            for r in rl.get_range_list_at_offset(top.attributes["DW_AT_ranges"].value, cu=cu):
                if hasattr(r, "begin_offset"):
                    ranges.append((r.begin_offset, r.end_offset, name))
        elif "DW_AT_low_pc" in top.attributes:
            low = top.attributes["DW_AT_low_pc"].value
            high = top.attributes["DW_AT_high_pc"]
            end = high.value if high.form == "DW_FORM_addr" else low + high.value
            ranges.append((low, end, name))
    return ranges


def check(path):
    """Number of AVX instructions outside the AVX kernel files (printed)."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        if not elf.has_dwarf_info():
            sys.exit(f"{path}: no debug information, cannot attribute instructions")
        ranges = unit_ranges(elf)
    disasm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path],
                            capture_output=True, text=True, check=True).stdout
    bad, avx = {}, 0
    for line in disasm.splitlines():
        m = INSN.match(line)
        if not m or not AVX_MNEMONIC.match(m.group(2)):
            continue
        addr = int(m.group(1), 16)
        src = next((s for lo, hi, s in ranges if lo <= addr < hi), "?")
        if src.endswith(AVX_SOURCES):
            avx += 1
        else:
            bad[src] = bad.get(src, 0) + 1
    print(f"{path}: {avx} AVX instructions, all in {', '.join(AVX_SOURCES)}"
          if not bad else f"{path}: AVX instructions outside the AVX kernels: {bad}")
    return sum(bad.values())


if __name__ == "__main__":
    sys.exit(1 if sum(check(p) for p in sys.argv[1:]) else 0)
