/*
 * dispatch.c -- the public entry points of cbn.h.
 *
 * Each checks its arguments once, handles the empty cases, and calls the
 * active kernel table, so kernels only ever see valid blocks.
 */
#include <math.h>
#include <stddef.h>

#include "cbn.h"
#include "kernels.h"

static const cbn_kernel_table *active = &cbn_kernels_scalar;

const char *cbn_status_message(int status)
{
    switch (status) {
    case CBN_OK: return "success";
    case CBN_ERR_ARG: return "invalid argument: NULL data pointer, negative size, "
                             "or a block of more than 2**63 elements";
    case CBN_ERR_EMPTY: return "batch statistics of an empty batch";
    case CBN_ERR_EPS: return "eps must be a non-negative number";
    default: return "unknown cbn status";
    }
}

/* Sizes non-negative and outer*C*inner representable. */
static int check_shape(int64_t outer, int64_t C, int64_t inner)
{
    if (outer < 0 || C < 0 || inner < 0)
        return CBN_ERR_ARG;
    if (outer == 0 || C == 0 || inner == 0)
        return CBN_OK;
    if (C > INT64_MAX / outer || inner > INT64_MAX / (outer * C))
        return CBN_ERR_ARG;
    return CBN_OK;
}

static int empty_block(int64_t outer, int64_t C, int64_t inner)
{
    return outer == 0 || C == 0 || inner == 0;
}

/* Checks shared by every entry: shape, eps, and data pointers when there is
   data. Returns CBN_OK or the error. `need_batch` asks for m >= 1 (m = 0 with
   C > 0 is an empty batch). */
static int check_common(int64_t outer, int64_t C, int64_t inner, double eps,
                        int need_batch, const void *p1, const void *p2)
{
    int s = check_shape(outer, C, inner);
    if (s != CBN_OK)
        return s;
    if (!(eps >= 0.0))  /* also rejects NaN */
        return CBN_ERR_EPS;
    if (need_batch && C > 0 && (outer == 0 || inner == 0))
        return CBN_ERR_EMPTY;
    if (!empty_block(outer, C, inner) && (!p1 || !p2))
        return CBN_ERR_ARG;
    return CBN_OK;
}

#define T float
#define SFX f32
#include "api_template.h"
#undef T
#undef SFX

#define T double
#define SFX f64
#include "api_template.h"
#undef T
#undef SFX
