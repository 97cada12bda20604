// AVX2 + FMA kernels for float tables. Compiled with a per-function target attribute (never a
// global -mavx2, which would change Eigen's alignment ABI between translation units) and run only
// after CPUID says the CPU has AVX2 and FMA (see kernel_path.hpp).
#pragma once

#include "../../config.hpp"

#if MF_HAVE_X86_SIMD

#include "row_selection.hpp"

#include <immintrin.h>

#define MF_TARGET_AVX2 __attribute__((target("avx2,fma")))

namespace memoryformer {
inline namespace v0 {
namespace detail {
namespace avx2 {

constexpr int kLanes = 8;
constexpr int kBlock = 4;  // vectors per column block: 32 accumulators' worth of y in registers

// Lanes [0, remaining) set, for the last partial vector of a row.
MF_TARGET_AVX2 inline __m256i tail_mask(int remaining) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(remaining), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

MF_TARGET_AVX2 inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Vectors * 8 columns of y, held in registers while all K rows are accumulated into them.
template <int Vectors>
MF_TARGET_AVX2 inline void gather_columns(const float* table, const RowSelection& sel, const float* scores,
                                          float* y) {
  __m256 acc[Vectors];
  for (int v = 0; v < Vectors; ++v) acc[v] = _mm256_loadu_ps(y + v * kLanes);
  for (int k = 0; k < sel.count; ++k) {
    const float* row = table + sel.offset(k);
    const __m256 s = _mm256_set1_ps(scores[k]);
    for (int v = 0; v < Vectors; ++v) acc[v] = _mm256_fmadd_ps(s, _mm256_loadu_ps(row + v * kLanes), acc[v]);
  }
  for (int v = 0; v < Vectors; ++v) _mm256_storeu_ps(y + v * kLanes, acc[v]);
}

MF_TARGET_AVX2 inline void gather(const float* table, const RowSelection& sel, const float* scores, float* y,
                                  int width) {
  int c = 0;
  for (; c + kBlock * kLanes <= width; c += kBlock * kLanes)
    gather_columns<kBlock>(table + c, sel, scores, y + c);
  for (; c + kLanes <= width; c += kLanes) gather_columns<1>(table + c, sel, scores, y + c);
  if (c < width) {
    const __m256i mask = tail_mask(width - c);
    __m256 acc = _mm256_maskload_ps(y + c, mask);
    for (int k = 0; k < sel.count; ++k)
      acc = _mm256_fmadd_ps(_mm256_set1_ps(scores[k]), _mm256_maskload_ps(table + sel.offset(k) + c, mask),
                            acc);
    _mm256_maskstore_ps(y + c, mask, acc);
  }
}

MF_TARGET_AVX2 inline void scatter(float* grad, const RowSelection& sel, const float* scores, const float* dy,
                                   int width) {
  const __m256i mask = tail_mask(width % kLanes);
  const int full = width - width % kLanes;
  for (int k = 0; k < sel.count; ++k) {
    float* row = grad + sel.offset(k);
    const __m256 s = _mm256_set1_ps(scores[k]);
    for (int c = 0; c < full; c += kLanes)
      _mm256_storeu_ps(row + c, _mm256_fmadd_ps(s, _mm256_loadu_ps(dy + c), _mm256_loadu_ps(row + c)));
    if (full < width)
      _mm256_maskstore_ps(
          row + full, mask,
          _mm256_fmadd_ps(s, _mm256_maskload_ps(dy + full, mask), _mm256_maskload_ps(row + full, mask)));
  }
}

MF_TARGET_AVX2 inline void dot(const float* table, const RowSelection& sel, const float* dy, int width,
                               float* out) {
  const __m256i mask = tail_mask(width % kLanes);
  const int full = width - width % kLanes;
  for (int k = 0; k < sel.count; ++k) {
    const float* row = table + sel.offset(k);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int c = 0;
    for (; c + 2 * kLanes <= full; c += 2 * kLanes) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(dy + c), _mm256_loadu_ps(row + c), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(dy + c + kLanes), _mm256_loadu_ps(row + c + kLanes), acc1);
    }
    if (c < full) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(dy + c), _mm256_loadu_ps(row + c), acc0);
    if (full < width)
      acc1 = _mm256_fmadd_ps(_mm256_maskload_ps(dy + full, mask), _mm256_maskload_ps(row + full, mask), acc1);
    out[k] = horizontal_sum(_mm256_add_ps(acc0, acc1));
  }
}

}  // namespace avx2
}  // namespace detail
}  // namespace v0
}  // namespace memoryformer

#endif  // MF_HAVE_X86_SIMD
