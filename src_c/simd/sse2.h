/*
 * simd/sse2.h -- the x86-64 baseline: SSE2, 2 doubles or 4 floats a vector.
 * SSE2 is part of x86-64, so this level needs no run-time check. No FMA here:
 * fmadd is a multiply and an add.
 */
#include <emmintrin.h>

#define CBN_ISA_NAME "sse2"
#define VD_N 2
#define VF_N 4
#define CBN_VREGS 16 /* vector registers */
typedef __m128d vd;
typedef __m128 vf;

static inline vd vd_zero(void) { return _mm_setzero_pd(); }
static inline vd vd_set1(double a) { return _mm_set1_pd(a); }
static inline vd vd_add(vd a, vd b) { return _mm_add_pd(a, b); }
static inline vd vd_sub(vd a, vd b) { return _mm_sub_pd(a, b); }
static inline vd vd_mul(vd a, vd b) { return _mm_mul_pd(a, b); }
static inline vd vd_fmadd(vd a, vd b, vd c) { return _mm_add_pd(_mm_mul_pd(a, b), c); }
static inline vd vd_loadu(const double *p) { return _mm_loadu_pd(p); }
static inline void vd_storeu(double *p, vd a) { _mm_storeu_pd(p, a); }
static inline double vd_hsum(vd a)
{
    return _mm_cvtsd_f64(_mm_add_sd(a, _mm_unpackhi_pd(a, a)));
}
static inline void vd_load2_f32(const float *p, vd *lo, vd *hi)
{
    __m128 v = _mm_loadu_ps(p);
    *lo = _mm_cvtps_pd(v);
    *hi = _mm_cvtps_pd(_mm_movehl_ps(v, v));
}

static inline vf vf_set1(float a) { return _mm_set1_ps(a); }
static inline vf vf_sub(vf a, vf b) { return _mm_sub_ps(a, b); }
static inline vf vf_add(vf a, vf b) { return _mm_add_ps(a, b); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
static inline vf vf_loadu(const float *p) { return _mm_loadu_ps(p); }
static inline void vf_storeu(float *p, vf a) { _mm_storeu_ps(p, a); }

/* MAXPD returns its second operand unless the first is greater (0 > a ? 0 :
   a, so NaN passes through), and + 0 turns -0.0 into +0.0 (see the README) */
static inline vd vd_relu(vd a)
{
    return _mm_add_pd(_mm_max_pd(_mm_setzero_pd(), a), _mm_setzero_pd());
}
static inline vf vf_relu(vf a)
{
    return _mm_add_ps(_mm_max_ps(_mm_setzero_ps(), a), _mm_setzero_ps());
}
/* a's lane k where bit k of w is set, else +0.0 (the gate of kernels/gate.h):
   each lane's bit selected and compared, the lane and-ed with the result
   (SSE2 has no 64-bit compare: a double lane's two halves test its bit) */
static inline vd vd_keep_bits(vd a, unsigned w)
{
    const __m128i sel = _mm_set_epi32(2, 2, 1, 1);
    const __m128i m = _mm_cmpeq_epi32(_mm_and_si128(_mm_set1_epi32((int)w), sel), sel);
    return _mm_and_pd(a, _mm_castsi128_pd(m));
}
/* bit k set where lane k of a is > 0 (not NaN): a ReLU's mask (kernels/gate.h) */
static inline unsigned vd_pos_bits(vd a)
{
    return (unsigned)_mm_movemask_pd(_mm_cmpgt_pd(a, _mm_setzero_pd()));
}
static inline unsigned vf_pos_bits(vf a)
{
    return (unsigned)_mm_movemask_ps(_mm_cmpgt_ps(a, _mm_setzero_ps()));
}
static inline vf vf_keep_bits(vf a, unsigned w)
{
    const __m128i sel = _mm_set_epi32(8, 4, 2, 1);
    const __m128i m = _mm_cmpeq_epi32(_mm_and_si128(_mm_set1_epi32((int)w), sel), sel);
    return _mm_and_ps(a, _mm_castsi128_ps(m));
}

static inline void vd_stream(double *p, vd a) { _mm_stream_pd(p, a); }
static inline void vf_stream(float *p, vf a) { _mm_stream_ps(p, a); }
static inline void stream_fence(void) { _mm_sfence(); }

/* Scalar a*b + c rounded like vd_fmadd/vf_fmadd (not fused here), for the
   elements before and after the vector loops. */
static inline double sd_fmadd(double a, double b, double c) { return a * b + c; }
static inline float sf_fmadd(float a, float b, float c) { return a * b + c; }
