// The AVX2 helpers the CPU kernels share; LOCOMLX_AVX2 is defined where the compiler targets AVX2 and FMA.

#pragma once

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LOCOMLX_AVX2 1

namespace locomlx_kernels {

// The sum of a vector's eight lanes.
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

}  // namespace locomlx_kernels
#endif
