/*
 * cbn.h -- the C core of cbn: batch normalization kernels.
 *
 * This header is the contract between the C core and everything built on it
 * (the Cython package, downstream C code). It is plain C99 and needs no Python.
 *
 * Data layout
 * -----------
 * Every kernel sees its data as one C-contiguous block of shape
 * (outer, C, inner): element (o, c, i) lives at index (o*C + c)*inner + i.
 * C is the number of features; the batch of feature c is the outer*inner
 * elements with that c, so m = outer*inner is the batch size. Examples:
 *   N x C            -> (N, C, 1)
 *   NCHW             -> (N, C, H*W)
 *   NHWC             -> (N*H*W, C, 1)
 * All sizes are int64_t, so blocks of more than 2^31 elements work.
 *
 * Per-feature arrays (gamma, beta, mean, var, dgamma, dbeta) have C entries
 * and are double whatever the data type: statistics are accumulated and kept
 * in double, and float32 data far from zero stays accurate because the
 * kernels subtract the mean in a split (hi + lo) form before scaling.
 * gamma == NULL means 1 and beta == NULL means 0.
 *
 * Units: mean is in x's units, var and eps (added to var) in x's units
 * squared; y = xhat*gamma + beta with xhat = (x - mean)/sqrt(var + eps)
 * dimensionless. The gradients are derivatives of one loss L: dy = dL/dy in,
 * dx = dL/dx, dgamma = dL/dgamma, dbeta = dL/dbeta out.
 *
 * Naming: cbn_<operation>_<dtype>, dtype f32 (float) or f64 (double).
 *
 * Errors
 * ------
 * Every function returns CBN_OK (0) or a negative cbn_status; on error no
 * output has been written. Kernels never print or abort, and never touch
 * Python; they are safe to call without the GIL. They allocate memory only
 * when threads share the batch of a few features (two doubles per feature
 * and segment, for the partial sums), and if that fails they compute the
 * same result without it.
 *
 * Threads
 * -------
 * When built with OpenMP, kernels split the work over features, or over
 * fixed segments of the batch when features are few, using
 * cbn_set_num_threads' count if set, else the OpenMP thread count of the
 * calling thread (OMP_NUM_THREADS, omp_set_num_threads, threadpoolctl);
 * problems under 65536 elements stay serial. Every reduction has an order
 * fixed by the shape, so results are bitwise identical for any number of
 * threads. Different calls may run concurrently on different outputs.
 * The statistics, forward and backward kernels are threaded this way;
 * cbn_update_running and the configuration functions are serial.
 * GNU libgomp is not fork-safe: in a process forked after cbn ran on several
 * threads, call cbn_set_num_threads(1) before any other cbn call (one-thread
 * calls never enter OpenMP). cbn's Python module does so in a forked child.
 *
 * Instruction sets
 * ----------------
 * The kernels exist at several SIMD levels (cbn_simd_level). On first use a
 * tuning profile is chosen from the CPU's vendor, family and model (CPUID):
 * it names the level of each pass (cbn_pass) -- the best level the CPU
 * supports unless measurement on that kind of CPU found another faster --
 * and the prefetch tunings whose best value depends on the
 * microarchitecture. cbn_simd_set forces one level on every pass,
 * cbn_simd_set_pass on one (for testing, or to rule a level out), and
 * cbn_profile_set another profile; none of them changes results beyond
 * choosing a level, whose kernels are tested against the scalar reference.
 *
 * In-place use: y (or dx) may be the same pointer as x, but must not
 * otherwise overlap the inputs.
 */
#ifndef CBN_H
#define CBN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cbn_status {
    CBN_OK = 0,
    CBN_ERR_ARG = -1,    /* a NULL pointer where data is required, a negative
                            size, or outer*C*inner overflows int64_t */
    CBN_ERR_EMPTY = -2,  /* batch statistics requested for an empty batch
                            (outer*inner == 0 while C > 0) */
    CBN_ERR_EPS = -3     /* eps negative or NaN */
} cbn_status;

/* A short English description of a status code (static storage). */
const char *cbn_status_message(int status);

/* ------------------------------------------------------ configuration --- */

