/*
 * cpu.c -- run-time detection of the instruction sets the kernels can use.
 *
 * A level is usable when the CPU has the instructions (CPUID) and the
 * operating system saves the wider registers on context switch (XGETBV):
 * AVX needs the SSE and AVX state, AVX-512 also the opmask and ZMM state.
 * The vendor, family and model choose the tuning profile (profiles.c).
 */
#include <string.h>

#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)

#if defined(_MSC_VER)
#include <intrin.h>
static void cpuid(int leaf, int sub, unsigned r[4])
{
    int v[4];
    __cpuidex(v, leaf, sub);
    r[0] = v[0], r[1] = v[1], r[2] = v[2], r[3] = v[3];
}
static unsigned long long xcr0(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static void cpuid(int leaf, int sub, unsigned r[4])
{
    r[0] = r[1] = r[2] = r[3] = 0;
    __get_cpuid_count((unsigned)leaf, (unsigned)sub, &r[0], &r[1], &r[2], &r[3]);
}
static unsigned long long xcr0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

/* CPUID.1:ECX has FMA (12), OSXSAVE (27), AVX (28); CPUID.7.0:EBX has AVX2 (5)
   and AVX512F (16). XCR0 bits 1-2 are SSE/AVX state, 5-7 the AVX-512 state. */
static int os_avx(void)
{
    unsigned r[4];
    cpuid(1, 0, r);
    if (!(r[2] & (1u << 27)) || !(r[2] & (1u << 28)))
        return 0;
    return (xcr0() & 0x6) == 0x6;
}

static int detect_avx2_fma(void)
{
    unsigned r1[4], r7[4];
    if (!os_avx())
        return 0;
    cpuid(1, 0, r1);
    cpuid(7, 0, r7);
    return (r1[2] & (1u << 12)) && (r7[1] & (1u << 5));
}

static int detect_avx512f(void)
{
    unsigned r7[4];
    if (!detect_avx2_fma() || (xcr0() & 0xe6) != 0xe6)
        return 0;
    cpuid(7, 0, r7);
    return (r7[1] & (1u << 16)) != 0;
}

/* Detected once: CPUID traps to the hypervisor in a virtual machine (about
   0.1 ms a call was seen), and the answer never changes. Concurrent first
   calls all store the same value. */
int cbn_cpu_has_avx2_fma(void)
{
    static int known = -1;
    if (known < 0)
        known = detect_avx2_fma();
    return known;
}

int cbn_cpu_has_avx512f(void)
{
    static int known = -1;
    if (known < 0)
        known = detect_avx512f();
    return known;
}

/* CPUID.0 has the vendor in EBX, EDX, ECX; CPUID.1:EAX the family and model,
   whose extended fields count only for family 15 (family) and families 6
   and 15 (model), as both vendors define them. */
static cbn_cpu_id identify(void)
{
    cbn_cpu_id id;
    unsigned r[4];
    memset(&id, 0, sizeof id);
    cpuid(0, 0, r);
    memcpy(id.vendor, &r[1], 4);
    memcpy(id.vendor + 4, &r[3], 4);
    memcpy(id.vendor + 8, &r[2], 4);
    cpuid(1, 0, r);
    id.family = (int)((r[0] >> 8) & 0xf);
    id.model = (int)((r[0] >> 4) & 0xf);
    if (id.family == 15)
        id.family += (int)((r[0] >> 20) & 0xff);
    if (id.family == 6 || id.family >= 15)
        id.model += (int)((r[0] >> 16) & 0xf) << 4;
    return id;
}

cbn_cpu_id cbn_cpu_identify(void)
{
    static cbn_cpu_id known;
    static int have = 0;
    if (!have) {
        known = identify();
        have = 1;
    }
    return known;
}

#else

int cbn_cpu_has_avx2_fma(void) { return 0; }
int cbn_cpu_has_avx512f(void) { return 0; }

cbn_cpu_id cbn_cpu_identify(void)
{
    cbn_cpu_id id;
    memset(&id, 0, sizeof id);
    return id;
}

#endif
