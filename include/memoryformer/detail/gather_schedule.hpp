// The order in which a layer's forward gather (Eq. 11) and backward scatter-add (Eq. 12) visit
// tokens and table rows, and how they are cut across threads. Two schedules, chosen per call from
// N and the table size:
//
// - per token: each token reads its K rows straight from the table. At small N the rows are read
//   once per call anyway; this is the decode path (columns split across threads when N is small).
// - panels: at large N the per-token loop rereads every row from DRAM each time a token picks it
//   (12-13 GB/s measured at N = 4096, time set by bytes per value). Here the table is cut into
//   panels, kPanelColumns columns of a group of chunk tables, copied into one contiguous buffer that
//   fills half of L2, and every token gathers its rows of that group from the panel before the next
//   panel is packed: each table value comes from DRAM once per call and from L2 N / 2^tau times.
//   The copy is what lets L2 hold the panel: table rows are out_dim values apart (4 KiB at h = 1024
//   fp32), which maps a column slice of many rows onto few cache sets -- however narrow the slice,
//   only 2^tau rows of it fit in an 8-way 1 MiB L2.
#pragma once

#include "../config.hpp"
#include "../threading.hpp"
#include "aligned_buffer.hpp"
#include "kernels/row_selection.hpp"
#include "partition.hpp"

