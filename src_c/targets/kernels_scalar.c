/*
 * targets/kernels_scalar.c -- the reference kernels: the kernel template
 * over the one-lane vector layer, i.e. plain C. Every SIMD level is tested
 * against it.
 */
#include "simd/scalar.h"
#define CBN_TABLE cbn_kernels_scalar
#include "targets/instantiate.h"