typedef enum cbn_simd_level {
    CBN_SIMD_SCALAR = 0,    /* plain C: the reference */
    CBN_SIMD_BASELINE = 1,  /* what every CPU of the architecture has:
                               SSE2 on x86-64, NEON on arm64 */
    CBN_SIMD_AVX2 = 2,      /* x86-64 with AVX2 and FMA */
    CBN_SIMD_AVX512 = 3     /* x86-64 with AVX-512F */
} cbn_simd_level;

/* Whether `level` can run on this CPU (1) or not (0). */
int cbn_simd_supported(int level);
/* The highest supported level. */
int cbn_simd_best(void);
/* The level in use. */
int cbn_simd_get(void);
/* Use `level` from now on: CBN_OK, or CBN_ERR_ARG if unsupported. Not to be
   called while kernels run in other threads. */
int cbn_simd_set(int level);
/* The level's name ("scalar", "sse2", "neon", "avx2", "avx512"), NULL if
   `level` is not a level. */
const char *cbn_simd_name(int level);

/* The passes whose SIMD level is chosen apart. */
typedef enum cbn_pass {
    CBN_PASS_TRAIN = 0,     /* statistics and training forward */
    CBN_PASS_INFER = 1,     /* forward with given statistics */
    CBN_PASS_BACKWARD = 2,  /* backward and backward_dx */
    CBN_NPASSES = 3
} cbn_pass;

/* The level `pass` runs at; -1 if `pass` is not a pass. cbn_simd_get is
   the training pass's. */
int cbn_simd_get_pass(int pass);
/* Run `pass` at `level` from now on, the other passes unchanged: CBN_OK, or
   CBN_ERR_ARG if either is not valid here. Not to be called while kernels
   run in other threads. */
int cbn_simd_set_pass(int pass, int level);
/* The pass's name ("train", "infer", "backward"), NULL if not a pass. */
const char *cbn_pass_name(int pass);

/* Tuning profiles, 0 .. cbn_profile_count() - 1; profile 0 is "generic".
   Any profile can be forced on any CPU: a level it names that the CPU lacks
   is lowered to the best one the CPU has. */
int cbn_profile_count(void);
/* The profile's name (e.g. "generic", "amd-zen4"), NULL if not a profile. */
const char *cbn_profile_name(int profile);
/* The profile this CPU selects, and the one in use. */
int cbn_profile_detected(void);
int cbn_profile_get(void);
/* Use `profile` from now on, every pass at its level (undoing
   cbn_simd_set): CBN_OK, or CBN_ERR_ARG if it is not a profile. Not to be
   called while kernels run in other threads. */
int cbn_profile_set(int profile);
/* The CPU as CPUID names it: the vendor string (12 characters and a NUL
   into vendor[13]), and the display family and model; "", 0, 0 where
   there is no CPUID. */
void cbn_cpu_info(char vendor[13], int *family, int *model);

/* Threads for the following calls, from any thread: n >= 1, or 0 to follow
   OpenMP's default again. CBN_ERR_ARG for n < 0. Ignored (always one thread)
   in a build without OpenMP. */
int cbn_set_num_threads(int n);
/* The thread count a call would use now (1 in a build without OpenMP). */
int cbn_get_num_threads(void);
/* The OpenMP version the core was built with (e.g. 201511), 0 if none. */
int cbn_openmp_version(void);

/*
 * Batch statistics.
 *
 * mean[c] = (1/m) sum x,  var[c] = (1/m) sum (x - mean[c])^2  (biased),
 * computed in double, reading the data once: each chunk of a feature's
 * batch is summed around a shift near its mean (the corrected two-pass
 * formula), and summed again exactly, while still in cache, when the shift
 * was too far off to be accurate; the chunks' moments are merged in a fixed
 * order (Chan et al.). Needs m >= 1.
 * Errors: CBN_ERR_ARG (x, mean or var NULL with data, bad sizes),
 * CBN_ERR_EMPTY (m == 0 while C > 0). C == 0 is OK and writes nothing.
 */
int cbn_stats_f32(const float *x, int64_t outer, int64_t C, int64_t inner,
                  double *mean, double *var);
