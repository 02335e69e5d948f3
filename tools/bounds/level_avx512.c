/* bounds/level_avx512.c -- bounds.c's loops at the avx512 level, compiled for
   that target with a pragma (no -m flag), as src_c/targets/ are. */
#pragma GCC target("avx512f")
#include "simd/avx512.h"
#define BOUNDS_TABLE bounds_avx512
#include "loops.h"
