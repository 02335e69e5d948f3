/*
 * normalize.c -- cbn's C core used from plain C, with no Python.
 *
 * Normalizes a small (outer, C, inner) block with batch statistics, checks
 * them against a naive double loop, runs the backward pass and the forward
 * pass with given statistics, and checks every status code. Prints the
 * statistics and "OK" and exits 0, or says what failed and exits 1.
 *
 * Build from the repository root with the core's sources, every .c file of
 * src_c/ and src_c/targets/ (add -fopenmp for threads):
 *   cc -O2 -std=c99 -Isrc_c examples/c/normalize.c src_c/*.c src_c/targets/*.c -lm
 * The only header it includes is cbn.h, also found under cbn.get_include().
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cbn.h"

#define OUTER 4
#define C 3
#define INNER 5
#define N (OUTER * C * INNER)
#define M (OUTER * INNER)

static int failures = 0;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "FAILED: %s\n", what);
        failures++;
    }
}

static void check_status(int status, int expected, const char *what)
{
    if (status != expected) {
        fprintf(stderr, "FAILED: %s returned %d (%s), expected %d\n", what,
                status, cbn_status_message(status), expected);
        failures++;
    }
}

static int close_to(double a, double b, double tol)
{
    return fabs(a - b) <= tol * (1.0 + fabs(b));
}

int main(void)
{
    double x[N], y[N], y_infer[N], dy[N], dx[N];
    float xf[N], yf[N];
    double gamma[C] = {1.0, 2.0, 0.5}, beta[C] = {0.0, -1.0, 3.0};
    double mean[C], var[C], meanf[C], varf[C], dgamma[C], dbeta[C];
    const double eps = 1e-5;

    /* Data far from zero (1000 + c*100) so that accuracy matters. */
    for (int o = 0; o < OUTER; o++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < INNER; i++) {
                int k = (o * C + c) * INNER + i;
                x[k] = 1000.0 + 100.0 * c + sin(0.7 * k) * (c + 1);
                xf[k] = (float)x[k];
                dy[k] = cos(1.3 * k);
            }

    check_status(cbn_forward_train_f64(x, y, OUTER, C, INNER, gamma, beta, eps,
                                       mean, var), CBN_OK, "forward_train_f64");
    check_status(cbn_forward_train_f32(xf, yf, OUTER, C, INNER, gamma, beta, eps,
                                       meanf, varf), CBN_OK, "forward_train_f32");

    for (int c = 0; c < C; c++) {
        /* The naive reference: two passes in double. */
        double sum = 0.0, ss = 0.0, ysum = 0.0;
        for (int o = 0; o < OUTER; o++)
            for (int i = 0; i < INNER; i++)
                sum += x[(o * C + c) * INNER + i];
        double mref = sum / M;
        for (int o = 0; o < OUTER; o++)
            for (int i = 0; i < INNER; i++) {
                double d = x[(o * C + c) * INNER + i] - mref;
                ss += d * d;
            }
        double vref = ss / M;
        check(close_to(mean[c], mref, 1e-14), "f64 mean equals the naive mean");
        check(close_to(var[c], vref, 1e-12), "f64 variance equals the naive variance");
        check(close_to(meanf[c], mref, 1e-7), "f32 mean close to the naive mean");
        for (int o = 0; o < OUTER; o++)
            for (int i = 0; i < INNER; i++)
                ysum += y[(o * C + c) * INNER + i];
        check(close_to(ysum / M, beta[c], 1e-12), "normalized mean equals beta");
        printf("feature %d: mean %.6f var %.6f\n", c, mean[c], var[c]);
    }

    /* Given statistics equal to the batch's reproduce the training output. */
    check_status(cbn_forward_infer_f64(x, y_infer, OUTER, C, INNER, mean, var,
                                       gamma, beta, eps), CBN_OK, "forward_infer_f64");
    for (int k = 0; k < N; k++)
        check(close_to(y_infer[k], y[k], 1e-12), "forward_infer equals forward_train");

    check_status(cbn_backward_f64(dy, x, dx, OUTER, C, INNER, mean, var, gamma,
                                  eps, 1, dgamma, dbeta), CBN_OK, "backward_f64");
    for (int c = 0; c < C; c++) {
        /* With batch statistics dx sums to 0 over the batch, and dbeta = sum dy. */
        double dxsum = 0.0, dysum = 0.0;
        for (int o = 0; o < OUTER; o++)
            for (int i = 0; i < INNER; i++) {
                dxsum += dx[(o * C + c) * INNER + i];
                dysum += dy[(o * C + c) * INNER + i];
            }
        check(fabs(dxsum) < 1e-9, "dx sums to zero over the batch");
        check(close_to(dbeta[c], dysum, 1e-13), "dbeta is the sum of dy");
    }

    /* Errors come back as codes, and nothing is written. */
    check_status(cbn_forward_train_f64(x, y, OUTER, C, INNER, NULL, NULL, -1.0,
                                       NULL, NULL), CBN_ERR_EPS, "negative eps");
    check_status(cbn_forward_train_f64(x, y, 0, C, INNER, NULL, NULL, eps,
                                       NULL, NULL), CBN_ERR_EMPTY, "empty batch");
    check_status(cbn_stats_f64(NULL, OUTER, C, INNER, mean, var), CBN_ERR_ARG,
                 "NULL data");

    printf("dgamma %.6f %.6f %.6f\n", dgamma[0], dgamma[1], dgamma[2]);
    printf("threads %d, SIMD %s, OpenMP %d\n", cbn_get_num_threads(),
           cbn_simd_name(cbn_simd_get()), cbn_openmp_version());
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return EXIT_FAILURE;
    }
    printf("OK\n");
    return EXIT_SUCCESS;
}
