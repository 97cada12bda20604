// The kernels of one instruction set as a table of function pointers, for the layer code to call
// without knowing which set runs. Each ISA header (scalar.hpp, avx2.hpp, avx512.hpp) defines its
// table once, at its end; dispatch.hpp selects one with a single switch on the KernelPath.
#pragma once

#include "../../config.hpp"
#include "../../platform/float16.hpp"
#include "row_selection.hpp"

#include <cstddef>
#include <cstdint>

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

// The kernels of trained tables (T = float or double), forward and backward.
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

// The forward gathers of compressed tables: stored as T (bf16 or int8), accumulated in float.
template <class T>
struct CompressedKernels {
  GatherKernel<T, float> gather;
  PanelKernel<T, float> panel;
};

// The hash of one row (Eq. 9-10): codes[k] and scores[k] of its `chunks` chunks of tau values.
template <class S>
using HashKernel = void (*)(const S* x, int chunks, int tau, S temperature, Score score, std::int32_t* codes,
                            S* scores);

// Every float kernel of one instruction set.
struct KernelTable {
  GatherKernels<float> trained;
  CompressedKernels<bf16> bf16_tables;
  CompressedKernels<std::int8_t> int8_tables;
  HashKernel<float> hash;
};

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
