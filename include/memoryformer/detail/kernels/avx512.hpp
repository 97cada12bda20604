// AVX-512F kernels: the traits of 16-lane float vectors, with mask registers for the row tails, and
// the kernels of vector_kernels.inc compiled for them in an AVX-512 target region
// (target_region.hpp). Selected only where CPUID and XCR0 allow (kernel_path.hpp).
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

MF_BEGIN_TARGET_AVX512
namespace memoryformer {
inline namespace v0 {
namespace detail {
namespace avx512 {

// Several operations use the zero-masked form with every lane on: GCC 12's unmasked forms (and
// _mm512_reduce_add_ps) start from _mm512_undefined_ps and trip -Wmaybe-uninitialized.
struct Isa {
  using Vec = __m512;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  static constexpr Mask kAll = 0xFFFF;

  static MF_ALWAYS_INLINE Vec zero() { return _mm512_setzero_ps(); }
  static MF_ALWAYS_INLINE Vec set1(float s) { return _mm512_set1_ps(s); }
  static MF_ALWAYS_INLINE Vec load(const float* p) { return _mm512_loadu_ps(p); }
  // bf16 is the upper half of a float; int8 converts exactly.
  static MF_ALWAYS_INLINE Vec load(const bf16* p) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAll, _mm512_maskz_cvtepu16_epi32(kAll, bits), 16));
  }
  static MF_ALWAYS_INLINE Vec load(const std::int8_t* p) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm512_maskz_cvtepi32_ps(kAll, _mm512_maskz_cvtepi8_epi32(kAll, bytes));
  }
  static MF_ALWAYS_INLINE void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }

  // Lanes [0, n) set, n <= kLanes.
  static MF_ALWAYS_INLINE Mask tail(int n) { return static_cast<Mask>((1u << n) - 1u); }
  static MF_ALWAYS_INLINE Vec load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static MF_ALWAYS_INLINE void store(float* p, Vec v, Mask m) { _mm512_mask_storeu_ps(p, m, v); }

  static MF_ALWAYS_INLINE Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static MF_ALWAYS_INLINE Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
  static MF_ALWAYS_INLINE Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static MF_ALWAYS_INLINE Vec div(Vec a, Vec b) { return _mm512_div_ps(a, b); }
  static MF_ALWAYS_INLINE Vec max(Vec a, Vec b) { return _mm512_maskz_max_ps(kAll, a, b); }
  static MF_ALWAYS_INLINE Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static MF_ALWAYS_INLINE float sum(Vec v) {
    v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, kAll, v, v, _MM_SHUFFLE(1, 0, 3, 2)));
    v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, kAll, v, v, _MM_SHUFFLE(2, 3, 0, 1)));
    __m128 s = _mm512_mask_extractf32x4_ps(_mm_setzero_ps(), 0xF, v, 0);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  // Lane j = the sum of v[j]'s lanes, for kLanes vectors: a transpose done as a tree of adds, which
  // takes a quarter of the instructions of kLanes separate sums.
  static MF_ALWAYS_INLINE Vec sum_each(const Vec* v) {
    Vec pairs[8], quads[4];  // per 128-bit block: two, then four of the vectors' partial sums
    for (int i = 0; i < 8; ++i)
      pairs[i] = _mm512_add_ps(_mm512_maskz_unpacklo_ps(kAll, v[2 * i], v[2 * i + 1]),
                               _mm512_maskz_unpackhi_ps(kAll, v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; ++i)
      quads[i] = _mm512_add_ps(_mm512_maskz_shuffle_ps(kAll, pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm512_maskz_shuffle_ps(kAll, pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    // quads[i]'s block b holds vectors 4i..4i+3 summed over block b; add the blocks up in two steps.
    const Vec low = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(kAll, quads[0], quads[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_maskz_shuffle_f32x4(kAll, quads[0], quads[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const Vec high = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(kAll, quads[2], quads[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_maskz_shuffle_f32x4(kAll, quads[2], quads[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_maskz_shuffle_f32x4(kAll, low, high, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_maskz_shuffle_f32x4(kAll, low, high, _MM_SHUFFLE(3, 1, 3, 1)));
  }

  static MF_ALWAYS_INLINE Vec abs(Vec v) { return _mm512_abs_ps(v); }
  static MF_ALWAYS_INLINE std::uint32_t nonnegative_bits(Vec v) {
    return _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ);
  }
  static MF_ALWAYS_INLINE Vec round_nearest(Vec v) {
    return _mm512_maskz_roundscale_ps(kAll, v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static MF_ALWAYS_INLINE Vec scale_pow2(Vec p, Vec n) { return _mm512_maskz_scalef_ps(kAll, p, n); }
};

#include "vector_kernels.inc"

inline constexpr KernelTable kTable = {
    {gather<float>, gather_panel<float>, scatter, dot, run_backward},
    {gather<bf16>, gather_panel<bf16>},
    {gather<std::int8_t>, gather_panel<std::int8_t>},
    hash_chunks,
};

}  // namespace avx512
}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
MF_END_TARGET

#endif  // MF_HAVE_X86_SIMD