int cbn_stats_f64(const double *x, int64_t outer, int64_t C, int64_t inner,
                  double *mean, double *var);

/*
 * Batch statistics over the values that are not NaN (nan_policy 'omit'):
 * count[c] is the number of feature c's values that are not NaN, and mean[c]
 * and var[c] (biased: divided by count[c]) are taken over those values, in
 * double, within a few units in the last place; NaN for a feature with no
 * such value. +-Inf counts as a value. Without NaN in a feature this is
 * cbn_stats' result, at its speed, with count[c] = m; a feature holding NaN
 * is read again (twice, in order, by scalar code). m may be 0 (every count
 * 0, every mean and variance NaN). Results do not depend on the threads.
 * Errors: CBN_ERR_ARG (x, count, mean or var NULL where needed, bad sizes).
 */
int cbn_stats_omit_f32(const float *x, int64_t outer, int64_t C, int64_t inner,
                       int64_t *count, double *mean, double *var);
int cbn_stats_omit_f64(const double *x, int64_t outer, int64_t C, int64_t inner,
                       int64_t *count, double *mean, double *var);

/*
 * Forward in training: batch statistics, then
 *   y = (x - mean) / sqrt(var + eps) * gamma + beta.
 * mean and var (C entries each) receive the batch statistics; either may be
 * NULL if not wanted. Needs m >= 1 and eps >= 0.
 * Errors: CBN_ERR_ARG (x or y NULL with data, bad sizes), CBN_ERR_EPS,
 * CBN_ERR_EMPTY (m == 0 while C > 0).
 */
int cbn_forward_train_f32(const float *x, float *y,
                          int64_t outer, int64_t C, int64_t inner,
                          const double *gamma, const double *beta, double eps,
                          double *mean, double *var);
int cbn_forward_train_f64(const double *x, double *y,
                          int64_t outer, int64_t C, int64_t inner,
                          const double *gamma, const double *beta, double eps,
                          double *mean, double *var);

/*
 * Forward with given statistics (inference, frozen layers):
 *   y = (x - mean) / sqrt(var + eps) * gamma + beta
 * with mean and var supplied (C entries each, required). m may be 0
 * (nothing is read or written).
 * Errors: CBN_ERR_ARG (x, y, mean or var NULL with data, bad sizes),
 * CBN_ERR_EPS.
 */
int cbn_forward_infer_f32(const float *x, float *y,
                          int64_t outer, int64_t C, int64_t inner,
                          const double *mean, const double *var,
                          const double *gamma, const double *beta, double eps);
int cbn_forward_infer_f64(const double *x, double *y,
                          int64_t outer, int64_t C, int64_t inner,
                          const double *mean, const double *var,
                          const double *gamma, const double *beta, double eps);

/*
 * The forwards above, fused with what follows a batch norm in a CNN:
 *   z = BN(x) (+ residual[i] when residual is not NULL),
 *   y = max(z, 0) when relu is nonzero, else z,
 * in one pass over the data. Each step rounds in T as the separate steps
 * would (BN(x) to T, then the addition in T), and the ReLU is
 * numpy.maximum(z, 0)'s: NaN stays NaN and -0.0 becomes +0.0; so y is
 * bitwise the unfused result (where both BN(x) and the residual are NaN,
 * y is a NaN, but which of the two, as in the unfused sum, is up to the
 * compiler). residual has x's layout and size; it may be
 * the same array as y (not otherwise overlap it), as x may. With residual
 * NULL and relu 0 these are the plain forwards. Errors as theirs.
 */
int cbn_forward_train_fused_f32(const float *x, float *y,
                                int64_t outer, int64_t C, int64_t inner,
                                const double *gamma, const double *beta, double eps,
                                double *mean, double *var,
                                const float *residual, int relu);
int cbn_forward_train_fused_f64(const double *x, double *y,
                                int64_t outer, int64_t C, int64_t inner,
                                const double *gamma, const double *beta, double eps,
                                double *mean, double *var,
                                const double *residual, int relu);
int cbn_forward_infer_fused_f32(const float *x, float *y,
                                int64_t outer, int64_t C, int64_t inner,
                                const double *mean, const double *var,
                                const double *gamma, const double *beta, double eps,
                                const float *residual, int relu);
