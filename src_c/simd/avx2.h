/*
 * simd/avx2.h -- AVX2 with FMA: 4 doubles or 8 floats a vector. The including
 * file compiles its functions for this target (see targets/kernels_avx2.c); the
 * dispatcher only selects it when the CPU and OS support AVX2 and FMA.
 */
#include <math.h>
#include <immintrin.h>

#define CBN_ISA_NAME "avx2"
#define VD_N 4
#define VF_N 8
#define CBN_VREGS 16 /* vector registers */
typedef __m256d vd;
typedef __m256 vf;

static inline vd vd_zero(void) { return _mm256_setzero_pd(); }
static inline vd vd_set1(double a) { return _mm256_set1_pd(a); }
static inline vd vd_add(vd a, vd b) { return _mm256_add_pd(a, b); }
static inline vd vd_sub(vd a, vd b) { return _mm256_sub_pd(a, b); }
static inline vd vd_mul(vd a, vd b) { return _mm256_mul_pd(a, b); }
static inline vd vd_fmadd(vd a, vd b, vd c) { return _mm256_fmadd_pd(a, b, c); }
static inline vd vd_loadu(const double *p) { return _mm256_loadu_pd(p); }
static inline void vd_storeu(double *p, vd a) { _mm256_storeu_pd(p, a); }
static inline double vd_hsum(vd a)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
static inline void vd_load2_f32(const float *p, vd *lo, vd *hi)
{
    *lo = _mm256_cvtps_pd(_mm_loadu_ps(p));
    *hi = _mm256_cvtps_pd(_mm_loadu_ps(p + 4));
}

static inline vf vf_set1(float a) { return _mm256_set1_ps(a); }
static inline vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf vf_loadu(const float *p) { return _mm256_loadu_ps(p); }
static inline void vf_storeu(float *p, vf a) { _mm256_storeu_ps(p, a); }

/* VMAXPD returns its second operand unless the first is greater (0 > a ? 0 :
   a, so NaN passes through), and + 0 turns -0.0 into +0.0 (see the README) */
static inline vd vd_relu(vd a)
{
    return _mm256_add_pd(_mm256_max_pd(_mm256_setzero_pd(), a), _mm256_setzero_pd());
}
static inline vf vf_relu(vf a)
{
    return _mm256_add_ps(_mm256_max_ps(_mm256_setzero_ps(), a), _mm256_setzero_ps());
}
/* a's lane k where bit k of w is set, else +0.0 (the gate of kernels/gate.h) */
static inline vd vd_keep_bits(vd a, unsigned w)
{
    const __m256i sel = _mm256_setr_epi64x(1, 2, 4, 8);
    const __m256i m = _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_set1_epi64x(w), sel), sel);
    return _mm256_and_pd(a, _mm256_castsi256_pd(m));
}
/* bit k set where lane k of a is > 0 (not NaN): a ReLU's mask (kernels/gate.h) */
static inline unsigned vd_pos_bits(vd a)
{
    return (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(a, _mm256_setzero_pd(), _CMP_GT_OQ));
}
static inline unsigned vf_pos_bits(vf a)
{
    return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_GT_OQ));
}
static inline vf vf_keep_bits(vf a, unsigned w)
{
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i m = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)w), sel), sel);
    return _mm256_and_ps(a, _mm256_castsi256_ps(m));
}

static inline void vd_stream(double *p, vd a) { _mm256_stream_pd(p, a); }
static inline void vf_stream(float *p, vf a) { _mm256_stream_ps(p, a); }
static inline void stream_fence(void) { _mm_sfence(); }

/* Scalar a*b + c rounded like vd_fmadd/vf_fmadd (fused here), for the
   elements before and after the vector loops. */
static inline double sd_fmadd(double a, double b, double c) { return fma(a, b, c); }
static inline float sf_fmadd(float a, float b, float c) { return fmaf(a, b, c); }
