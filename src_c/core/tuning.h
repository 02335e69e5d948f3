/*
 * core/tuning.h -- the numbers that cut a block into pieces and choose among
 * the kernels' code paths. No code, no dependencies: cbn.kernels exports
 * them (cbn.kernels.CHUNK, ...), so the tests derive the shapes that reach
 * each path from the same numbers the kernels use.
 *
 * The first three fix the reduction tree (see "The reduction tree" in
 * core/geometry.h): changing them changes results in the last bits. The
 * others only choose how a result is computed (threads, stores, prefetches,
 * strips); the tests hold the paths they select to the same results.
 */
#ifndef CBN_CORE_TUNING_H
#define CBN_CORE_TUNING_H

#include <stdint.h>

#define CHUNK 2048      /* elements per chunk (planes layout) */
#define SEG_CHUNKS 16   /* chunks per segment */
#define ROW_BLOCK 1024  /* features per column block (rows layout) */

/* Features up to which planes inference (NCHW with given statistics) makes
   every feature's coefficients once per call, on the stack, instead of once
   per run: a square root and a division per run of NCHW (32,256,14,14)
   float32 were a quarter of its time on an AMD EPYC Zen 3. */
#define INFER_COEFS 1024

/* Work (elements) below which a kernel stays serial: opening an OpenMP
   parallel region costs more than normalizing a few thousand numbers. */
#define CBN_PARALLEL_MIN_WORK 65536

/* Output size from which kernels use streaming stores (see "Output stores"
   in kernels/contiguous.h): for training and backward, whose outputs are
   written from data just read into L2, and for inference with given
   statistics, a pure stream that only gains once the data are well beyond
   what the last-level cache holds. Measured, not derived: on the
   development VM (Xeon, AVX-512), NCHW eval of 25.7 MB (float32) took
   1.02x the copy with ordinary stores and 1.20x with streaming ones, of
   51 MB (float64) 1.07x and 0.74x. See the benchmark (python -m cbn bench).
   That eval threshold is the planes' (NCHW) alone. The rows layouts' eval is
   the flat pass of their training forward, and streams from the training
   threshold: on an AMD EPYC Zen 4, NHWC (32,56,56,64) float32 eval took
   1.25-1.29x the copy with ordinary stores and 0.81-0.89x with streaming
   ones, where NCHW of the same size was no faster streamed (0.62-0.73x
   against 0.78-0.80x). Not yet measured on the Xeon. */
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
   for it (see "Prefetching along a feature" in core/prefetch.h). */
#ifndef CBN_PREFETCH_ALONG_BYTES
#define CBN_PREFETCH_ALONG_BYTES ((int64_t)8192)
#endif

#endif /* CBN_CORE_TUNING_H */
