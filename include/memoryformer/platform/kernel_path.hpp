// The implementations of the kernels: the portable scalar path (always compiled, the test oracle)
// or a SIMD path the CPU supports. A Context (context.hpp) says which one runs: the best supported
// path by default, the environment variable MEMORYFORMER_PATH=scalar|avx2|avx512 if set, or the one
// it is built with; set_kernel_path() changes the default context's. Applies to float layers;
// double always runs scalar.
#pragma once

#include "../config.hpp"
#include "cpu_features.hpp"

#include <cstdlib>
#include <string>
#include <vector>

namespace memoryformer {
inline namespace v0 {

enum class KernelPath { scalar, avx2, avx512 };

template <>
struct EnumNames<KernelPath> {
  static constexpr EnumName<KernelPath> table[] = {
      {KernelPath::scalar, "scalar"}, {KernelPath::avx2, "avx2"}, {KernelPath::avx512, "avx512"}};
};

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
  if (const auto path = detail::enum_named<KernelPath>(name)) return *path;
  detail::fail("parse_kernel_path", "name", '"' + name + '"',
               "one of " + detail::enum_name_list<KernelPath>());
}

namespace detail {

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
      fail("environment", "MEMORYFORMER_PATH", '"' + std::string(env) + '"',
           "one of " + enum_name_list<KernelPath>());
    }
    require_supported("environment", "MEMORYFORMER_PATH", path);
    return path;
  }
  return supported_kernel_paths().back();
}

}  // namespace detail

}  // namespace v0
}  // namespace memoryformer
