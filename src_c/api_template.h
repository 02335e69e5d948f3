/*
 * api_template.h -- the dtype-specific public entry points of cbn.h, written
 * once. Included by dispatch.c with T (float or double) and SFX (f32 or f64)
 * defined; each entry checks its arguments, handles the empty cases and makes
 * one call through the active kernel table.
 */

#define API_CAT_(a, b) a##_##b
#define API_CAT(a, b) API_CAT_(a, b)
#define API(name) API_CAT(name, SFX)

int API(cbn_stats)(const T *x, int64_t outer, int64_t C, int64_t inner,
                    double *mean, double *var)
{
    int s = check_common(outer, C, inner, 0.0, 1, x, x);
    if (s != CBN_OK)
        return s;
    if (C > 0 && (!mean || !var))
        return CBN_ERR_ARG;
    if (C > 0)
        kernels(CBN_PASS_TRAIN)->API(forward_train)(x, NULL, outer, C, inner, NULL, NULL, 0.0,
                                     mean, var, NULL, 0);
    return CBN_OK;
}

int API(cbn_stats_omit)(const T *x, int64_t outer, int64_t C, int64_t inner,
                         int64_t *count, double *mean, double *var)
{
    int s = check_common(outer, C, inner, 0.0, 0, x, x);
    if (s != CBN_OK)
        return s;
    if (C > 0 && (!count || !mean || !var))
        return CBN_ERR_ARG;
    if (C == 0)
        return CBN_OK;
    if (!empty_block(outer, C, inner))
        kernels(CBN_PASS_TRAIN)->API(forward_train)(x, NULL, outer, C, inner, NULL, NULL, 0.0,
                                                    mean, var, NULL, 0);
    omit_job j = {x, sizeof(T) == sizeof(float), outer, C, inner, count, mean, var};
    for_ranges(threads_for(outer * C * inner), C, omit_features, &j);
    return CBN_OK;
}

int API(cbn_forward_train_fused)(const T *x, T *y, int64_t outer, int64_t C,
                                  int64_t inner, const double *gamma,
                                  const double *beta, double eps, double *mean,
                                  double *var, const T *residual, int relu)
{
    int s = check_common(outer, C, inner, eps, 1, x, y);
    if (s != CBN_OK)
        return s;
    if (C > 0)
        kernels(CBN_PASS_TRAIN)->API(forward_train)(x, y, outer, C, inner, gamma, beta, eps,
                                                    mean, var, residual, relu);
    return CBN_OK;
}

int API(cbn_forward_train)(const T *x, T *y, int64_t outer, int64_t C,
                            int64_t inner, const double *gamma,
                            const double *beta, double eps, double *mean,
                            double *var)
{
    return API(cbn_forward_train_fused)(x, y, outer, C, inner, gamma, beta, eps, mean,
                                        var, NULL, 0);
}

int API(cbn_forward_infer_fused)(const T *x, T *y, int64_t outer, int64_t C,
                                  int64_t inner, const double *mean,
                                  const double *var, const double *gamma,
                                  const double *beta, double eps, const T *residual,
                                  int relu)
{
    int s = check_common(outer, C, inner, eps, 0, x, y);
    if (s != CBN_OK)
        return s;
    if (empty_block(outer, C, inner))
        return CBN_OK;
    if (!mean || !var)
        return CBN_ERR_ARG;
    kernels(CBN_PASS_INFER)->API(forward_infer)(x, y, outer, C, inner, mean, var, gamma,
                                                beta, eps, residual, relu);
    return CBN_OK;
}

int API(cbn_forward_infer)(const T *x, T *y, int64_t outer, int64_t C,
                            int64_t inner, const double *mean,
                            const double *var, const double *gamma,
                            const double *beta, double eps)
{
    return API(cbn_forward_infer_fused)(x, y, outer, C, inner, mean, var, gamma, beta,
                                        eps, NULL, 0);
}

