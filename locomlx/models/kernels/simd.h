// The vector helpers the CPU kernels share; LOCOMLX_AVX2 is defined where the compiler targets AVX2 and FMA.

#pragma once

#include <algorithm>
#include <cmath>

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

// The sums of four vectors' lanes, in order: four dot products finished together. hadd twice leaves each
// vector's low-half sum in lanes 0-3 and its high-half sum in lanes 4-7.
inline __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 sums = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(sums), _mm256_extractf128_ps(sums, 1));
}

// The largest of a vector's eight lanes.
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// exp(x), vectorised: Cephes' expf (as locomlx/models/cpu_kernels.py's), x clamped to [-87, 88] so that the
// result stays a normal float (products with subnormals are ~100x slower on x86) and 2^n never overflows.
inline __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.4426950408889634f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

}  // namespace locomlx_kernels
#endif

namespace locomlx_kernels {

// The largest of x[0, n).
inline float row_max(const float* x, int n) {
  float m = -INFINITY;
  int j = 0;
#ifdef LOCOMLX_AVX2
  __m256 mv = _mm256_set1_ps(-INFINITY);
  for (; j + 8 <= n; j += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + j));
  m = hmax(mv);
#endif
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// out[j] = exp(in[j] - m) for j in [0, n), `in` may be `out`; returns their sum (a softmax row's numerators and
// denominator, with m the row's maximum).
inline float exp_shifted_sum(const float* in, float* out, int n, float m) {
  float total = 0.0f;
  int j = 0;
#ifdef LOCOMLX_AVX2
  __m256 sv = _mm256_setzero_ps();
  const __m256 mb = _mm256_set1_ps(m);
  for (; j + 8 <= n; j += 8) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(in + j), mb));
    _mm256_storeu_ps(out + j, e);
    sv = _mm256_add_ps(sv, e);
  }
  total = hsum(sv);
#endif
  for (; j < n; ++j) {
    out[j] = std::exp(in[j] - m);
    total += out[j];
  }
  return total;
}

}  // namespace locomlx_kernels
