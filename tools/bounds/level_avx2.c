/* bounds/level_avx2.c -- bounds.c's loops at the avx2 level, compiled for
   that target with a pragma (no -m flag), as src_c/targets/ are. */
#pragma GCC target("avx2,fma")
#include "simd/avx2.h"
#define BOUNDS_TABLE bounds_avx2
#include "loops.h"
