// AVX2 + FMA kernels: the traits of 8-lane float vectors, and the kernels of vector_kernels.inc
// compiled for them in an AVX2 target region (target_region.hpp). Run only after CPUID says the CPU
// has AVX2 and FMA (kernel_path.hpp).
#pragma once

#include "../../config.hpp"

#if MF_HAVE_X86_SIMD

#include "../../platform/float16.hpp"
#include "hash_block.hpp"
#include "kernel_table.hpp"
#include "pow2_series.hpp"
#include "row_selection.hpp"
#include "target_region.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

MF_BEGIN_TARGET_AVX2
namespace memoryformer {
inline namespace v0 {
namespace detail {
namespace avx2 {

struct Isa {
  using Vec = __m256;
  using Mask = __m256i;
  static constexpr int kLanes = 8;

  static MF_ALWAYS_INLINE Vec zero() { return _mm256_setzero_ps(); }
  static MF_ALWAYS_INLINE Vec set1(float s) { return _mm256_set1_ps(s); }
  static MF_ALWAYS_INLINE Vec load(const float* p) { return _mm256_loadu_ps(p); }
  // bf16 is the upper half of a float; int8 converts exactly.
  static MF_ALWAYS_INLINE Vec load(const bf16* p) {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
  static MF_ALWAYS_INLINE Vec load(const std::int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static MF_ALWAYS_INLINE void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }

  // Lanes [0, n) set, n <= kLanes.
  static MF_ALWAYS_INLINE Mask tail(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static MF_ALWAYS_INLINE Vec load(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  static MF_ALWAYS_INLINE void store(float* p, Vec v, Mask m) { _mm256_maskstore_ps(p, m, v); }

  static MF_ALWAYS_INLINE Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static MF_ALWAYS_INLINE Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
  static MF_ALWAYS_INLINE Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static MF_ALWAYS_INLINE Vec div(Vec a, Vec b) { return _mm256_div_ps(a, b); }
  static MF_ALWAYS_INLINE Vec max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
  static MF_ALWAYS_INLINE Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static MF_ALWAYS_INLINE float sum(Vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  // Lane j = the sum of v[j]'s lanes, for kLanes vectors: a transpose done as a tree of adds, which
  // takes a third of the instructions of kLanes separate sums.
  static MF_ALWAYS_INLINE Vec sum_each(const Vec* v) {
    Vec pairs[4], quads[2];  // per 128-bit half: two, then four of the vectors' partial sums
    for (int i = 0; i < 4; ++i)
      pairs[i] = _mm256_add_ps(_mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 2; ++i)
      quads[i] = _mm256_add_ps(_mm256_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm256_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm256_add_ps(_mm256_permute2f128_ps(quads[0], quads[1], 0x20),
                         _mm256_permute2f128_ps(quads[0], quads[1], 0x31));
  }

  static MF_ALWAYS_INLINE Vec abs(Vec v) {
    return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)));
  }
  static MF_ALWAYS_INLINE std::uint32_t nonnegative_bits(Vec v) {
    return static_cast<std::uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ)));
  }
  static MF_ALWAYS_INLINE Vec round_nearest(Vec v) {
    return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // p 2^n for integral n >= -126, built in the exponent field.
  static MF_ALWAYS_INLINE Vec scale_pow2(Vec p, Vec n) {
    const __m256i two_to_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(two_to_n));
  }
};

#include "vector_kernels.inc"

inline constexpr KernelTable kTable = {
    {gather<float>, gather_panel<float>, scatter, dot, run_backward},
    {gather<bf16>, gather_panel<bf16>},
    {gather<std::int8_t>, gather_panel<std::int8_t>},
    hash_chunks,
};

}  // namespace avx2
}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
MF_END_TARGET

#endif  // MF_HAVE_X86_SIMD
