/* minisnn's C core: the two loops over time that NumPy cannot vectorise.
 *
 * Layout: every array is a flat, C-contiguous [T, M] block (T time steps, M neurons); the time
 * loop is outside, the neuron loop inside, so the inner loop is a unit-stride SIMD-friendly loop.
 * Per-neuron parameters (decay, gain, v0) are arrays of length M, or of length 1 when `*_vec` is 0.
 * The NumPy twins of these kernels are in minisnn/core.py; tests assert that both agree.
 *
 * Neuron model (DESIGN.md):
 *   charge  u[t] = c*h[t-1] + d*x[t] + (1-c)*v_rest        h[0] = v0
 *   fire    s[t] = (u[t] - v_th >= 0)
 *   reset   hard: h[t] = u[t]*(1-s[t]) + v_reset*s[t]      soft: h[t] = u[t] - v_th*s[t]
 */
#include <math.h>
#include <stddef.h>
#include "minisnn_core.h"

/* Surrogate derivative g'(x), x = u - v_th. */
#define SURROGATE_GRAD(REAL, EXP, ABS)                                                  \
static inline REAL surrogate_grad_##REAL(REAL x, int kind, REAL a) {                    \
    switch (kind) {                                                                     \
    case SG_SIGMOID: { REAL sg = (REAL)1 / ((REAL)1 + EXP(-a * x)); return a * sg * ((REAL)1 - sg); } \
    case SG_ATAN: { REAL z = (REAL)M_PI_2 * a * x; return (a / (REAL)2) / ((REAL)1 + z * z); } \
    case SG_RECTANGLE: return ABS(x) < a / (REAL)2 ? (REAL)1 / a : (REAL)0;            \
    default: { REAL r = a - ABS(x); return r > 0 ? r / (a * a) : (REAL)0; }           \
    }                                                                                   \
}

#define LIF_FORWARD(REAL)                                                               \
void lif_forward_##REAL(const REAL *x, REAL *s, REAL *u, REAL *h_out, REAL *h,         \
                        const REAL *decay, int decay_vec, const REAL *gain, int gain_vec, \
                        const REAL *v0, int v0_vec, long T, long M, REAL v_th,          \
                        REAL v_reset, int hard, REAL v_rest) {                          \
    for (long i = 0; i < M; i++) h[i] = v0[v0_vec ? i : 0];                             \
    for (long t = 0; t < T; t++) {                                                      \
        const REAL *xt = x + t * M; REAL *st = s + t * M, *ut = u + t * M;              \
        for (long i = 0; i < M; i++) {                                                  \
            REAL c = decay[decay_vec ? i : 0], d = gain[gain_vec ? i : 0];              \
            REAL ui = c * h[i] + d * xt[i] + ((REAL)1 - c) * v_rest;                    \
            REAL si = ui >= v_th ? (REAL)1 : (REAL)0;                                   \
            ut[i] = ui; st[i] = si;                                                     \
            h[i] = hard ? ui * ((REAL)1 - si) + v_reset * si : ui - v_th * si;          \
        }                                                                               \
        if (h_out) for (long i = 0; i < M; i++) h_out[t * M + i] = h[i];                \
    }                                                                                   \
}

/* BPTT. Inputs: dL/ds and dL/du (either may be NULL = zero), the forward's x, s, u.
 * Outputs: dL/dx [T, M]; per-neuron sums over time dL/dc, dL/dd, dL/dv0 [M] (any may be NULL).
 * With gh = dL/dh[t] flowing back from step t+1 and sg = g'(u[t] - v_th):
 *   hard: du = gu + (gs + gh*(v_reset - u)*[!detach])*sg + gh*(1 - s)
 *   soft: du = gu + (gs - gh*v_th*[!detach])*sg + gh
 *   dx[t] = d*du,  dc += du*(h[t-1] - v_rest),  dd += du*x[t],  gh <- c*du  (dL/dh[t-1]). */
