// AVX-512F kernels for float tables: the AVX2 kernels' structure with 16 lanes and mask registers
// for the row tails. Per-function target attribute, selected only where CPUID and XCR0 allow.
#pragma once

#include "../../config.hpp"

#if MF_HAVE_X86_SIMD

#include "../float16.hpp"
#include "hash_block.hpp"
#include "pow2_series.hpp"
#include "row_selection.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#define MF_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))

namespace memoryformer {
inline namespace v0 {
namespace detail {
namespace avx512 {

constexpr int kLanes = 16;

MF_TARGET_AVX512 inline __mmask16 tail_mask(int remaining) {
  return static_cast<__mmask16>((1u << remaining) - 1u);  // remaining <= 16
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

// y[0:width] += s * x[0:width], the step both gather and scatter are made of.
MF_TARGET_AVX512 inline void axpy(float s, const float* x, float* y, int width) {
  const __m512 vs = _mm512_set1_ps(s);
  const int full = width - width % kLanes;
  for (int c = 0; c < full; c += kLanes)
    _mm512_storeu_ps(y + c, _mm512_fmadd_ps(vs, _mm512_loadu_ps(x + c), _mm512_loadu_ps(y + c)));
  if (full < width) {
    const __mmask16 mask = tail_mask(width - full);
    _mm512_mask_storeu_ps(
        y + full, mask,
        _mm512_fmadd_ps(vs, _mm512_maskz_loadu_ps(mask, x + full), _mm512_maskz_loadu_ps(mask, y + full)));
  }
}

// 16 stored values as floats: bf16 is the upper half of a float, int8 converts exactly. (Zero-masked
// forms with every lane on, for the reason given at horizontal_sum.)
MF_TARGET_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
MF_TARGET_AVX512 inline __m512 load16(const bf16* p) {
  const __mmask16 all = 0xFFFF;
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(all, _mm512_maskz_cvtepu16_epi32(all, bits), 16));
}
MF_TARGET_AVX512 inline __m512 load16(const std::int8_t* p) {
  const __mmask16 all = 0xFFFF;
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm512_maskz_cvtepi32_ps(all, _mm512_maskz_cvtepi8_epi32(all, bytes));
}

// y[0:width] += s * x[0:width] for compressed rows; the few tail values take the scalar route.
template <class T>
MF_TARGET_AVX512 inline void axpy(float s, const T* x, float* y, int width) {
  const __m512 vs = _mm512_set1_ps(s);
  const int full = width - width % kLanes;
  for (int c = 0; c < full; c += kLanes)
    _mm512_storeu_ps(y + c, _mm512_fmadd_ps(vs, load16(x + c), _mm512_loadu_ps(y + c)));
  for (int c = full; c < width; ++c) y[c] += s * widen(x[c]);
}

// y += sum_k scores[k] * row_k, in column pieces of kGatherColumns: each selected row is read as
// one contiguous piece (rows prefetched ahead) into an aligned private accumulator, and y is
// written once. (Updating y in place K times made two threads slicing one y fight over the cache
// line at their boundary: 9 -> 17 us per token instead of faster.) T is the stored type: float,
// bf16, or int8 (whose scores then carry the row scale).
template <class T>
MF_TARGET_AVX512 inline void gather(const T* table, const RowSelection& sel, const float* scores, float* y,
                                    int width) {
  alignas(64) float acc[kGatherColumns];
  for (int begin = 0; begin < width; begin += kGatherColumns) {
    const int piece = std::min(kGatherColumns, width - begin);
    std::copy(y + begin, y + begin + piece, acc);
    for (int k = 0; k < sel.count; ++k) {
      prefetch_ahead(table + begin, sel, k, piece);
      axpy(scores[k], table + begin + sel.offset(k), acc, piece);
    }
    std::copy(acc, acc + piece, y + begin);
  }
}

// The gather of one token from an L2-resident panel (gather_schedule.hpp): rows of kPanelColumns
// values, the whole 64-column piece of y held in registers across the group's rows. Two sets of
// accumulators (even and odd k) keep eight FMA chains in flight. A narrower last slice takes the
// general gather.
template <class T>
MF_TARGET_AVX512 inline void gather_panel(const T* panel, const RowSelection& sel, const float* scores,
                                          float* y, int width) {
  static_assert(kPanelColumns == 4 * kLanes, "gather_panel holds a panel row in four registers");
  if (width != kPanelColumns) return gather(panel, sel, scores, y, width);
  __m512 a0 = _mm512_loadu_ps(y), a1 = _mm512_loadu_ps(y + 16), a2 = _mm512_loadu_ps(y + 32),
         a3 = _mm512_loadu_ps(y + 48);
  __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(),
         b3 = _mm512_setzero_ps();
  int k = 0;
  for (; k + 1 < sel.count; k += 2) {
    const T* even = panel + sel.offset(k);
    const T* odd = panel + sel.offset(k + 1);
    const __m512 se = _mm512_set1_ps(scores[k]), so = _mm512_set1_ps(scores[k + 1]);
    a0 = _mm512_fmadd_ps(se, load16(even), a0);
    a1 = _mm512_fmadd_ps(se, load16(even + 16), a1);
    a2 = _mm512_fmadd_ps(se, load16(even + 32), a2);
    a3 = _mm512_fmadd_ps(se, load16(even + 48), a3);
    b0 = _mm512_fmadd_ps(so, load16(odd), b0);
    b1 = _mm512_fmadd_ps(so, load16(odd + 16), b1);
    b2 = _mm512_fmadd_ps(so, load16(odd + 32), b2);
    b3 = _mm512_fmadd_ps(so, load16(odd + 48), b3);
  }
  if (k < sel.count) {
    const T* row = panel + sel.offset(k);
    const __m512 s = _mm512_set1_ps(scores[k]);
    a0 = _mm512_fmadd_ps(s, load16(row), a0);
    a1 = _mm512_fmadd_ps(s, load16(row + 16), a1);
    a2 = _mm512_fmadd_ps(s, load16(row + 32), a2);
    a3 = _mm512_fmadd_ps(s, load16(row + 48), a3);
  }
  _mm512_storeu_ps(y, _mm512_add_ps(a0, b0));
  _mm512_storeu_ps(y + 16, _mm512_add_ps(a1, b1));
  _mm512_storeu_ps(y + 32, _mm512_add_ps(a2, b2));
  _mm512_storeu_ps(y + 48, _mm512_add_ps(a3, b3));
}

// row_k += scores[k] * dy for every selected row.
MF_TARGET_AVX512 inline void scatter(float* grad, const RowSelection& sel, const float* scores,
                                     const float* dy, int width) {
  for (int k = 0; k < sel.count; ++k) {
    prefetch_ahead(grad, sel, k, width);
    axpy(scores[k], dy, grad + sel.offset(k), width);
  }
}

MF_TARGET_AVX512 inline void dot(const float* table, const RowSelection& sel, const float* dy, int width,
                                 float* out) {
  const __mmask16 mask = tail_mask(width % kLanes);
  const int full = width - width % kLanes;
  for (int k = 0; k < sel.count; ++k) {
    prefetch_ahead(table, sel, k, width);
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

// out[k] = <row_k, dy> for the rows of a packed panel, which sit in L2 (no prefetch): dy's 64
// columns stay in four registers. A narrower last slice takes the general dot.
MF_TARGET_AVX512 inline void dot_panel(const float* panel, const RowSelection& sel, const float* dy,
                                       int width, float* out) {
  static_assert(kPanelColumns == 4 * kLanes, "dot_panel holds dy in four registers");
  if (width != kPanelColumns) return dot(panel, sel, dy, width, out);
  const __m512 d0 = _mm512_loadu_ps(dy), d1 = _mm512_loadu_ps(dy + 16), d2 = _mm512_loadu_ps(dy + 32),
               d3 = _mm512_loadu_ps(dy + 48);
  for (int k = 0; k < sel.count; ++k) {
    const float* row = panel + sel.offset(k);
    const __m512 lo = _mm512_fmadd_ps(d1, _mm512_loadu_ps(row + 16), _mm512_mul_ps(d0, _mm512_loadu_ps(row)));
    const __m512 hi =
        _mm512_fmadd_ps(d3, _mm512_loadu_ps(row + 48), _mm512_mul_ps(d2, _mm512_loadu_ps(row + 32)));
    out[k] = horizontal_sum(_mm512_add_ps(lo, hi));
  }
}

// 2^u for u <= 0, as pow2_series.hpp says. NaN stays NaN (max returns its second operand then).
// (Zero-masked forms with every lane on, for the reason given at horizontal_sum.)
MF_TARGET_AVX512 inline __m512 pow2_nonpositive(__m512 u) {
  using namespace pow2_series;
  const __mmask16 all = 0xFFFF;
  u = _mm512_maskz_max_ps(all, _mm512_set1_ps(kMinExponent), u);
  const __m512 n = _mm512_maskz_roundscale_ps(all, u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(u, n);
  __m512 p = _mm512_set1_ps(kCoefficients[0]);
  for (int i = 1; i < 7; ++i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kCoefficients[i]));
  return _mm512_maskz_scalef_ps(all, p, n);
}

// The hash of one row (Eq. 9-10), as scalar::hash_chunks, through a HashBlock (hash_block.hpp):
// 16 values at a time, 1 + exp(-2|z|/t) = 1 + 2^(|z| (-2 log2 e / t)) and the sign bits.
MF_TARGET_AVX512 inline void hash_chunks(const float* x, int chunks, int tau, float temperature, Score score,
                                         std::int32_t* codes, float* scores) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 scale = _mm512_set1_ps(-2.0f * pow2_series::kLog2e / temperature);
  HashBlock block;
  for (int first = 0; first < chunks; first += kHashBlockChunks) {
    const int n = std::min(kHashBlockChunks, chunks - first), values = n * tau;
    const float* z_block = x + static_cast<std::ptrdiff_t>(first) * tau;
    for (int i = 0; i < values; i += kLanes) {
      const __m512 z = _mm512_maskz_loadu_ps(tail_mask(std::min(kLanes, values - i)), z_block + i);
      const auto non_negative =
          static_cast<std::uint16_t>(_mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GE_OQ));
      std::memcpy(block.sign_bits + i / 8, &non_negative, sizeof non_negative);
      const __m512 magnitude = _mm512_abs_ps(z);
      if (score == Score::l1) _mm512_store_ps(block.magnitude + i, magnitude);
      _mm512_store_ps(block.factor + i,
                      _mm512_add_ps(one, pow2_nonpositive(_mm512_mul_ps(magnitude, scale))));
    }
    block.finish(n, tau, score, codes + first);
    const __mmask16 lanes = tail_mask(n);
    __m512 s = _mm512_div_ps(one, _mm512_maskz_load_ps(lanes, block.product));
    if (score == Score::l1) s = _mm512_mul_ps(s, _mm512_maskz_load_ps(lanes, block.l1));
    _mm512_mask_storeu_ps(scores + first, lanes, s);
  }
}

}  // namespace avx512
}  // namespace detail
}  // namespace v0
}  // namespace memoryformer

#endif  // MF_HAVE_X86_SIMD
