/*
 * kernels/gate.h -- the gate of a fused backward (cbn_backward_gated): dy
 * passes where the forward's ReLU passed its input and counts as +0.0
 * elsewhere, so that the backward of BN + ReLU (+ residual) needs no pass of
 * its own to mask dy.
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 *
 * A bit mask gates dy in the loops themselves, as they load it (the
 * load*_gated helpers below: a vector's bits, vt_keep_bits). The forward's
 * output y gates a piece of dy (at most CHUNK elements, see
 * core/geometry.h) into a buffer on the stack, which stays in L1, and the
 * ungated planes loops read that instead of dy; in the rows layout, whose
 * pieces are strided, y gates dy into dx in a pass of its own first
 * (kernels/entry.h). The gated values are dy's or +0.0 exactly, so the sums
 * and dx are bitwise those of the ungated backward of
 * numpy.where(mask, dy, 0).
 */

/* Where dy passes: the forward's output y > 0 (not at 0, not at NaN), or
   bit e (little-endian within each byte, numpy.packbits(...,
   bitorder="little")) of bits set, for element e of the block. One of the
   two is non-NULL. */
typedef struct {
    const T *y;
    const uint8_t *bits;
} FN(gate);

/* The bit mask that the loops apply to dy as they load it, or NULL (no
   gate, or a gate of y). */
static inline const uint8_t *FN(gt_bits)(const FN(gate) *gt)
{
    return gt ? gt->bits : NULL;
}

/* Elements per step of cbn_relu_mask's loop (below): whole bytes, and whole
   vectors (VT_N is 1 to 16, a power of two). */
#undef MASK_STEP
#define MASK_STEP (VT_N > 8 ? VT_N : 8)

/* out[i] = dy[off + i] where y[off + i] > 0, else +0.0, for i < n; out
   may be dy + off (each element is read, then written). A plain loop: each
   target's flags vectorize it. */
static void FN(gate_piece)(const T *y, const T *dy, int64_t off, int64_t n, T *out)
{
    const T *d = dy + off, *g = y + off;
    for (int64_t i = 0; i < n; i++)
        out[i] = g[i] > (T)0 ? d[i] : (T)0;
}

/* dy gated by y over elements [e0, e1), into out (which may be dy): the
   rows layout's gate by y (see FN(backward) in kernels/entry.h). */
static void FN(gate_range)(const FN(gate) *gt, const T *dy, T *out, int64_t e0,
                           int64_t e1)
{
    FN(gate_piece)(gt->y, dy, e0, e1 - e0, out + e0);
}

/* The k <= 16 bits of the mask from bit e on, in the low bits of the result;
   only the bytes holding them are read (none past the mask's end). */
static inline unsigned FN(gate_bits_at)(const uint8_t *bits, int64_t e, int k)
{
    const uint8_t *p = bits + (e >> 3);
    const int s = (int)(e & 7);
    unsigned w = p[0];
    if (s + k > 8)
        w |= (unsigned)p[1] << 8;
    if (s + k > 16)
        w |= (unsigned)p[2] << 16;
    return w >> s;
}

/* dy's loads in the planes loops, gated by bits from element off + i on
   (bits NULL: plain loads; the loops are specialized on it, so that the
   plain ones carry no test): one value, a vector, or 2*VD_N values as two
   double vectors (vt_load2). */
static inline T FN(load1_gated)(const T *dy, int64_t i, const uint8_t *bits, int64_t off)
{
    if (!bits)
        return dy[i];
    return (bits[(off + i) >> 3] >> ((off + i) & 7)) & 1 ? dy[i] : (T)0;
}

static inline VT FN(loadu_gated)(const T *dy, int64_t i, const uint8_t *bits, int64_t off)
{
    const VT v = vt_loadu(dy + i);
    return bits ? vt_keep_bits(v, FN(gate_bits_at)(bits, off + i, VT_N)) : v;
}

static inline void FN(load2_gated)(const T *dy, int64_t i, const uint8_t *bits,
                                   int64_t off, vd *lo, vd *hi)
{
    vt_load2(dy + i, lo, hi);
    if (bits) {
        const unsigned w = FN(gate_bits_at)(bits, off + i, 2 * VD_N);
        *lo = vd_keep_bits(*lo, w);
        *hi = vd_keep_bits(*hi, w >> VD_N);
    }
}

/* The mask of a ReLU's output (cbn_relu_mask): bits of y > 0 for the
   elements of bytes [b0, b1) of the mask, elements [8*b0, min(8*b1, n));
   the last byte's bits past n are 0. Threads take disjoint bytes. */
typedef struct {
    const T *y;
    uint8_t *bits;
    int64_t n;
} FN(mask_job);

static void FN(mask_bytes)(void *ctx, int64_t b0, int64_t b1)
{
    const FN(mask_job) *j = (const FN(mask_job) *)ctx;
    const T *y = j->y;
    uint8_t *bits = j->bits;
    const int64_t end = 8 * b1 < j->n ? 8 * b1 : j->n;
    int64_t e = 8 * b0;
    for (; e + MASK_STEP <= end; e += MASK_STEP) {
        unsigned w = 0;
        for (int k = 0; k < MASK_STEP; k += VT_N)
            w |= vt_pos_bits(vt_loadu(y + e + k)) << k;
        bits[e >> 3] = (uint8_t)w;
        if (MASK_STEP > 8)
            bits[(e >> 3) + 1] = (uint8_t)(w >> 8);
    }
    for (; e < end; e += 8) {
        unsigned w = 0;
        for (int64_t k = 0; k < 8 && e + k < end; k++)
            w |= (unsigned)(y[e + k] > (T)0) << k;
        bits[e >> 3] = (uint8_t)w;
    }
}

static void FN(relu_mask)(const T *y, int64_t n, uint8_t *bits)
{
    FN(mask_job) j = {y, bits, n};
    for_ranges(threads_for(n), (n + 7) / 8, FN(mask_bytes), &j);
}