#include <algorithm>
#include <cstddef>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace memoryformer {
inline namespace v0 {
namespace detail {

// Column slices handed to threads start on 64-byte boundaries of a row of y.
template <class Scalar>
constexpr Eigen::Index column_align() {
  return 64 / sizeof(Scalar);
}

// Panels are used from this many tokens per table row (N / 2^tau) on. Packing reads the whole
// table once per call; below this the per-token loop reads fewer bytes. Measured at d = h = 1024,
// tau 8, 2 threads (us per token, per-token loop -> panels): N = 256 fp32 43 -> 75-100, int8
// 13 -> 41 (worse); N = 1024 fp32 39-52 -> 21-48, int8 13.5 -> 10.5-13 (about even, noisy);
// N = 4096 fp32 38-40 -> 14-20, bf16 30-34 -> 19-25, int8 14 -> 9.4.
inline constexpr double kMinTokensPerRowForPanels = 4.0;

// Bytes of L2 per core, as the OS reports it (1 MiB if it does not).
inline std::size_t l2_cache_bytes() {
  static const std::size_t bytes = [] {
    long reported = 0;
#if defined(_SC_LEVEL2_CACHE_SIZE)
    reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return reported > 0 ? static_cast<std::size_t>(reported) : std::size_t{1} << 20;
  }();
  return bytes;
}

// Chunk tables per panel: as many as fit in half of L2 (the other half holds the y being written).
template <class T>
int panel_group(int chunks, int buckets) {
  const std::size_t table_bytes = static_cast<std::size_t>(buckets) * kPanelColumns * sizeof(T);
  const std::size_t fit = l2_cache_bytes() / 2 / table_bytes;
  return static_cast<int>(std::clamp<std::size_t>(fit, 1, static_cast<std::size_t>(chunks)));
}

inline bool use_panels(Eigen::Index tokens, int buckets, int width) {
  return width >= kPanelColumns && static_cast<double>(tokens) >= kMinTokensPerRowForPanels * buckets;
}

// panel[(k * buckets + r) * kPanelColumns + c] = table[((first + k) * buckets + r) * ld + c] for the
// `group` chunk tables from `first` and columns [0, width) of the (already offset) table.
template <class T>
void pack_panel(const T* table, std::ptrdiff_t ld, int first, int group, int buckets, int width, T* panel) {
  const std::ptrdiff_t rows = static_cast<std::ptrdiff_t>(group) * buckets;
  const T* source = table + static_cast<std::ptrdiff_t>(first) * buckets * ld;
  for (std::ptrdiff_t r = 0; r < rows; ++r)
    std::copy(source + r * ld, source + r * ld + width, panel + r * kPanelColumns);
}

// The inverse of pack_panel: columns [0, width) of the group's table rows from the panel.
template <class T>
void unpack_panel(const T* panel, std::ptrdiff_t ld, int first, int group, int buckets, int width, T* table) {
  const std::ptrdiff_t rows = static_cast<std::ptrdiff_t>(group) * buckets;
  T* dest = table + static_cast<std::ptrdiff_t>(first) * buckets * ld;
  for (std::ptrdiff_t r = 0; r < rows; ++r)
    std::copy(panel + r * kPanelColumns, panel + r * kPanelColumns + width, dest + r * ld);
}

// The panel schedule's loop: body(panel, c0, w, first, g) for every column slice [c0, c0 + w) of
// `width` and group of g chunk tables from `first`. Threads own column slices, each with its own
// panel buffer, so each packs its own panels and writes its own columns.
template <class T, class Body>
void for_each_panel(Eigen::Index width, int chunks, int buckets, const Body& body) {
  const int group = panel_group<T>(chunks, buckets);
  const Eigen::Index slices = (width + kPanelColumns - 1) / kPanelColumns;
  const auto pool = thread_pool();
  const int tasks = static_cast<int>(std::min<Eigen::Index>(slices, pool->size()));
  pool->parallel_for(tasks, [&](int task) {
    AlignedBuffer<T> panel(static_cast<std::size_t>(group) * buckets * kPanelColumns);
    const Range mine = split_range(slices, tasks, task);
    for (Eigen::Index slice = mine.begin; slice < mine.end; ++slice) {
      const Eigen::Index c0 = slice * kPanelColumns;
      const int w = static_cast<int>(std::min<Eigen::Index>(kPanelColumns, width - c0));
      for (int first = 0; first < chunks; first += group)
        body(panel.data(), c0, w, first, std::min(group, chunks - first));
    }
  });
}

// The forward gather on the panel schedule: each panel packed from the table, every token's rows
// of it summed into its columns of y.
template <class T, class Acc, class Kernel>
void gather_panels(const T* table, const CodeMatrix& codes, const RowMatrix<Acc>& scores, int buckets,
                   RowMatrix<Acc>& y, const Kernel& kernel) {
  const Eigen::Index width = y.cols();
  for_each_panel<T>(width, static_cast<int>(codes.cols()), buckets,
                    [&](T* panel, Eigen::Index c0, int w, int first, int g) {
                      pack_panel(table + c0, width, first, g, buckets, w, panel);
                      for (Eigen::Index i = 0; i < codes.rows(); ++i) {
                        const RowSelection sel{codes.row(i).data() + first, g, buckets, kPanelColumns};
                        kernel(panel, sel, scores.row(i).data() + first, y.row(i).data() + c0, w);
                      }
                    });
}

// y [N, width] = bias + sum_k scores(i, k) * row(k, codes(i, k)) of the [K * buckets, width]
// row-major table, through the active path's kernels(table, selection, scores, y, width): `gather`
// on the table, `panel` on packed panels. T is the stored type and Acc the accumulated one.
template <class T, class Acc, class Kernels>
RowMatrix<Acc> gather_tokens(const T* table, const CodeMatrix& codes, const RowMatrix<Acc>& scores,
                             int buckets, const RowMatrix<Acc>& bias, int width, const Kernels& kernels) {
  const Eigen::Index n = codes.rows();
  const int chunks = static_cast<int>(codes.cols());
  RowMatrix<Acc> y(n, width);
  if (bias.cols() > 0)
    y.rowwise() = bias.row(0);
  else
    y.setZero();
  if (use_panels(n, buckets, width)) {
    gather_panels(table, codes, scores, buckets, y, kernels.panel);
    return y;
  }
  const auto pool = thread_pool();
  const double work = static_cast<double>(n) * chunks * width;
  const int row_tasks = task_count(work, n, pool->size());
  const int col_tasks =
      task_count(work, width / column_align<Acc>(), (pool->size() + row_tasks - 1) / row_tasks);
  pool->parallel_for(row_tasks * col_tasks, [&](int task) {
    const Range rows = split_range(n, row_tasks, task / col_tasks);
    const Range cols = split_range(width, col_tasks, task % col_tasks, column_align<Acc>());
    for (Eigen::Index i = rows.begin; i < rows.end; ++i) {
      const RowSelection sel{codes.row(i).data(), chunks, buckets, width};
      kernels.gather(table + cols.begin, sel, scores.row(i).data(), y.row(i).data() + cols.begin,
                     static_cast<int>(cols.size()));
    }
  });
  return y;
}

// The backward scatter-add (Eq. 12), grad[row(k, codes(i, k))] += scores(i, k) * dy(i), on the
// panel schedule: per column slice and table group, the gradient panel is packed, every token's
// rows are added into it (`scatter`, the path's kernel, on panel rows), and it is copied back.
// Each value receives its additions in token order, as in the per-token loop: the results are
// identical, and each gradient row is read and written once per call rather than once per token.
template <class T, class Dy, class Kernel>
void scatter_panels(T* grad, const CodeMatrix& codes, const RowMatrix<T>& scores, int buckets, const Dy& dy,
                    const Kernel& scatter) {
  const Eigen::Index width = dy.cols();
  for_each_panel<T>(width, static_cast<int>(codes.cols()), buckets,
                    [&](T* panel, Eigen::Index c0, int w, int first, int g) {
                      pack_panel(grad + c0, width, first, g, buckets, w, panel);
                      for (Eigen::Index i = 0; i < codes.rows(); ++i) {
                        const RowSelection sel{codes.row(i).data() + first, g, buckets, kPanelColumns};
                        scatter(panel, sel, scores.row(i).data() + first, dy.row(i).data() + c0, w);
                      }
                      unpack_panel(panel, width, first, g, buckets, w, grad + c0);
                    });
}

// grad [K * buckets, width] += the scatter-add (Eq. 12) of every token, through the active path's
// `scatter` kernel: on panels from 4 tokens per row on, else per token with threads owning column
// ranges (rows picked by several tokens never race). Both add each value's terms in token order.
template <class T, class Dy, class Kernel>
void scatter_tokens(T* grad, const CodeMatrix& codes, const RowMatrix<T>& scores, int buckets, const Dy& dy,
                    const Kernel& scatter) {
  const Eigen::Index n = codes.rows(), width = dy.cols();
  const int chunks = static_cast<int>(codes.cols());
  if (use_panels(n, buckets, static_cast<int>(width))) {
    scatter_panels(grad, codes, scores, buckets, dy, scatter);
    return;
  }
  const auto pool = thread_pool();
  const double work = static_cast<double>(n) * chunks * width;
  const int col_tasks = task_count(work, width / column_align<T>(), pool->size());
  pool->parallel_for(col_tasks, [&](int task) {
    const Range cols = split_range(width, col_tasks, task, column_align<T>());
    for (Eigen::Index i = 0; i < n; ++i) {
      const RowSelection sel{codes.row(i).data(), chunks, buckets, width};
      scatter(grad + cols.begin, sel, scores.row(i).data(), dy.row(i).data() + cols.begin,
              static_cast<int>(cols.size()));
    }
  });
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
