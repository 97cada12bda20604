// The constants of the SIMD hash kernels' exponential. Eq. 10 needs e = exp(-2|z|/t) for every input
// value; the kernels compute it as 2^u with u = |z| (-2 log2(e) / t) <= 0. u is clamped to
// [kMinExponent, 0]: below it 1 + e rounds to 1 in float, which is all the hash uses. With
// n = round(u) and f = u - n (exact, |f| <= 1/2), 2^u = 2^n 2^f, and 2^f is the degree-6 polynomial
// interpolating it at the Chebyshev nodes of [-1/2, 1/2]: relative error 2.5e-9, below float's
// rounding.
#pragma once

namespace memoryformer {
inline namespace v0 {
namespace detail {
namespace pow2_series {

inline constexpr float kLog2e = 1.44269504f;
inline constexpr float kMinExponent = -34.625f;  // about log2(e^-24)
// 2^f ~ sum_k kCoefficients[6 - k] f^k, in Horner order (highest power first).
inline constexpr float kCoefficients[] = {1.546144470e-04f,
                                          1.340042818e-03f,
                                          9.618056679e-03f,
                                          5.550327227e-02f,
                                          2.402265092e-01f,
                                          6.931472067e-01f,
                                          1.0f};

}  // namespace pow2_series
}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
