/* Declarations of minisnn's C core (also fed to cffi's cdef by build_core.py). */
enum { SG_SIGMOID = 0, SG_ATAN = 1, SG_RECTANGLE = 2, SG_TRIANGLE = 3 };

void lif_forward_float(const float *x, float *s, float *u, float *h_out, float *h,
                       const float *decay, int decay_vec, const float *gain, int gain_vec,
                       const float *v0, int v0_vec, long T, long M, float v_th,
                       float v_reset, int hard, float v_rest);
void lif_forward_double(const double *x, double *s, double *u, double *h_out, double *h,
                        const double *decay, int decay_vec, const double *gain, int gain_vec,
                        const double *v0, int v0_vec, long T, long M, double v_th,
                        double v_reset, int hard, double v_rest);
void lif_backward_float(const float *gs, const float *gu, const float *x, const float *s,
                        const float *u, float *gx, float *gdecay, float *ggain, float *gv0,
                        float *gh, const float *decay, int decay_vec, const float *gain,
                        int gain_vec, const float *v0, int v0_vec, long T, long M, float v_th,
                        float v_reset, int hard, float v_rest, int detach_reset, int sg_kind,
                        float sg_param);
void lif_backward_double(const double *gs, const double *gu, const double *x, const double *s,
                         const double *u, double *gx, double *gdecay, double *ggain, double *gv0,
                         double *gh, const double *decay, int decay_vec, const double *gain,
                         int gain_vec, const double *v0, int v0_vec, long T, long M, double v_th,
                         double v_reset, int hard, double v_rest, int detach_reset, int sg_kind,
                         double sg_param);
void sltrp_float(const float *r_out, const float *gamma, float *r_in, float *r_init, long T, long M);
void sltrp_double(const double *r_out, const double *gamma, double *r_in, double *r_init, long T, long M);