#define LIF_BACKWARD(REAL)                                                              \
void lif_backward_##REAL(const REAL *gs, const REAL *gu, const REAL *x, const REAL *s,  \
                         const REAL *u, REAL *gx, REAL *gdecay, REAL *ggain, REAL *gv0, \
                         REAL *gh, const REAL *decay, int decay_vec, const REAL *gain,  \
                         int gain_vec, const REAL *v0, int v0_vec, long T, long M, REAL v_th, \
                         REAL v_reset, int hard, REAL v_rest, int detach_reset, int sg_kind, \
                         REAL sg_param) {                                               \
    REAL keep = detach_reset ? (REAL)0 : (REAL)1;                                       \
    for (long i = 0; i < M; i++) {                                                      \
        gh[i] = 0;                                                                      \
        if (gdecay) gdecay[i] = 0;                                                      \
        if (ggain) ggain[i] = 0;                                                        \
    }                                                                                   \
    for (long t = T - 1; t >= 0; t--) {                                                 \
        const long o = t * M;                                                           \
        for (long i = 0; i < M; i++) {                                                  \
            REAL c = decay[decay_vec ? i : 0], d = gain[gain_vec ? i : 0];              \
            REAL ui = u[o + i], si = s[o + i];                                          \
            REAL sg = surrogate_grad_##REAL(ui - v_th, sg_kind, sg_param);              \
            REAL g_s = gs ? gs[o + i] : (REAL)0, g_u = gu ? gu[o + i] : (REAL)0;        \
            REAL du = hard ? g_u + (g_s + gh[i] * (v_reset - ui) * keep) * sg + gh[i] * ((REAL)1 - si) \
                           : g_u + (g_s - gh[i] * v_th * keep) * sg + gh[i];            \
            REAL hprev;                                                                 \
            if (t == 0) hprev = v0[v0_vec ? i : 0];                                     \
            else {                                                                      \
                REAL up = u[o - M + i], sp = s[o - M + i];                              \
                hprev = hard ? up * ((REAL)1 - sp) + v_reset * sp : up - v_th * sp;     \
            }                                                                           \
            gx[o + i] = d * du;                                                         \
            if (gdecay) gdecay[i] += du * (hprev - v_rest);                             \
            if (ggain) ggain[i] += du * x[o + i];                                       \
            gh[i] = c * du;                                                             \
        }                                                                               \
    }                                                                                   \
    if (gv0) for (long i = 0; i < M; i++) gv0[i] = gh[i];                               \
}

/* SLTRP (EventRPG eq. 10-11) for M neurons: R_in[T] = R_out[T]; for t = T..2:
 *   R_in[t-1] = gamma[t]*R_in[t] + R_out[t-1];  R_in[t] = (1 - gamma[t])*R_in[t].
 * The share gamma[1]*R_in[1] belongs to the initial membrane (v0 != 0) and goes to r_init. */
#define SLTRP(REAL)                                                                     \
void sltrp_##REAL(const REAL *r_out, const REAL *gamma, REAL *r_in, REAL *r_init,      \
                  long T, long M) {                                                     \
    for (long i = 0; i < M; i++) r_in[(T - 1) * M + i] = r_out[(T - 1) * M + i];        \
    for (long t = T - 1; t >= 1; t--) {                                                 \
        const long o = t * M;                                                           \
        for (long i = 0; i < M; i++) {                                                  \
            REAL carry = gamma[o + i] * r_in[o + i];                                    \
            r_in[o - M + i] = carry + r_out[o - M + i];                                 \
            r_in[o + i] -= carry;                                                       \
        }                                                                               \
    }                                                                                   \
    for (long i = 0; i < M; i++) {                                                      \
        r_init[i] = gamma[i] * r_in[i];                                                 \
        r_in[i] -= r_init[i];                                                           \
    }                                                                                   \
}

SURROGATE_GRAD(float, expf, fabsf)
SURROGATE_GRAD(double, exp, fabs)
LIF_FORWARD(float)
LIF_FORWARD(double)
LIF_BACKWARD(float)
LIF_BACKWARD(double)
SLTRP(float)
SLTRP(double)
