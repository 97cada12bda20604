// AVX-512F kernels for float tables: the AVX2 kernels' structure with 16 lanes and mask registers
// for the row tails. Per-function target attribute, selected only where CPUID and XCR0 allow.
#pragma once

#include "../../config.hpp"

#if MF_HAVE_X86_SIMD

#include "row_selection.hpp"

#include <immintrin.h>

#define MF_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))

namespace memoryformer {
inline namespace v0 {
namespace detail {
namespace avx512 {

constexpr int kLanes = 16;
constexpr int kBlock = 4;  // vectors per column block: 64 floats of y in registers

MF_TARGET_AVX512 inline __mmask16 tail_mask(int remaining) {
  return static_cast<__mmask16>((1u << remaining) - 1u);
}

// Sum of the 16 lanes. The masked shuffles (all lanes on) are used because GCC 12's unmasked ones
// and _mm512_reduce_add_ps start from _mm512_undefined_ps and trip -Wmaybe-uninitialized.
MF_TARGET_AVX512 inline float horizontal_sum(__m512 v) {
  const __mmask16 all = 0xFFFF;
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, all, v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, all, v, v, _MM_SHUFFLE(2, 3, 0, 1)));
  __m128 s = _mm512_mask_extractf32x4_ps(_mm_setzero_ps(), 0xF, v, 0);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int Vectors>
MF_TARGET_AVX512 inline void gather_columns(const float* table, const RowSelection& sel, const float* scores,
                                            float* y) {
  __m512 acc[Vectors];
  for (int v = 0; v < Vectors; ++v) acc[v] = _mm512_loadu_ps(y + v * kLanes);
  for (int k = 0; k < sel.count; ++k) {
    const float* row = table + sel.offset(k);
    const __m512 s = _mm512_set1_ps(scores[k]);
    for (int v = 0; v < Vectors; ++v) acc[v] = _mm512_fmadd_ps(s, _mm512_loadu_ps(row + v * kLanes), acc[v]);
  }
  for (int v = 0; v < Vectors; ++v) _mm512_storeu_ps(y + v * kLanes, acc[v]);
}

MF_TARGET_AVX512 inline void gather(const float* table, const RowSelection& sel, const float* scores,
                                    float* y, int width) {
  int c = 0;
  for (; c + kBlock * kLanes <= width; c += kBlock * kLanes)
    gather_columns<kBlock>(table + c, sel, scores, y + c);
  for (; c + kLanes <= width; c += kLanes) gather_columns<1>(table + c, sel, scores, y + c);
  if (c < width) {
    const __mmask16 mask = tail_mask(width - c);
    __m512 acc = _mm512_maskz_loadu_ps(mask, y + c);
    for (int k = 0; k < sel.count; ++k)
      acc = _mm512_fmadd_ps(_mm512_set1_ps(scores[k]), _mm512_maskz_loadu_ps(mask, table + sel.offset(k) + c),
                            acc);
    _mm512_mask_storeu_ps(y + c, mask, acc);
  }
}

MF_TARGET_AVX512 inline void scatter(float* grad, const RowSelection& sel, const float* scores,
                                     const float* dy, int width) {
  const __mmask16 mask = tail_mask(width % kLanes);
  const int full = width - width % kLanes;
  for (int k = 0; k < sel.count; ++k) {
    float* row = grad + sel.offset(k);
    const __m512 s = _mm512_set1_ps(scores[k]);
    for (int c = 0; c < full; c += kLanes)
      _mm512_storeu_ps(row + c, _mm512_fmadd_ps(s, _mm512_loadu_ps(dy + c), _mm512_loadu_ps(row + c)));
    if (full < width)
      _mm512_mask_storeu_ps(row + full, mask,
                            _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(mask, dy + full),
                                            _mm512_maskz_loadu_ps(mask, row + full)));
  }
}

MF_TARGET_AVX512 inline void dot(const float* table, const RowSelection& sel, const float* dy, int width,
                                 float* out) {
  const __mmask16 mask = tail_mask(width % kLanes);
  const int full = width - width % kLanes;
  for (int k = 0; k < sel.count; ++k) {
    const float* row = table + sel.offset(k);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int c = 0;
    for (; c + 2 * kLanes <= full; c += 2 * kLanes) {
      acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(dy + c), _mm512_loadu_ps(row + c), acc0);
      acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(dy + c + kLanes), _mm512_loadu_ps(row + c + kLanes), acc1);
    }
    if (c < full) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(dy + c), _mm512_loadu_ps(row + c), acc0);
    if (full < width)
      acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, dy + full), _mm512_maskz_loadu_ps(mask, row + full),
                             acc1);
    out[k] = horizontal_sum(_mm512_add_ps(acc0, acc1));
  }
}

}  // namespace avx512
}  // namespace detail
}  // namespace v0
}  // namespace memoryformer

#endif  // MF_HAVE_X86_SIMD