int cbn_forward_infer_fused_f64(const double *x, double *y,
                                int64_t outer, int64_t C, int64_t inner,
                                const double *mean, const double *var,
                                const double *gamma, const double *beta, double eps,
                                const double *residual, int relu);

/*
 * Backward. With invstd = 1/sqrt(var + eps) and xhat = (x - mean)*invstd:
 *   dbeta[c]  = sum dy,   dgamma[c] = sum dy*xhat        (over the batch)
 * and, when batch_stats is nonzero (mean, var were x's batch statistics):
 *   dx = gamma*invstd/m * (m*dy - dbeta - xhat*dgamma)
 * or, when batch_stats is zero (mean, var were fixed):
 *   dx = gamma*invstd*dy.
 * dx may be NULL (only the parameter gradients are computed); dgamma and
 * dbeta may be NULL if not wanted. One pass over dy and x accumulates the
 * sums in double (dgamma as invstd * sum dy*(x - mean)); a second one, when
 * dx is wanted, writes dx = a*dy + b*(x - mean) + k0 with each feature's
 * a = gamma*invstd, b = -gamma*invstd^2*dgamma/m, k0 = -gamma*invstd*dbeta/m
 * (b = k0 = 0 without batch_stats): the formula above rearranged, in the
 * data type with the mean split as in the forward pass (in double for a
 * float32 feature whose coefficients float cannot hold).
 * mean and var (required when C > 0) and eps must be those of the forward
 * pass; gamma == NULL means 1. With m == 0 and batch_stats zero, dgamma and
 * dbeta are set to 0 and dx is not touched.
 * Errors: CBN_ERR_ARG (dy or x NULL with data, mean or var NULL while
 * C > 0, bad sizes), CBN_ERR_EPS, CBN_ERR_EMPTY (batch_stats with m == 0
 * while C > 0).
 */
int cbn_backward_f32(const float *dy, const float *x, float *dx,
                     int64_t outer, int64_t C, int64_t inner,
                     const double *mean, const double *var,
                     const double *gamma, double eps, int batch_stats,
                     double *dgamma, double *dbeta);
int cbn_backward_f64(const double *dy, const double *x, double *dx,
                     int64_t outer, int64_t C, int64_t inner,
                     const double *mean, const double *var,
                     const double *gamma, double eps, int batch_stats,
                     double *dgamma, double *dbeta);

/*
 * Backward through a ReLU after the batch norm (and a residual added before
 * it), fused: cbn_backward of dy masked by where the forward's ReLU passed
 * its input, that is, of dy where it passes and +0.0 elsewhere -- bitwise
 * what cbn_backward computes from such a masked copy of dy, without the
 * pass that would make it. Where it passes, given by one of
 *   y     the forward's output (x's layout): where y > 0 (not at 0 or NaN);
 *   bits  a bit mask, bit e of byte e/8 (lowest bit first, as
 *         numpy.packbits(..., bitorder="little")) for element e of the block:
 *         set where the gradient passes.
 * One of y and bits (not both: CBN_ERR_ARG) is non-NULL; both NULL is
 * cbn_backward. dx is required with a gate (CBN_ERR_ARG otherwise, unless
 * the block is empty); it may be dy itself, but must not overlap x, y or
 * bits. The gradient for the residual is the masked dy; this does not write
 * it. The loops apply bits as they read dy; y gates each piece of dy into
 * a buffer that stays in L1 (inner > 1) or dy into dx in a pass of its own
 * first (the rows layout, inner == 1): a bit mask is the faster gate.
 * Other arguments and errors as cbn_backward's.
 */
int cbn_backward_gated_f32(const float *dy, const float *x, float *dx,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *mean, const double *var,
                           const double *gamma, double eps, int batch_stats,
                           double *dgamma, double *dbeta,
                           const float *y, const uint8_t *bits);
int cbn_backward_gated_f64(const double *dy, const double *x, double *dx,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *mean, const double *var,
                           const double *gamma, double eps, int batch_stats,
                           double *dgamma, double *dbeta,
                           const double *y, const uint8_t *bits);

