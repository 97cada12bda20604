// IEEE half (F16) and bfloat16 (BF16) to and from float: the storage types of weight files and of
// compressed tables. Bit manipulation only, so NaN payloads survive and no FPU flags are raised.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace memoryformer {
inline namespace v0 {
namespace detail {

namespace float_bits {
inline std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace float_bits

inline float bf16_to_float(std::uint16_t h) { return float_bits::from_bits(std::uint32_t{h} << 16); }

// Round to nearest, ties to even; NaN stays NaN (quiet bit forced only if truncation would give inf).
inline std::uint16_t float_to_bf16(float f) {
  const std::uint32_t u = float_bits::bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
    const auto upper = static_cast<std::uint16_t>(u >> 16);
    return (upper & 0x7F) != 0 ? upper : static_cast<std::uint16_t>(upper | 0x40);
  }
  return static_cast<std::uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);  // a carry into inf is correct
}

inline float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t{h & 0x8000u} << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  if (exp == 31) return float_bits::from_bits(sign | 0x7F800000u | (mant << 13));  // inf, NaN with payload
  if (exp == 0) {  // zero and subnormals: mant * 2^-24, exact in float
    const float magnitude = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -magnitude : magnitude;
  }
  return float_bits::from_bits(sign | ((exp + 112) << 23) | (mant << 13));  // rebias 15 -> 127
}

// Round to nearest, ties to even; too large -> inf; NaN stays NaN.
inline std::uint16_t float_to_f16(float f) {
  const std::uint32_t u = float_bits::bits(f);
  const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t exp = (u >> 23) & 0xFFu, mant = u & 0x7FFFFFu;
  if (exp == 0xFF) {
    if (mant == 0) return sign | 0x7C00u;
    const auto payload = static_cast<std::uint16_t>(mant >> 13);
    return static_cast<std::uint16_t>(sign | 0x7C00u | (payload != 0 ? payload : 0x200u));
  }
  const int e = static_cast<int>(exp) - 127;
  if (e > 15) return sign | 0x7C00u;
  if (e >= -14) {  // normal half: drop 13 mantissa bits with rounding; a carry may reach inf, correctly
    std::uint32_t h = (static_cast<std::uint32_t>(e + 15) << 10) | (mant >> 13);
    const std::uint32_t rest = mant & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return static_cast<std::uint16_t>(sign | h);
  }
  if (exp == 0) return sign;  // float subnormals are far below half's smallest subnormal
  // Half subnormal: value / 2^-24 = m * 2^(e + 1) with the implicit bit restored.
  const std::uint32_t m = mant | 0x800000u;
  const int shift = -(e + 1);
  if (shift >= 25) return sign;  // below half of 2^-24
  std::uint32_t q = m >> shift;
  const std::uint32_t rest = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (q & 1u))) ++q;  // may become the smallest normal, correctly
  return static_cast<std::uint16_t>(sign | q);
}

// A bfloat16 value as stored in compressed tables: a distinct type, so that kernels overload on it
// rather than on a bare uint16_t.
struct bf16 {
  std::uint16_t bits;
};

// A stored table value in its accumulation type (float tables accumulate in float, double in double,
// bf16 and int8 in float).
inline float widen(float v) { return v; }
inline double widen(double v) { return v; }
inline float widen(bf16 v) { return bf16_to_float(v.bits); }
inline float widen(std::int8_t v) { return static_cast<float>(v); }

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
