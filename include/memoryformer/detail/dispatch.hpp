// The gather and hash kernels of one path, as function pointers, for the layer code to call without
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

// Forward gather of one token: y[0:width] += sum_k scores[k] * row_k, rows stored as T and
// accumulated as Acc.
template <class T, class Acc>
using GatherKernel = void (*)(const T* table, const RowSelection& sel, const Acc* scores, Acc* y, int width);

// The same for every token of a pass over a packed panel (gather_schedule.hpp).
template <class T, class Acc>
using PanelKernel = void (*)(const T* panel, const PanelPass<Acc>& pass, int width);

template <class T>
struct GatherKernels {
  GatherKernel<T, T> gather;
  PanelKernel<T, T> panel;
  void (*scatter)(T* grad, const RowSelection& sel, const T* scores, const T* dy, int width);
  void (*dot)(const T* table, const RowSelection& sel, const T* dy, int width, T* out);
  // The backward of one row and the tokens that picked it (by code, gather_schedule.hpp).
  void (*run_backward)(const T* row, T* grad, const CodeRun<T>& run, const T* strip, std::ptrdiff_t ld,
                       int width, T* dots);
};

template <class T>
GatherKernels<T> kernels_for(KernelPath path) {
  if constexpr (std::is_same<T, float>::value) {
#if MF_HAVE_X86_SIMD
    if (path == KernelPath::avx512)
      return {avx512::gather<float>, avx512::gather_panel<float>, avx512::scatter, avx512::dot,
              avx512::run_backward};
    if (path == KernelPath::avx2)
      return {avx2::gather<float>, avx2::gather_panel<float>, avx2::scatter, avx2::dot, avx2::run_backward};
#endif
  }
  (void)path;
  return {scalar::gather<T, T>, scalar::gather_panel<T, T>, scalar::scatter<T>, scalar::dot<T>, scalar::run_backward<T>};
}

// The forward gathers of compressed tables (PackedMemoryLayer): stored as T (bf16 or int8),
// accumulated in float.
template <class T>
struct PackedKernels {
  GatherKernel<T, float> gather;
  PanelKernel<T, float> panel;
};

template <class T>
PackedKernels<T> packed_kernels_for(KernelPath path) {
#if MF_HAVE_X86_SIMD
  if (path == KernelPath::avx512) return {avx512::gather<T>, avx512::gather_panel<T>};
  if (path == KernelPath::avx2) return {avx2::gather<T>, avx2::gather_panel<T>};
#endif
  (void)path;
  return {scalar::gather<T, float>, scalar::gather_panel<T, float>};
}

// The hash of one row (Eq. 9-10): codes[k] and scores[k] of its `chunks` chunks of tau values.
template <class S>
using HashKernel = void (*)(const S* x, int chunks, int tau, S temperature, Score score, std::int32_t* codes,
                            S* scores);

template <class S>
HashKernel<S> hash_kernel_for(KernelPath path) {
  if constexpr (std::is_same<S, float>::value) {
#if MF_HAVE_X86_SIMD
    if (path == KernelPath::avx512) return avx512::hash_chunks;
    if (path == KernelPath::avx2) return avx2::hash_chunks;
#endif
  }
  (void)path;
  return scalar::hash_chunks<S>;
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
