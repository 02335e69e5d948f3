/*
 * simd/avx512.h -- AVX-512 (F): 8 doubles or 16 floats a vector. The including
 * file compiles its functions for this target (see targets/kernels_avx512.c); the
 * dispatcher only selects it when the CPU and OS support AVX-512F.
 */
#include <math.h>
#include <immintrin.h>

#define CBN_ISA_NAME "avx512"
#define VD_N 8
#define VF_N 16
#define CBN_VREGS 32 /* vector registers */
typedef __m512d vd;
typedef __m512 vf;

static inline vd vd_zero(void) { return _mm512_setzero_pd(); }
static inline vd vd_set1(double a) { return _mm512_set1_pd(a); }
static inline vd vd_add(vd a, vd b) { return _mm512_add_pd(a, b); }
static inline vd vd_sub(vd a, vd b) { return _mm512_sub_pd(a, b); }
static inline vd vd_mul(vd a, vd b) { return _mm512_mul_pd(a, b); }
static inline vd vd_fmadd(vd a, vd b, vd c) { return _mm512_fmadd_pd(a, b, c); }
static inline vd vd_loadu(const double *p) { return _mm512_loadu_pd(p); }
static inline void vd_storeu(double *p, vd a) { _mm512_storeu_pd(p, a); }
static inline double vd_hsum(vd a)
{
    __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
static inline void vd_load2_f32(const float *p, vd *lo, vd *hi)
{
    *lo = _mm512_cvtps_pd(_mm256_loadu_ps(p));
    *hi = _mm512_cvtps_pd(_mm256_loadu_ps(p + 8));
}

static inline vf vf_set1(float a) { return _mm512_set1_ps(a); }
static inline vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf vf_loadu(const float *p) { return _mm512_loadu_ps(p); }
static inline void vf_storeu(float *p, vf a) { _mm512_storeu_ps(p, a); }

/* VMAXPD returns its second operand unless the first is greater (0 > a ? 0 :
   a, so NaN passes through), and + 0 turns -0.0 into +0.0 (see the README) */
static inline vd vd_relu(vd a)
{
    return _mm512_add_pd(_mm512_max_pd(_mm512_setzero_pd(), a), _mm512_setzero_pd());
}
static inline vf vf_relu(vf a)
{
    return _mm512_add_ps(_mm512_max_ps(_mm512_setzero_ps(), a), _mm512_setzero_ps());
}
/* a's lane k where bit k of w is set, else +0.0 (the gate of kernels/gate.h):
   w is the lane mask itself */
static inline vd vd_keep_bits(vd a, unsigned w)
{
    return _mm512_maskz_mov_pd((__mmask8)w, a);
}
/* bit k set where lane k of a is > 0 (not NaN): a ReLU's mask (kernels/gate.h) */
static inline unsigned vd_pos_bits(vd a)
{
    return (unsigned)_mm512_cmp_pd_mask(a, _mm512_setzero_pd(), _CMP_GT_OQ);
}
static inline unsigned vf_pos_bits(vf a)
{
    return (unsigned)_mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ);
}
static inline vf vf_keep_bits(vf a, unsigned w)
{
    return _mm512_maskz_mov_ps((__mmask16)w, a);
}

static inline void vd_stream(double *p, vd a) { _mm512_stream_pd(p, a); }
static inline void vf_stream(float *p, vf a) { _mm512_stream_ps(p, a); }
static inline void stream_fence(void) { _mm_sfence(); }

/* Scalar a*b + c rounded like vd_fmadd/vf_fmadd (fused here), for the
   elements before and after the vector loops. */
static inline double sd_fmadd(double a, double b, double c) { return fma(a, b, c); }
static inline float sf_fmadd(float a, float b, float c) { return fmaf(a, b, c); }
