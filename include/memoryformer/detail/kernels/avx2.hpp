// AVX2 + FMA kernels for float tables. Compiled with a per-function target attribute (never a
// global -mavx2, which would change Eigen's alignment ABI between translation units) and run only
// after CPUID says the CPU has AVX2 and FMA (see kernel_path.hpp).
#pragma once

#include "../../config.hpp"

#if MF_HAVE_X86_SIMD

#include "../float16.hpp"
#include "hash_block.hpp"
#include "pow2_series.hpp"
#include "row_selection.hpp"

#include <immintrin.h>

#include <algorithm>

#define MF_TARGET_AVX2 __attribute__((target("avx2,fma")))

namespace memoryformer {
inline namespace v0 {
namespace detail {
namespace avx2 {

constexpr int kLanes = 8;

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

// y[0:width] += s * x[0:width], the step both gather and scatter are made of.
MF_TARGET_AVX2 inline void axpy(float s, const float* x, float* y, int width) {
  const __m256 vs = _mm256_set1_ps(s);
  const int full = width - width % kLanes;
  for (int c = 0; c < full; c += kLanes)
    _mm256_storeu_ps(y + c, _mm256_fmadd_ps(vs, _mm256_loadu_ps(x + c), _mm256_loadu_ps(y + c)));
  if (full < width) {
    const __m256i mask = tail_mask(width - full);
    _mm256_maskstore_ps(
        y + full, mask,
        _mm256_fmadd_ps(vs, _mm256_maskload_ps(x + full, mask), _mm256_maskload_ps(y + full, mask)));
  }
}

// 8 stored values as floats: bf16 is the upper half of a float, int8 converts exactly.
MF_TARGET_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
MF_TARGET_AVX2 inline __m256 load8(const bf16* p) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}
MF_TARGET_AVX2 inline __m256 load8(const std::int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// y[0:width] += s * x[0:width] for compressed rows; the few tail values take the scalar route.
template <class T>
MF_TARGET_AVX2 inline void axpy(float s, const T* x, float* y, int width) {
  const __m256 vs = _mm256_set1_ps(s);
  const int full = width - width % kLanes;
  for (int c = 0; c < full; c += kLanes)
    _mm256_storeu_ps(y + c, _mm256_fmadd_ps(vs, load8(x + c), _mm256_loadu_ps(y + c)));
  for (int c = full; c < width; ++c) y[c] += s * widen(x[c]);
}

// y += sum_k scores[k] * row_k, in column pieces of kGatherColumns: each selected row is read as
// one contiguous piece (rows prefetched ahead) into an aligned private accumulator, and y is
// written once. (Updating y in place K times made two threads slicing one y fight over the cache
// line at their boundary: 9 -> 17 us per token instead of faster.) T is the stored type: float,
// bf16, or int8 (whose scores then carry the row scale).
template <class T>
MF_TARGET_AVX2 inline void gather(const T* table, const RowSelection& sel, const float* scores, float* y,
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

// The gather of one token from an L2-resident panel (gather_schedule.hpp): the 64-column piece of y
// held in eight registers across the group's rows. A narrower last slice takes the general gather.
template <class T>
MF_TARGET_AVX2 inline void gather_panel(const T* panel, const RowSelection& sel, const float* scores,
                                        float* y, int width) {
  constexpr int kRegisters = kPanelColumns / kLanes;
  if (width != kPanelColumns) return gather(panel, sel, scores, y, width);
  __m256 acc[kRegisters];
  for (int v = 0; v < kRegisters; ++v) acc[v] = _mm256_loadu_ps(y + v * kLanes);
  for (int k = 0; k < sel.count; ++k) {
    const T* row = panel + sel.offset(k);
    const __m256 s = _mm256_set1_ps(scores[k]);
    for (int v = 0; v < kRegisters; ++v) acc[v] = _mm256_fmadd_ps(s, load8(row + v * kLanes), acc[v]);
  }
  for (int v = 0; v < kRegisters; ++v) _mm256_storeu_ps(y + v * kLanes, acc[v]);
}

// row_k += scores[k] * dy for every selected row.
MF_TARGET_AVX2 inline void scatter(float* grad, const RowSelection& sel, const float* scores, const float* dy,
                                   int width) {
  for (int k = 0; k < sel.count; ++k) {
    prefetch_ahead(grad, sel, k, width);
    axpy(scores[k], dy, grad + sel.offset(k), width);
  }
}

MF_TARGET_AVX2 inline void dot(const float* table, const RowSelection& sel, const float* dy, int width,
                               float* out) {
  const __m256i mask = tail_mask(width % kLanes);
  const int full = width - width % kLanes;
  for (int k = 0; k < sel.count; ++k) {
    prefetch_ahead(table, sel, k, width);
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

// out[k] = <row_k, dy> for the rows of a packed panel, which sit in L2 (no prefetch): dy's 64
// columns stay in eight registers. A narrower last slice takes the general dot.
MF_TARGET_AVX2 inline void dot_panel(const float* panel, const RowSelection& sel, const float* dy, int width,
                                     float* out) {
  constexpr int kRegisters = kPanelColumns / kLanes;
  if (width != kPanelColumns) return dot(panel, sel, dy, width, out);
  __m256 d[kRegisters];
  for (int v = 0; v < kRegisters; ++v) d[v] = _mm256_loadu_ps(dy + v * kLanes);
  for (int k = 0; k < sel.count; ++k) {
    const float* row = panel + sel.offset(k);
    __m256 even = _mm256_mul_ps(d[0], _mm256_loadu_ps(row)),
           odd = _mm256_mul_ps(d[1], _mm256_loadu_ps(row + kLanes));
    for (int v = 2; v < kRegisters; v += 2) {
      even = _mm256_fmadd_ps(d[v], _mm256_loadu_ps(row + v * kLanes), even);
      odd = _mm256_fmadd_ps(d[v + 1], _mm256_loadu_ps(row + (v + 1) * kLanes), odd);
    }
    out[k] = horizontal_sum(_mm256_add_ps(even, odd));
  }
}

// 2^u for u <= 0, as pow2_series.hpp says; 2^n is built in the exponent field (n >= -35 here).
// NaN stays NaN (max returns its second operand then, and NaN times any 2^n is NaN).
MF_TARGET_AVX2 inline __m256 pow2_nonpositive(__m256 u) {
  using namespace pow2_series;
  u = _mm256_max_ps(_mm256_set1_ps(kMinExponent), u);
  const __m256 n = _mm256_round_ps(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(u, n);
  __m256 p = _mm256_set1_ps(kCoefficients[0]);
  for (int i = 1; i < 7; ++i) p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kCoefficients[i]));
  const __m256i two_to_n =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(two_to_n));
}

// The hash of one row (Eq. 9-10), as avx512::hash_chunks with 8 values at a time.
MF_TARGET_AVX2 inline void hash_chunks(const float* x, int chunks, int tau, float temperature, Score score,
                                       std::int32_t* codes, float* scores) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 scale = _mm256_set1_ps(-2.0f * pow2_series::kLog2e / temperature);
  const __m256 magnitude_bits = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  HashBlock block;
  for (int first = 0; first < chunks; first += kHashBlockChunks) {
    const int n = std::min(kHashBlockChunks, chunks - first), values = n * tau;
    const float* z_block = x + static_cast<std::ptrdiff_t>(first) * tau;
    for (int i = 0; i < values; i += kLanes) {
      const __m256 z = _mm256_maskload_ps(z_block + i, tail_mask(std::min(kLanes, values - i)));
      block.sign_bits[i / 8] =
          static_cast<std::uint8_t>(_mm256_movemask_ps(_mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_GE_OQ)));
      const __m256 magnitude = _mm256_and_ps(z, magnitude_bits);
      if (score == Score::l1) _mm256_store_ps(block.magnitude + i, magnitude);
      _mm256_store_ps(block.factor + i,
                      _mm256_add_ps(one, pow2_nonpositive(_mm256_mul_ps(magnitude, scale))));
    }
    block.finish(n, tau, score, codes + first);
    for (int k = 0; k < n; k += kLanes) {
      const __m256i lanes = tail_mask(std::min(kLanes, n - k));
      __m256 s = _mm256_div_ps(one, _mm256_maskload_ps(block.product + k, lanes));
      if (score == Score::l1) s = _mm256_mul_ps(s, _mm256_maskload_ps(block.l1 + k, lanes));
      _mm256_maskstore_ps(scores + first + k, lanes, s);
    }
  }
}

}  // namespace avx2
}  // namespace detail
}  // namespace v0
}  // namespace memoryformer

#endif  // MF_HAVE_X86_SIMD
