// Which implementation of the gather kernels runs: the portable scalar path (always compiled, the
// test oracle) or a SIMD path the CPU supports. Chosen at run time: the best supported path by
// default, the environment variable MEMORYFORMER_PATH=scalar|avx2|avx512 if set, or
// set_kernel_path(), which overrides both. Applies to float layers; double always runs scalar.
#pragma once

#include "config.hpp"
#include "detail/cpu_features.hpp"

#include <atomic>
#include <cstdlib>
#include <ostream>
#include <string>
#include <vector>

namespace memoryformer {
inline namespace v0 {

enum class KernelPath { scalar, avx2, avx512 };

inline const char* to_string(KernelPath path) {
  switch (path) {
    case KernelPath::scalar:
      return "scalar";
    case KernelPath::avx2:
      return "avx2";
    case KernelPath::avx512:
      return "avx512";
  }
  return "unknown";
}

inline std::ostream& operator<<(std::ostream& os, KernelPath path) { return os << to_string(path); }

// Whether this build and this CPU can run `path`.
inline bool kernel_path_supported(KernelPath path) {
  switch (path) {
    case KernelPath::scalar:
      return true;
    case KernelPath::avx2:
      return MF_HAVE_X86_SIMD && detail::cpu_features().avx2_fma;
    case KernelPath::avx512:
      return MF_HAVE_X86_SIMD && detail::cpu_features().avx512f;
  }
  return false;
}

// Every path this build and CPU can run, slowest first.
inline std::vector<KernelPath> supported_kernel_paths() {
  std::vector<KernelPath> paths;
  for (KernelPath p : {KernelPath::scalar, KernelPath::avx2, KernelPath::avx512})
    if (kernel_path_supported(p)) paths.push_back(p);
  return paths;
}

// "scalar", "avx2" or "avx512" -> the path; anything else throws Error.
inline KernelPath parse_kernel_path(const std::string& name) {
  for (KernelPath p : {KernelPath::scalar, KernelPath::avx2, KernelPath::avx512})
    if (name == to_string(p)) return p;
  detail::fail("parse_kernel_path", "name", '"' + name + '"', "one of scalar, avx2, avx512");
}

namespace detail {

inline constexpr int kPathUnset = -1;
inline std::atomic<int> g_kernel_path{kPathUnset};

inline void require_supported(const char* where, const char* name, KernelPath path) {
  if (!kernel_path_supported(path))
    fail(where, name, to_string(path),
         "a path this build and CPU support (MF_SIMD=OFF builds and CPUs without AVX2+FMA or "
         "AVX-512F support fewer)");
}

// The path from MEMORYFORMER_PATH, or the best supported one when the variable is unset or empty.
inline KernelPath initial_kernel_path() {
  const char* env = std::getenv("MEMORYFORMER_PATH");
  if (env != nullptr && *env != '\0') {
    KernelPath path;
    try {
      path = parse_kernel_path(env);
    } catch (const Error&) {
      fail("environment", "MEMORYFORMER_PATH", '"' + std::string(env) + '"', "one of scalar, avx2, avx512");
    }
    require_supported("environment", "MEMORYFORMER_PATH", path);
    return path;
  }
  return supported_kernel_paths().back();
}

}  // namespace detail

// The path the kernels use now. Throws Error if MEMORYFORMER_PATH names an unknown or unsupported
// path and set_kernel_path() has not overridden it.
inline KernelPath kernel_path() {
  int current = detail::g_kernel_path.load(std::memory_order_acquire);
  if (current == detail::kPathUnset) {
    const int chosen = static_cast<int>(detail::initial_kernel_path());
    detail::g_kernel_path.compare_exchange_strong(current, chosen, std::memory_order_acq_rel);
    current = detail::g_kernel_path.load(std::memory_order_acquire);
  }
  return static_cast<KernelPath>(current);
}

// Selects `path` for all subsequent calls in the process; throws Error if it is not supported.
inline void set_kernel_path(KernelPath path) {
  detail::require_supported("set_kernel_path", "path", path);
  detail::g_kernel_path.store(static_cast<int>(path), std::memory_order_release);
}

}  // namespace v0
}  // namespace memoryformer
