/*
 * simd/neon.h -- the arm64 baseline: NEON (Advanced SIMD), 2 doubles or 4
 * floats a vector, with fused multiply-add. Part of every arm64 CPU.
 */
#include <math.h>
#include <arm_neon.h>

#define CBN_ISA_NAME "neon"
#define VD_N 2
#define VF_N 4
#define CBN_VREGS 32 /* vector registers */
typedef float64x2_t vd;
typedef float32x4_t vf;

static inline vd vd_zero(void) { return vdupq_n_f64(0.0); }
static inline vd vd_set1(double a) { return vdupq_n_f64(a); }
static inline vd vd_add(vd a, vd b) { return vaddq_f64(a, b); }
static inline vd vd_sub(vd a, vd b) { return vsubq_f64(a, b); }
static inline vd vd_mul(vd a, vd b) { return vmulq_f64(a, b); }
static inline vd vd_fmadd(vd a, vd b, vd c) { return vfmaq_f64(c, a, b); }
static inline vd vd_loadu(const double *p) { return vld1q_f64(p); }
static inline void vd_storeu(double *p, vd a) { vst1q_f64(p, a); }
static inline double vd_hsum(vd a) { return vgetq_lane_f64(a, 0) + vgetq_lane_f64(a, 1); }
static inline void vd_load2_f32(const float *p, vd *lo, vd *hi)
{
    float32x4_t v = vld1q_f32(p);
    *lo = vcvt_f64_f32(vget_low_f32(v));
    *hi = vcvt_high_f64_f32(v);
}

static inline vf vf_set1(float a) { return vdupq_n_f32(a); }
static inline vf vf_sub(vf a, vf b) { return vsubq_f32(a, b); }
static inline vf vf_add(vf a, vf b) { return vaddq_f32(a, b); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return vfmaq_f32(c, a, b); }
static inline vf vf_loadu(const float *p) { return vld1q_f32(p); }
static inline void vf_storeu(float *p, vf a) { vst1q_f32(p, a); }

/* arm64 has no streaming store intrinsic worth using here: plain stores. */
/* 0 > a ? 0 : a by a compare and a select, + 0 turning -0.0 into +0.0 (see
   the README) */
static inline vd vd_relu(vd a)
{
    const vd z = vdupq_n_f64(0.0);
    return vaddq_f64(vbslq_f64(vcgtq_f64(z, a), z, a), z);
}
static inline vf vf_relu(vf a)
{
    const vf z = vdupq_n_f32(0.0f);
    return vaddq_f32(vbslq_f32(vcgtq_f32(z, a), z, a), z);
}
/* a's lane k where bit k of w is set, else +0.0 (the gate of kernels/gate.h) */
static inline vd vd_keep_bits(vd a, unsigned w)
{
    const uint64x2_t sel = {1, 2};
    const uint64x2_t m = vtstq_u64(vdupq_n_u64(w), sel);
    return vreinterpretq_f64_u64(vandq_u64(vreinterpretq_u64_f64(a), m));
}
/* bit k set where lane k of a is > 0 (not NaN): a ReLU's mask (kernels/gate.h);
   NEON has no movemask: each lane's compare selects its bit, then a sum */
static inline unsigned vd_pos_bits(vd a)
{
    const uint64x2_t sel = {1, 2};
    return (unsigned)vaddvq_u64(vandq_u64(vcgtq_f64(a, vdupq_n_f64(0.0)), sel));
}
static inline unsigned vf_pos_bits(vf a)
{
    const uint32x4_t sel = {1, 2, 4, 8};
    return (unsigned)vaddvq_u32(vandq_u32(vcgtq_f32(a, vdupq_n_f32(0.0f)), sel));
}
static inline vf vf_keep_bits(vf a, unsigned w)
{
    const uint32x4_t sel = {1, 2, 4, 8};
    const uint32x4_t m = vtstq_u32(vdupq_n_u32(w), sel);
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(a), m));
}

static inline void vd_stream(double *p, vd a) { vst1q_f64(p, a); }
static inline void vf_stream(float *p, vf a) { vst1q_f32(p, a); }
static inline void stream_fence(void) {}

/* Scalar a*b + c rounded like vd_fmadd/vf_fmadd (fused here), for the
   elements before and after the vector loops. */
static inline double sd_fmadd(double a, double b, double c) { return fma(a, b, c); }
static inline float sf_fmadd(float a, float b, float c) { return fmaf(a, b, c); }
