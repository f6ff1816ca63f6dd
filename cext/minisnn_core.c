/* minisnn's C core: the two loops over time that NumPy cannot vectorise.
 *
 * Every array is a flat, C-contiguous [T, M] block (T time steps, M neurons). The neurons are cut
 * into blocks of BLOCK; each block runs its whole time loop while its state (h, gradients of h and
 * of the per-neuron parameters) stays in L1 cache. Every kernel works on the neurons [m0, m1) only,
 * so that minisnn/core.py can run ranges on several threads (cffi releases the GIL during a call).
 * The kernels themselves are written once, in kernels.inc, and
 * compiled twice: for float (REAL = float) and double (REAL = double).
 * Their NumPy twins are in minisnn/core.py; tests assert that both agree.
 */
#include <math.h>
#include <stddef.h>
#include "minisnn_core.h"

#define BLOCK 4096

/* exp for float32 that GCC can vectorise (libm's expf blocks SIMD): x = k*ln2 + r with |r| <= ln2/2,
 * e^r by a degree-6 Taylor polynomial (relative error < 2e-7), 2^k written into the exponent bits. */
static inline float fast_expf(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float k = (x * 1.44269504f + 12582912.0f) - 12582912.0f;   /* round to nearest */
    float r = x - k * 0.693145752f - k * 1.42860677e-6f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    union { float f; int i; } v = { p };
    v.i += (int)k << 23;
    return v.f;
}

#define REAL float
#define EXP fast_expf
#define ABS fabsf
#define FN(name) name##_float
#include "kernels.inc"
#undef REAL
#undef EXP
#undef ABS
#undef FN

#define REAL double
#define EXP exp
#define ABS fabs
#define FN(name) name##_double
#include "kernels.inc"