int API(cbn_backward_gated)(const T *dy, const T *x, T *dx, int64_t outer,
                             int64_t C, int64_t inner, const double *mean,
                             const double *var, const double *gamma, double eps,
                             int batch_stats, double *dgamma, double *dbeta,
                             const T *y, const uint8_t *bits)
{
    int s = check_common(outer, C, inner, eps, batch_stats, dy, x);
    if (s != CBN_OK)
        return s;
    if ((y && bits) || ((y || bits) && !dx && !empty_block(outer, C, inner)))
        return CBN_ERR_ARG;
    if (C == 0)
        return CBN_OK;
    if (!mean || !var)
        return CBN_ERR_ARG;
    if (empty_block(outer, C, inner)) {
        /* no data: the sums are zero */
        for (int64_t c = 0; c < C; c++) {
            if (dgamma) dgamma[c] = 0.0;
            if (dbeta) dbeta[c] = 0.0;
        }
        return CBN_OK;
    }
    kernels(CBN_PASS_BACKWARD)->API(backward)(dy, x, dx, outer, C, inner, mean, var, gamma,
                                             eps, batch_stats, dgamma, dbeta, y, bits);
    return CBN_OK;
}

int API(cbn_backward)(const T *dy, const T *x, T *dx, int64_t outer,
                       int64_t C, int64_t inner, const double *mean,
                       const double *var, const double *gamma, double eps,
                       int batch_stats, double *dgamma, double *dbeta)
{
    return API(cbn_backward_gated)(dy, x, dx, outer, C, inner, mean, var, gamma, eps,
                                   batch_stats, dgamma, dbeta, NULL, NULL);
}

int API(cbn_backward_omit)(const T *dy, const T *x, T *dx, int64_t outer,
                            int64_t C, int64_t inner, const double *mean,
                            const double *var, const double *gamma, double eps,
                            int batch_stats, double *dgamma, double *dbeta)
{
    if (C > 0 && !empty_block(outer, C, inner) && (!dx || !dgamma || !dbeta))
        return CBN_ERR_ARG;
    int s = API(cbn_backward)(dy, x, dx, outer, C, inner, mean, var, gamma, eps,
                              batch_stats, dgamma, dbeta);
    if (s != CBN_OK || empty_block(outer, C, inner))
        return s;
    omit_backward_job j = {dy, x, dx, sizeof(T) == sizeof(float), outer, C, inner,
                           mean, var, gamma, eps, batch_stats, dgamma, dbeta};
    for_ranges(threads_for(outer * C * inner), C, omit_backward_features, &j);
    return CBN_OK;
}

int API(cbn_backward_dx)(const T *dy, const T *x, T *dx, int64_t outer,
                          int64_t C, int64_t inner, const double *mean,
                          const double *var, const double *gamma, double eps,
                          int64_t m, const double *dgamma, const double *dbeta)
{
    int s = check_common(outer, C, inner, eps, 0, dy, x);
    if (s != CBN_OK)
        return s;
    if (m < 1 || m < outer * inner)
        return CBN_ERR_ARG;
    if (empty_block(outer, C, inner))
        return CBN_OK;
    if (!dx || !mean || !var || !dgamma || !dbeta)
        return CBN_ERR_ARG;
    kernels(CBN_PASS_BACKWARD)->API(backward_dx)(dy, x, dx, outer, C, inner, mean, var, gamma,
                              eps, m, dgamma, dbeta);
    return CBN_OK;
}

int API(cbn_relu_mask)(const T *y, int64_t n, uint8_t *bits)
{
    if (n < 0 || (n > 0 && (!y || !bits)))
        return CBN_ERR_ARG;
    if (n > 0)
        kernels(CBN_PASS_INFER)->API(relu_mask)(y, n, bits);
    return CBN_OK;
}

int API(cbn_update_running)(T *running_mean, T *running_var,
                             const double *mean, const double *var,
                             int64_t C, int64_t m, double f)
{
    if (C < 0 || m < 2 || !(f >= 0.0 && f <= 1.0))
        return CBN_ERR_ARG;
    if (C > 0 && (!running_mean || !running_var || !mean || !var))
        return CBN_ERR_ARG;
    const double unbias = (double)m / (double)(m - 1);
    for (int64_t c = 0; c < C; c++) {
        running_mean[c] = (T)((1.0 - f) * (double)running_mean[c] + f * mean[c]);
        running_var[c] = (T)((1.0 - f) * (double)running_var[c] +
                             f * var[c] * unbias);
    }
    return CBN_OK;
}

#undef API
#undef API_CAT
#undef API_CAT_
