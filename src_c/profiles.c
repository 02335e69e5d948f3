/*
 * profiles.c -- tuning profiles: what measurement found best on one kind of
 * CPU, chosen at run time from CPUID's vendor, family and model.
 *
 * A profile names the SIMD level of each pass and the tunings whose best
 * value differs between microarchitectures; everything else (the reduction
 * tree above all, see core/geometry.h) is the same on every CPU, so a
 * profile changes how fast a call runs and, through the levels it names,
 * which tested kernels compute it -- never the bits a given level
 * produces. A CPU no profile names gets the generic one: the best level for
 * every pass and the development machine's (Intel Xeon) tunings.
 *
 * Adding a profile: measure on that CPU, per pass, with `python -m cbn
 * bench` (CBN_SIMD forces a level, CBN_CPU_PROFILE a profile, both in one
 * process through cbn.kernels), then add an entry with the figures that
 * justify each value beside it, and a row in docs/performance.md.
 */
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#define BEST (-1)

const cbn_profile cbn_profiles[] = {
    /* Also measured as the right one for AMD Zen 3 (family 19h, model 01h:
       EPYC Milan, AVX2, 512 KiB L2 per core, 32 MiB L3), 2026-12-07, one
       thread, this profile against amd-zen4 in one process (medians of 9
       interleaved rounds, ratios to the copy): NCHW (64,64,112,112) float32
       training 1.92x / 2.08x, inference 1.11x / 1.16x, statistics 0.98x /
       1.14x, backward 2.83x / 2.98x; NCHW (32,64,56,56) float64 and 2-D
       (65536,512) float32 within the noise. There the prefetches along a
       feature help beyond L3 too. */
    {"generic", "", 0, {{0, 0}}, 0, {BEST, BEST, BEST}, INT64_MAX},
    /* AMD Zen 4 (family 19h; models 10h-1Fh Genoa, 60h-7Fh Raphael and
       Phoenix, A0h-AFh Bergamo and Siena), measured on model 11h (EPYC, 2
       cores, 32 MiB L3), 2026-12-03, one thread:
       - prefetching a planes feature 8 KiB ahead to L2 (core/prefetch.h)
         slows streams from memory. In C, a sum over 205 MB took 0.37x a
         copy without such prefetches and 0.46x with them, an inference
         pass with streaming stores 0.46x and 0.58x (1 KiB ahead or less
         was harmless). cbn, one process, this profile against the generic
         one: NCHW (64,64,112,112) float32 inference 16.0 ms -> 13.2 ms
         (medians of 12), NCHW (32,64,56,56) float64 (51 MB) training
         1.15-1.20x -> 1.00-1.07x the copy, inference 0.63-0.84x ->
         0.59-0.67x; training and backward of 205 MB within the noise.
         Data that L3 holds still gain (NCHW (32,64,56,56) float32, 25.7 MB,
         a build without the prefetches: training 1.5x -> 1.85x), hence
         along only below the L3 size. The rows' flat passes keep theirs
         (kernels/flat_rows.h).
       - AVX-512, though executed as two 256-bit halves, is the faster
         level of every pass: 2-D (256,1024) float32 training 2.90x against
         AVX2's 4.54x, statistics 1.91x / 2.88x, inference 1.24x / 1.64x,
         backward 4.64x / 5.34x; on data from memory the two are within
         the noise once the prefetches above are off. */
    {"amd-zen4", "AuthenticAMD", 0x19, {{0x10, 0x1f}, {0x60, 0x7f}, {0xa0, 0xaf}}, 3,
     {BEST, BEST, BEST}, (int64_t)32 << 20},
};

const int cbn_nprofiles = (int)(sizeof(cbn_profiles) / sizeof(cbn_profiles[0]));

int64_t cbn_along_max_bytes = INT64_MAX;

static int matches(const cbn_profile *p, cbn_cpu_id id)
{
    if (!p->vendor[0] || strcmp(p->vendor, id.vendor) != 0 || p->family != id.family)
        return 0;
    if (p->nmodels == 0)
        return 1;
    for (int i = 0; i < p->nmodels; i++)
        if (id.model >= p->models[i][0] && id.model <= p->models[i][1])
            return 1;
    return 0;
}

int cbn_profile_for(cbn_cpu_id id)
{
    for (int i = 1; i < cbn_nprofiles; i++)
        if (matches(&cbn_profiles[i], id))
            return i;
    return 0;
}
