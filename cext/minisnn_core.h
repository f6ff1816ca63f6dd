/* Declarations of minisnn's C core (also fed to cffi's cdef by build_core.py).
 * Arrays are flat C-contiguous [T, M] blocks; c (decay), d (gain), v0 hold M values when vec != 0,
 * else one. gs, gu, and the forward's u and h_out may be NULL (= zero gradient / not wanted). */
enum { SG_SIGMOID = 0, SG_ATAN = 1, SG_RECTANGLE = 2, SG_TRIANGLE = 3 };

void lif_forward_float(const float *x, float *s, float *u, float *h_out, const float *c, const float *d,
                       const float *v0, int vec, long T, long M, long m0, long m1, float v_th, float v_reset, int hard, float v_rest);
void lif_forward_double(const double *x, double *s, double *u, double *h_out, const double *c, const double *d,
                        const double *v0, int vec, long T, long M, long m0, long m1, double v_th, double v_reset, int hard, double v_rest);
void lif_backward_float(const float *gs, const float *gu, const float *x, const float *u,
                        float *gx, float *gc, float *gd, float *gv, const float *c, const float *d, const float *v0,
                        int vec, long T, long M, long m0, long m1, float v_th, float v_reset, int hard, float v_rest,
                        int detach_reset, int kind, float a, int params);
void lif_backward_double(const double *gs, const double *gu, const double *x, const double *u,
                         double *gx, double *gc, double *gd, double *gv, const double *c, const double *d,
                         const double *v0, int vec, long T, long M, long m0, long m1, double v_th, double v_reset, int hard,
                         double v_rest, int detach_reset, int kind, double a, int params);
void sltrp_float(const float *r_out, const float *gamma, float *r_in, float *r_init, long T, long M, long m0, long m1);
void sltrp_double(const double *r_out, const double *gamma, double *r_in, double *r_init, long T, long M, long m0, long m1);
