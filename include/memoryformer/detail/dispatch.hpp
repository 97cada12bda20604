// The kernel table of a KernelPath: the one switch that picks an instruction set. float uses the
// selected path; double always the scalar one.
#pragma once

#include "../platform/kernel_path.hpp"
#include "kernels/avx2.hpp"
#include "kernels/avx512.hpp"
#include "kernels/kernel_table.hpp"
#include "kernels/scalar.hpp"

#include <cstdint>
#include <type_traits>

namespace memoryformer {
inline namespace v0 {
namespace detail {

inline const KernelTable& kernel_table(KernelPath path) {
  switch (path) {
#if MF_HAVE_X86_SIMD
    case KernelPath::avx512:
      return avx512::kTable;
    case KernelPath::avx2:
      return avx2::kTable;
#endif
    default:
      return scalar::kTable;
  }
}

// The kernels of trained tables of T on `path`.
template <class T>
GatherKernels<T> kernels_for(KernelPath path) {
  if constexpr (std::is_same<T, float>::value)
    return kernel_table(path).trained;
  else
    return scalar::kTrainedKernels<T>;
}

// The forward kernels of tables stored as T (bf16 or int8) on `path`.
template <class T>
CompressedKernels<T> compressed_kernels_for(KernelPath path) {
  if constexpr (std::is_same<T, bf16>::value)
    return kernel_table(path).bf16_tables;
  else
    return kernel_table(path).int8_tables;
}

template <class S>
HashKernel<S> hash_kernel_for(KernelPath path) {
  if constexpr (std::is_same<S, float>::value)
    return kernel_table(path).hash;
  else
    return scalar::hash_chunks<S>;
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
