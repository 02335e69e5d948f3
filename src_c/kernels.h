/*
 * kernels.h -- internal: the table of kernel implementations.
 *
 * The public functions in cbn.h validate their arguments once and then call
 * through the active table, so an implementation only ever sees valid,
 * non-overlapping blocks with m >= 1 where statistics are needed. Each
 * instruction-set level provides one table; the scalar table is the reference
 * that every faster level is tested against.
 */
#ifndef CBN_KERNELS_H
#define CBN_KERNELS_H

#include <stdint.h>

/* Work (elements) below which a kernel stays serial: opening an OpenMP
   parallel region costs more than normalizing a few thousand numbers. */
#define CBN_PARALLEL_MIN_WORK 65536

/* Output size from which kernels use streaming stores (see "Output stores"
   in kernels_template.h): for training and backward, whose outputs are
   written from data just read into L2, and for inference with given
   statistics, a pure stream that only gains once the data are well beyond
   what the last-level cache holds. Measured, not derived: on the
   development VM (Xeon, AVX-512), NCHW eval of 25.7 MB (float32) took
   1.02x the copy with ordinary stores and 1.20x with streaming ones, of
   51 MB (float64) 1.07x and 0.74x. See the benchmark (python -m cbn bench). */
#ifndef CBN_STREAM_MIN_BYTES  /* -D for experiments */
#define CBN_STREAM_MIN_BYTES ((int64_t)16 << 20)
#endif
#ifndef CBN_STREAM_MIN_BYTES_EVAL
#define CBN_STREAM_MIN_BYTES_EVAL ((int64_t)32 << 20)
#endif

/* Input size from which the rows-layout loops (N x C, channels-last)
   prefetch the rows they will read next: such data come from L3 or memory,
   and the loops, which read a few rows at a time, leave too few misses in
   flight for the hardware prefetchers to hide. For cache-resident inputs the
   prefetches only cost instructions. Measured on the development VM: the
   statistics of (100352, 64) float32 (25.7 MB) 20% faster, of (4096, 64)
   5% slower. */
#ifndef CBN_PREFETCH_MIN_BYTES
#define CBN_PREFETCH_MIN_BYTES ((int64_t)16 << 20)
#endif
#ifndef CBN_PREFETCH_ROWS
#define CBN_PREFETCH_ROWS 8  /* how far ahead */
#endif

/* Rows (N x C, channels-last) of at most this many bytes have their gradient
   sums taken in column strips down the rows, accumulators in registers
   (the statistics always are): for longer rows each step down is a new
   page, which two streams (dy and x) pay for more than the registers save.
   Measured on the development VM, backward float32, 1 MB: C = 128 and 256
   2-9% faster in strips, C = 512 and 1024 7-13% slower. */
#ifndef CBN_STRIP_ROW_BYTES
#define CBN_STRIP_ROW_BYTES 1024
#endif

/* Runs (NCHW) of at most this many bytes are prefetched two runs ahead of
   the statistics and gradient passes (and, written with ordinary stores,
   of the output): a hardware prefetcher needs a few lines of a stream to
   start, which short runs never give it. Measured on the development VM:
   training on (32, 256, 196) float32 (runs of 784 bytes) 15% faster,
   (64, 64, 400) 13%, (32, 128, 512) 15%; runs of 4 KiB were slower. */
#ifndef CBN_PREFETCH_RUN_BYTES
#define CBN_PREFETCH_RUN_BYTES 2048
#endif
#define CBN_PREFETCH_RUNS 2

/* How far ahead a pass that reads one contiguous stream from memory asks
   for it (see "Prefetching along a feature" in kernels_common.h). */
#ifndef CBN_PREFETCH_ALONG_BYTES
#define CBN_PREFETCH_ALONG_BYTES ((int64_t)8192)
#endif

/* Per-data-type entries; T is float (f32) or double (f64). Argument order and
   meaning follow the public functions in cbn.h, except that forward_train
   also serves cbn_stats_*: with y == NULL it only computes the statistics. */
#define CBN_KERNEL_ENTRIES(T, sfx)                                            \
    void (*forward_train_##sfx)(const T *x, T *y, int64_t outer, int64_t C,    \
                                int64_t inner, const double *gamma,           \
                                const double *beta, double eps, double *mean, \
                                double *var);                                 \
    void (*forward_infer_##sfx)(const T *x, T *y, int64_t outer, int64_t C,    \
                                int64_t inner, const double *mean,            \
                                const double *var, const double *gamma,       \
                                const double *beta, double eps);              \
    void (*backward_##sfx)(const T *dy, const T *x, T *dx, int64_t outer,      \
                           int64_t C, int64_t inner, const double *mean,      \
                           const double *var, const double *gamma,            \
                           double eps, int batch_stats, double *dgamma,       \
                           double *dbeta);                                    \
    void (*backward_dx_##sfx)(const T *dy, const T *x, T *dx, int64_t outer,   \
                              int64_t C, int64_t inner, const double *mean,   \
                              const double *var, const double *gamma,         \
                              double eps, int64_t m, const double *dgamma,    \
                              const double *dbeta);

typedef struct cbn_kernel_table {
    const char *name;
    CBN_KERNEL_ENTRIES(float, f32)
    CBN_KERNEL_ENTRIES(double, f64)
} cbn_kernel_table;

#undef CBN_KERNEL_ENTRIES

/* The tables, one per level of cbn_simd_level (cbn.h). The AVX tables exist
   only on x86-64. */
extern const cbn_kernel_table cbn_kernels_scalar;
extern const cbn_kernel_table cbn_kernels_baseline;
#if defined(__x86_64__) || defined(_M_X64)
#define CBN_HAVE_X86_LEVELS 1
extern const cbn_kernel_table cbn_kernels_avx2;
extern const cbn_kernel_table cbn_kernels_avx512;
#endif

/* The thread count kernels use: cbn_set_num_threads' value if set, else
   OpenMP's default for the calling thread; 1 without OpenMP. */
int cbn_threads(void);

/* What the CPU and operating system support (cpu.c). */
int cbn_cpu_has_avx2_fma(void);
int cbn_cpu_has_avx512f(void);

#endif /* CBN_KERNELS_H */
