/*
 * simd/scalar.h -- the vector layer with one lane: plain C arithmetic.
 * Kernels compiled against it are the reference the SIMD levels are tested
 * against. simd/README.md states what every level's header must define.
 */
#define CBN_ISA_NAME "scalar"
#define VD_N 1
#define VF_N 1
#define CBN_VREGS 16 /* vector registers */
typedef double vd;
typedef float vf;

static inline vd vd_zero(void) { return 0.0; }
static inline vd vd_set1(double a) { return a; }
static inline vd vd_add(vd a, vd b) { return a + b; }
static inline vd vd_sub(vd a, vd b) { return a - b; }
static inline vd vd_mul(vd a, vd b) { return a * b; }
static inline vd vd_fmadd(vd a, vd b, vd c) { return a * b + c; }
static inline vd vd_loadu(const double *p) { return *p; }
static inline void vd_storeu(double *p, vd a) { *p = a; }
static inline double vd_hsum(vd a) { return a; }
static inline void vd_load2_f32(const float *p, vd *lo, vd *hi)
{
    *lo = (double)p[0];
    *hi = (double)p[1];
}

static inline vf vf_set1(float a) { return a; }
static inline vf vf_sub(vf a, vf b) { return a - b; }
static inline vf vf_add(vf a, vf b) { return a + b; }
static inline vf vf_fmadd(vf a, vf b, vf c) { return a * b + c; }
static inline vf vf_loadu(const float *p) { return *p; }
static inline void vf_storeu(float *p, vf a) { *p = a; }

/* Streaming (non-temporal) stores of a vector to an address aligned to its
   size, and the fence that orders them; plain stores here. */
/* + 0 turns -0.0 into +0.0, as numpy.maximum(a, 0) does (see the README) */
static inline vd vd_relu(vd a) { return (0.0 > a ? 0.0 : a) + 0.0; }
static inline vf vf_relu(vf a) { return (0.0f > a ? 0.0f : a) + 0.0f; }
/* a's lane k where bit k of w is set, else +0.0 (the gate of kernels/gate.h) */
static inline vd vd_keep_bits(vd a, unsigned w) { return w & 1u ? a : 0.0; }
static inline vf vf_keep_bits(vf a, unsigned w) { return w & 1u ? a : 0.0f; }
/* bit k set where lane k of a is > 0 (not NaN): a ReLU's mask (kernels/gate.h) */
static inline unsigned vd_pos_bits(vd a) { return a > 0.0; }
static inline unsigned vf_pos_bits(vf a) { return a > 0.0f; }

static inline void vd_stream(double *p, vd a) { *p = a; }
static inline void vf_stream(float *p, vf a) { *p = a; }
static inline void stream_fence(void) {}

/* Scalar a*b + c rounded like vd_fmadd/vf_fmadd (not fused here), for the
   elements before and after the vector loops. */
static inline double sd_fmadd(double a, double b, double c) { return a * b + c; }
static inline float sf_fmadd(float a, float b, float c) { return a * b + c; }