/*
 * nan_policy 'omit' in the backward: the gradients of a forward that left
 * NaN out of its statistics (mean and var over each feature's values that
 * are not NaN, cbn_stats_omit). Where x is NaN, dx is 0 and the element is
 * left out of dgamma and dbeta; a feature's batch size in the dx formula is
 * its count of the other elements. A feature without NaN in x gets
 * cbn_backward's results, at its speed; one with NaN (any feature whose
 * fast sums come out NaN) is redone in double by scalar code, in order.
 * dx, dgamma and dbeta are required (when there is data), and dx must not
 * share memory with dy or x (they are read again). Other arguments and
 * errors as cbn_backward's.
 */
int cbn_backward_omit_f32(const float *dy, const float *x, float *dx,
                          int64_t outer, int64_t C, int64_t inner,
                          const double *mean, const double *var,
                          const double *gamma, double eps, int batch_stats,
                          double *dgamma, double *dbeta);
int cbn_backward_omit_f64(const double *dy, const double *x, double *dx,
                          int64_t outer, int64_t C, int64_t inner,
                          const double *mean, const double *var,
                          const double *gamma, double eps, int batch_stats,
                          double *dgamma, double *dbeta);

/*
 * The mask of a ReLU's output y (n values), for cbn_backward_gated: bit
 * e % 8 of bits[e / 8] set where y[e] > 0 (not at 0, not NaN), the last
 * byte's bits past n clear; numpy.packbits(y > 0, bitorder="little") of the
 * block. bits has (n + 7) / 8 bytes. One pass over y, threads over the bytes.
 * Errors: CBN_ERR_ARG (n < 0, y or bits NULL while n > 0).
 */
int cbn_relu_mask_f32(const float *y, int64_t n, uint8_t *bits);
int cbn_relu_mask_f64(const double *y, int64_t n, uint8_t *bits);

/*
 * Backward's dx with batch statistics, from given gradient sums: for a block
 * that is one part of a larger batch of m values per feature (synchronized
 * batch norm: each process holds a slice of the batch), with mean and var
 * the whole batch's statistics and dgamma, dbeta the whole batch's sums
 * (cbn_backward's, with batch_stats zero, added up over the parts):
 *   dx = gamma*invstd/m * (m*dy - dbeta - xhat*dgamma).
 * With the block's own sums and m = outer*inner this is cbn_backward's dx.
 * Needs m >= 1 and m >= outer*inner; an empty block writes nothing.
 * Errors: CBN_ERR_ARG (dy, x, dx, mean, var, dgamma or dbeta NULL with data,
 * bad sizes or m), CBN_ERR_EPS.
 */
int cbn_backward_dx_f32(const float *dy, const float *x, float *dx,
                        int64_t outer, int64_t C, int64_t inner,
                        const double *mean, const double *var,
                        const double *gamma, double eps, int64_t m,
                        const double *dgamma, const double *dbeta);
int cbn_backward_dx_f64(const double *dy, const double *x, double *dx,
                        int64_t outer, int64_t C, int64_t inner,
                        const double *mean, const double *var,
                        const double *gamma, double eps, int64_t m,
                        const double *dgamma, const double *dbeta);

/*
 * Running-statistics update after a training step on a batch of m values
 * per feature, with weight factor f in [0, 1] (momentum, or 1/T for the
 * cumulative average over T batches):
 *   running_mean = (1 - f)*running_mean + f*mean
 *   running_var  = (1 - f)*running_var  + f*var*m/(m - 1)
 * (the unbiased variance, as PyTorch keeps it). Computed in double, rounded
 * once to the running statistics' type. Needs m >= 2.
 * Errors: CBN_ERR_ARG (m < 2, f outside [0, 1] or NaN, C < 0, a NULL array
 * while C > 0). Serial; O(C).
 */
int cbn_update_running_f32(float *running_mean, float *running_var,
                           const double *mean, const double *var, int64_t C,
                           int64_t m, double f);
int cbn_update_running_f64(double *running_mean, double *running_var,
                           const double *mean, const double *var, int64_t C,
                           int64_t m, double f);

#ifdef __cplusplus
}
#endif

#endif /* CBN_H */
