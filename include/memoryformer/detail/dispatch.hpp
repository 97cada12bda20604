// The gather kernels of one path, as function pointers, for the layer code to call without
// knowing which path runs. float uses the selected path; double always the scalar one.
#pragma once

#include "../kernel_path.hpp"
#include "kernels/avx2.hpp"
#include "kernels/avx512.hpp"
#include "kernels/scalar.hpp"

#include <type_traits>

namespace memoryformer {
inline namespace v0 {
namespace detail {

template <class T>
struct GatherKernels {
  void (*gather)(const T* table, const RowSelection& sel, const T* scores, T* y, int width);
  void (*scatter)(T* grad, const RowSelection& sel, const T* scores, const T* dy, int width);
  void (*dot)(const T* table, const RowSelection& sel, const T* dy, int width, T* out);
};

template <class T>
GatherKernels<T> kernels_for(KernelPath path) {
  if constexpr (std::is_same<T, float>::value) {
#if MF_HAVE_X86_SIMD
    if (path == KernelPath::avx512) return {avx512::gather<float>, avx512::scatter, avx512::dot};
    if (path == KernelPath::avx2) return {avx2::gather<float>, avx2::scatter, avx2::dot};
#endif
  }
  (void)path;
  return {scalar::gather<T, T>, scalar::scatter<T>, scalar::dot<T>};
}

// The forward gather of compressed tables (PackedMemoryLayer): stored as T (bf16 or int8),
// accumulated in float.
template <class T>
using PackedGather = void (*)(const T* table, const RowSelection& sel, const float* scores, float* y,
                              int width);

template <class T>
PackedGather<T> packed_gather_for(KernelPath path) {
#if MF_HAVE_X86_SIMD
  if (path == KernelPath::avx512) return avx512::gather<T>;
  if (path == KernelPath::avx2) return avx2::gather<T>;
#endif
  (void)path;
  return scalar::gather<T, float>;
}

// The kernels of the path selected now (kernel_path()).
template <class T>
GatherKernels<T> active_kernels() {
  return kernels_for<T>(kernel_path());
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
