// What the running CPU and OS can execute: AVX2+FMA and AVX-512F, checked through CPUID and
// XGETBV (the OS must save the wide registers, not only the CPU support the instructions).
#pragma once

#include "../config.hpp"

#if MF_HAVE_X86_SIMD
#include <cpuid.h>
#endif

namespace memoryformer {
inline namespace v0 {
namespace detail {

struct CpuFeatures {
  bool avx2_fma = false;
  bool avx512f = false;
};

#if MF_HAVE_X86_SIMD
inline std::uint64_t read_xcr0() {
  std::uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<std::uint64_t>(edx) << 32) | eax;
}

inline CpuFeatures detect_cpu_features() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1u, fma = (c >> 12) & 1u;
  if (!osxsave) return f;
  const std::uint64_t xcr0 = read_xcr0();
  const bool os_ymm = (xcr0 & 0x6u) == 0x6u;    // SSE and AVX state
  const bool os_zmm = (xcr0 & 0xE6u) == 0xE6u;  // plus opmask and both ZMM halves
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = (b >> 5) & 1u, avx512f = (b >> 16) & 1u;
  f.avx2_fma = avx2 && fma && os_ymm;
  f.avx512f = f.avx2_fma && avx512f && os_zmm;
  return f;
}
#else
inline CpuFeatures detect_cpu_features() { return {}; }
#endif

inline const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect_cpu_features();
  return features;
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
