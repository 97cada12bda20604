// The order in which a layer's forward gather (Eq. 11) and backward scatter-add and row dots
// (Eq. 12) visit tokens and table rows, and how they are cut across threads. Three schedules,
// chosen per call from N, the table size and its layout:
//
// - per token: each token reads its K rows straight from the table. At small N the rows are read
//   once per call anyway; this is the decode path (columns split across threads when N is small).
// - panels: at large N the per-token loop rereads every row from DRAM each time a token picks it,
//   so its time follows the bytes per value (docs/performance.md). Here the table is cut into
//   panels, kPanelColumns columns of a group of chunk tables, copied into one contiguous buffer that
//   fills half of L2, and every token gathers its rows of that group from the panel before the next
//   panel is packed: each table value comes from DRAM once per call and from L2 N / 2^tau times.
//   The copy is what lets L2 hold the panel: table rows are out_dim values apart (4 KiB at h = 1024
//   fp32), which maps a column slice of many rows onto few cache sets -- however narrow the slice,
//   only 2^tau rows of it fit in an 8-way 1 MiB L2.
// - tile panels: for tables stored in column tiles (table_tiles.hpp), a panel is a whole tile of a
//   group of tables, copied in one contiguous read. That makes panels pay from half a token per
//   row on, where slicing row-major rows does not.
// - by code (the backward's scatter-add and row dots): each table's tokens sorted by code, so that
//   the tokens that picked a row are visited together. The row's gradient is summed in registers
//   and written once, its dots with the tokens' dy computed while it is loaded, and the table and
//   its gradient are read once per call, in address order, in kPanelColumns slices, while the
//   slice of dy comes from a contiguous strip in L2.
#pragma once

#include "../config.hpp"
#include "../context.hpp"
#include "../platform/aligned_buffer.hpp"
#include "kernels/row_selection.hpp"
#include "partition.hpp"
#include "table_tiles.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace memoryformer {
inline namespace v0 {
namespace detail {

// Column slices handed to threads start on 64-byte boundaries of a row of y.
template <class Scalar>
constexpr Eigen::Index column_align() {
  return 64 / sizeof(Scalar);
}

// Panels are used from this many tokens per table row (N / 2^tau) on. Packing reads the whole
// table once per call; below this the per-token loop reads fewer bytes. Chosen with BM_MemoryLayer
// at d = h = 1024, tau 8, N = 256 to 4096 (docs/performance.md, "Large N: the panel schedule").
inline constexpr double kMinTokensPerRowForPanels = 4.0;

// Whole-tile panels of tiled tables (table_tiles.hpp) from this many tokens per row on, up to
// kMinTokensPerRowForPanels: the copy is one contiguous read at DRAM streaming speed. Chosen with
// BM_MemoryLayer on 128-column tiles (docs/performance.md, "Tiled tables"). From 4 tokens per
// row, 64-column panels cut from the tiles hold twice the tables and are as fast or faster.
inline constexpr double kMinTokensPerRowForTiledPanels = 0.5;

// The backward's scatter-add and row dots go by code (backward_by_code) from this many tokens per
// row on; at one token per row it was even with the per-token loop, and worse below
// (BM_MemoryLayerBackward; docs/performance.md, "Backward by code").
inline constexpr double kMinTokensPerRowByCode = 2.0;

// Chunk tables per panel: as many as fit in half of L2 (the other half holds the y being written).
template <class T>
int panel_group(int chunks, int buckets, Eigen::Index panel_columns, std::size_t l2_bytes) {
  const std::size_t table_bytes = static_cast<std::size_t>(buckets) * panel_columns * sizeof(T);
  const std::size_t fit = l2_bytes / 2 / table_bytes;
  return static_cast<int>(std::clamp<std::size_t>(fit, 1, static_cast<std::size_t>(chunks)));
}

// The schedules (top of this file): per token; panels of kPanelColumns, sliced out of the table's
// rows or tiles; panels of whole tiles, copied in one contiguous read (forward only); by code
// (backward only).
enum class Schedule { per_token, panels, tile_panels, by_code };

// The faster schedule for `tokens` tokens on this table (thresholds above).
template <class T>
Schedule choose_schedule(Eigen::Index tokens, int buckets, const TableTiles<T>& tiles) {
  const double tokens_per_row = static_cast<double>(tokens) / buckets;
  if (tiles.width < kPanelColumns) return Schedule::per_token;
  if (tokens_per_row >= kMinTokensPerRowForPanels) return Schedule::panels;
  if (!tiles.is_row_major() && tokens_per_row >= kMinTokensPerRowForTiledPanels) return Schedule::tile_panels;
  return Schedule::per_token;
}

// The backward's schedule for `tokens` tokens: by code from kMinTokensPerRowByCode tokens per row,
// else per token.
inline Schedule choose_backward_schedule(Eigen::Index tokens, int buckets) {
  return static_cast<double>(tokens) / buckets >= kMinTokensPerRowByCode ? Schedule::by_code : Schedule::per_token;
}

// One panel's columns: [col, col + width) of the table, read from `source` (column col of row 0)
// whose rows are `ld` values apart.
template <class T>
struct PanelSlice {
  T* source;
  std::ptrdiff_t ld;
  Eigen::Index col;
  int width;
};

// How many rows ahead pack_panel requests the pieces it copies out of row-major rows. Each piece
// lies in a page of its own (rows are out_dim values apart), where the hardware prefetchers do not
// follow. 64 rows ahead brings the strided copy close to a contiguous one (docs/performance.md,
// "y strips").
inline constexpr std::ptrdiff_t kPackRowsAhead = 64;

// panel[(k * buckets + r) * w + c] = source[((first + k) * buckets + r) * ld + c] for the `group`
// chunk tables from `first` and the slice's w columns: one contiguous copy for a tile. A whole tile
// is copied too, not read in place: the copy measured faster (docs/performance.md, "Tile panels read
// in place").
template <class T>
void pack_panel(const PanelSlice<T>& slice, int first, int group, int buckets,
                std::remove_const_t<T>* panel) {
  const std::ptrdiff_t rows = static_cast<std::ptrdiff_t>(group) * buckets, w = slice.width;
  const T* source = slice.source + static_cast<std::ptrdiff_t>(first) * buckets * slice.ld;
  if (slice.ld == w) {
    std::copy(source, source + rows * w, panel);
    return;
  }
  const std::size_t piece_bytes = sizeof(T) * static_cast<std::size_t>(w);
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    if (r + kPackRowsAhead < rows) prefetch_row(source + (r + kPackRowsAhead) * slice.ld, piece_bytes);
    std::copy(source + r * slice.ld, source + r * slice.ld + w, panel + r * w);
  }
}

// The panels of a table: column slices of `columns` values (fewer at a tile's end) of every tile,
// each cut into groups of `group` chunk tables.
template <class T>
class PanelGrid {
 public:
  PanelGrid(const TableTiles<T>& tiles, Eigen::Index columns, int chunks, int group)
      : tiles_(tiles),
        columns_(columns),
        chunks_(chunks),
        group_(group),
        per_tile_((std::min(tiles.tile_columns, tiles.width) + columns - 1) / columns) {}

  Eigen::Index slices() const { return tiles_.tiles() * per_tile_; }
  int groups() const { return (chunks_ + group_ - 1) / group_; }
  int first(int g) const { return g * group_; }
  int group_size(int g) const { return std::min(group_, chunks_ - first(g)); }
  std::size_t panel_values(int buckets) const {
    return static_cast<std::size_t>(group_) * buckets * columns_;
  }

  // Slice j; its width is <= 0 past the end of a narrow last tile, which has fewer slices.
  PanelSlice<T> slice(Eigen::Index j) const {
    const Eigen::Index t = j / per_tile_, offset = j % per_tile_ * columns_;
    const auto ld = static_cast<std::ptrdiff_t>(tiles_.tile_width(t));
    return {tiles_.tile(t) + offset, ld, tiles_.tile_begin(t) + offset,
            static_cast<int>(std::min<Eigen::Index>(columns_, ld - offset))};
  }

 private:
  const TableTiles<T>& tiles_;
  Eigen::Index columns_;
  int chunks_, group_;
  Eigen::Index per_tile_;
};

// Tokens per pass over a slice's panels. A pass keeps its tokens' columns of y in a
// contiguous strip, [tokens, slice width], that stays in L2 across the slice's groups: read in
// place, a slice of row-major y is 256 bytes every out_dim values, which maps onto few cache sets
// (as the tables do, above) and is evicted between groups. Longer inputs take several passes, each
// packing the panels again, so that the strip is at most 1 MiB of float.
inline constexpr Eigen::Index kStripTokens = 4096;

// The gather's panel loop over y [N, width]: for every slice of `columns` columns of every tile and
// every pass of at most kStripTokens tokens, the pass's tokens' columns of y are copied into a
// contiguous strip, body(panel, strip, slice, tokens, first, g) runs for every group of g <= `group`
// chunk tables from `first`, and the strip is copied back. Threads own slices, each with its own panel
// and strip buffers, so each packs its own panels and writes its own columns.
template <class T, class S, class Body>
void for_each_panel(const Context& ctx, const TableTiles<T>& tiles, Eigen::Index columns, int chunks,
                    int group, int buckets, RowMatrix<S>& matrix, const Body& body) {
  const PanelGrid<T> grid(tiles, columns, chunks, group);
  const int tasks = static_cast<int>(std::min<Eigen::Index>(grid.slices(), ctx.num_threads()));
  const Eigen::Index n = matrix.rows(), passes = (n + kStripTokens - 1) / kStripTokens;
  ctx.parallel_for(tasks, [&](int task) {
    AlignedBuffer<std::remove_const_t<T>> panel(grid.panel_values(buckets));
    AlignedBuffer<S> strip_buffer(static_cast<std::size_t>(std::min(n, kStripTokens) * columns));
    const Range mine = split_range(grid.slices(), tasks, task);
    for (Eigen::Index j = mine.begin; j < mine.end; ++j) {
      const PanelSlice<T> piece = grid.slice(j);
      if (piece.width <= 0) continue;
      for (Eigen::Index pass = 0; pass < passes; ++pass) {
        const Range tokens = split_range(n, static_cast<int>(passes), static_cast<int>(pass));
        auto in_matrix = matrix.block(tokens.begin, piece.col, tokens.size(), piece.width);
        Eigen::Map<RowMatrix<S>> strip(strip_buffer.data(), tokens.size(), piece.width);
        strip = in_matrix;
        for (int g = 0; g < grid.groups(); ++g)
          body(panel.data(), strip, piece, tokens, grid.first(g), grid.group_size(g));
        in_matrix = strip;
      }
    }
  });
}

// Panel columns of a panel schedule: whole tiles, or kPanelColumns.
template <class T>
Eigen::Index panel_columns(Schedule schedule, const TableTiles<T>& tiles) {
  return schedule == Schedule::tile_panels ? tiles.tile_columns : kPanelColumns;
}

// The columns of an [N, K] matrix (codes or scores) regrouped by panel group: the [N, g] block of the
// group of g tables from `first` starts at first * N. A pass over a group then reads its tokens' codes
// and scores contiguously. Read in place they were g values in each token's row of K, a line apart
// from the next token's, and each pass streamed those lines through L2 beside the panel and the strip
// (docs/performance.md, "Panel metadata").
template <class Scalar>
std::vector<Scalar> by_panel_group(const RowMatrix<Scalar>& matrix, int group) {
  const Eigen::Index n = matrix.rows(), chunks = matrix.cols();
  std::vector<Scalar> grouped(static_cast<std::size_t>(n * chunks));
  for (Eigen::Index first = 0; first < chunks; first += group) {
    const Eigen::Index size = std::min<Eigen::Index>(group, chunks - first);
    Eigen::Map<RowMatrix<Scalar>>(grouped.data() + first * n, n, size) = matrix.middleCols(first, size);
  }
  return grouped;
}

// The forward gather on the panel schedule: each panel packed from the table, every token's rows
// of it summed into the token's row of the strip of y. Tokens are visited once per kPanelColumns piece
// of the panel (the piece the panel kernels hold in registers), so that the part of the strip they
// touch is 64 columns however wide the panel.
template <class T, class Acc, class Kernel>
void gather_panels(const Context& ctx, const TableTiles<const T>& tiles, Eigen::Index columns,
                   const CodeMatrix& codes, const RowMatrix<Acc>& scores, int buckets, RowMatrix<Acc>& y,
                   const Kernel& kernel) {
  const int chunks = static_cast<int>(codes.cols());
  const int group = panel_group<T>(chunks, buckets, columns, ctx.l2_cache_bytes());
  const std::vector<std::int32_t> group_codes = by_panel_group(codes, group);
  const std::vector<Acc> group_scores = by_panel_group(scores, group);
  const Eigen::Index n = codes.rows();
  for_each_panel(ctx, tiles, columns, chunks, group, buckets, y,
                 [&](T* panel, Eigen::Map<RowMatrix<Acc>>& strip, const PanelSlice<const T>& slice,
                     const Range& tokens, int first, int g) {
                   pack_panel(slice, first, g, buckets, panel);
                   const std::int32_t* block_codes = group_codes.data() + first * n;
                   const Acc* block_scores = group_scores.data() + first * n;
                   for (int c = 0; c < slice.width; c += kPanelColumns)
                     kernel(panel + c,
                            PanelPass<Acc>{block_codes + tokens.begin * g, block_scores + tokens.begin * g, g,
                                           buckets, slice.width, strip.data() + c, strip.cols(), tokens.size()},
                            std::min(kPanelColumns, slice.width - c));
                 });
}

// The per-token schedule: threads own (token range, column range) blocks; each token's rows are
// read straight from the table, one kernel call per tile piece of the range. Columns are split
// on 64-byte boundaries of y, or on tile boundaries for a tiled table.
template <class T, class Acc, class Kernel>
void gather_per_token(const Context& ctx, const TableTiles<const T>& tiles, const CodeMatrix& codes,
                      const RowMatrix<Acc>& scores, int buckets, RowMatrix<Acc>& y, const Kernel& kernel) {
  const Eigen::Index n = codes.rows(), width = tiles.width;
  const int chunks = static_cast<int>(codes.cols());
  const Eigen::Index align = tiles.is_row_major() ? column_align<Acc>() : tiles.tile_columns;
  const double work = static_cast<double>(n) * chunks * width;
  const int row_tasks = task_count(work, n, ctx.num_threads());
  const int col_tasks =
      task_count(work, width / column_align<Acc>(), (ctx.num_threads() + row_tasks - 1) / row_tasks);
  ctx.parallel_for(row_tasks * col_tasks, [&](int task) {
    const Range rows = split_range(n, row_tasks, task / col_tasks);
    const Range cols = split_range(width, col_tasks, task % col_tasks, align);
    for (Eigen::Index i = rows.begin; i < rows.end; ++i)
      for_each_tile_piece(tiles, cols.begin, cols.end,
                          [&](const T* piece, std::ptrdiff_t ld, Eigen::Index c, int w) {
                            kernel(piece, RowSelection{codes.row(i).data(), chunks, buckets, ld},
                                   scores.row(i).data(), y.row(i).data() + c, w);
                          });
  });
}

// y [N, width] = bias + sum_k scores(i, k) * row(k, codes(i, k)) of the [K * buckets, width]
// table, through the active path's kernels: `gather`(table, selection, scores, y, width) per token,
// `panel`(panel, pass, width) on packed panels, on `schedule`. T is the stored type and Acc the accumulated one.
template <class T, class Acc, class Kernels>
RowMatrix<Acc> gather_tokens(const Context& ctx, const TableTiles<const T>& tiles, const CodeMatrix& codes,
                             const RowMatrix<Acc>& scores, int buckets, const RowMatrix<Acc>& bias,
                             const Kernels& kernels, Schedule schedule) {
  RowMatrix<Acc> y(codes.rows(), tiles.width);
  if (bias.cols() > 0)
    y.rowwise() = bias.row(0);
  else
    y.setZero();
  if (schedule != Schedule::per_token)
    gather_panels(ctx, tiles, panel_columns(schedule, tiles), codes, scores, buckets, y, kernels.panel);
  else
    gather_per_token(ctx, tiles, codes, scores, buckets, y, kernels.gather);
  return y;
}

// The same on the schedule choose_schedule() picks for this N.
template <class T, class Acc, class Kernels>
RowMatrix<Acc> gather_tokens(const Context& ctx, const TableTiles<const T>& tiles, const CodeMatrix& codes,
                             const RowMatrix<Acc>& scores, int buckets, const RowMatrix<Acc>& bias,
                             const Kernels& kernels) {
  return gather_tokens(ctx, tiles, codes, scores, buckets, bias, kernels,
                       choose_schedule(codes.rows(), buckets, tiles));
}

// Score gradients of 16 chunk tables fill a 64-byte line of float (two of double).
inline constexpr Eigen::Index kTablesPerLine = 16;

// Chunk table k's tokens in order of their code, in token order within a code (a counting sort),
// with their scores for that table: tokens[j] and run_scores[j] for j in [0, N), and run_end[c] the
// end of code c's run (it begins at run_end[c - 1], or 0).
template <class T>
void sort_by_code(const CodeMatrix& codes, const RowMatrix<T>& scores, Eigen::Index k, int buckets,
                  std::int32_t* tokens, T* run_scores, Eigen::Index* run_end) {
  const Eigen::Index n = codes.rows();
  std::fill(run_end, run_end + buckets, Eigen::Index{0});
  for (Eigen::Index i = 0; i < n; ++i) ++run_end[codes(i, k)];
  Eigen::Index begin = 0;  // run_end[c] now counts code c's tokens; make it where its run begins
  for (int c = 0; c < buckets; ++c) {
    const Eigen::Index count = run_end[c];
    run_end[c] = begin;
    begin += count;
  }
  for (Eigen::Index i = 0; i < n; ++i) {
    const Eigen::Index at = run_end[codes(i, k)]++;
    tokens[at] = static_cast<std::int32_t>(i);
    run_scores[at] = scores(i, k);
  }
}

// How many rows ahead the by-code backward requests the table and gradient pieces of rows that
// tokens picked: each piece lies in a page of its own, as in pack_panel.
inline constexpr int kRunRowsAhead = 16;

// The backward by code on column strips (Eq. 12): grad += the scatter-add and dscores = the row
// dots, in one pass over the table and its gradient. Threads own ranges of chunk tables, cut on
// kTablesPerLine boundaries where there are enough (the dscores they write then share no cache
// line). Each thread sorts its tables' tokens by code once. Then, for each kPanelColumns slice of the
// columns, it copies every token's dy columns into a contiguous strip (as for_each_panel does) and
// walks its tables row by row in address order: `run_backward`, the path's kernel, sums a row's
// gradient over the tokens that picked it in registers and writes it once, and adds each token's dot
// with the row. dscores(i, k) is summed over the slices in column order, so the results do not
// depend on the number of threads.
template <class T, class Dy, class Kernel>
void backward_by_code(const Context& ctx, const T* table, T* grad, const CodeMatrix& codes,
                      const RowMatrix<T>& scores, int buckets, const Dy& dy, RowMatrix<T>& dscores,
                      const Kernel& run_backward) {
  const Eigen::Index n = codes.rows(), width = dy.cols();
  const int chunks = static_cast<int>(codes.cols());
  const Eigen::Index columns = std::min<Eigen::Index>(width, kPanelColumns);
  const std::size_t piece_bytes = sizeof(T) * static_cast<std::size_t>(columns);
  const Eigen::Index align = chunks >= kTablesPerLine * ctx.num_threads() ? kTablesPerLine : 1;
  const int tasks = task_count(static_cast<double>(n) * chunks * width, (chunks + align - 1) / align,
                               ctx.num_threads());
  ctx.parallel_for(tasks, [&](int task) {
    const Range mine = split_range(chunks, tasks, task, align);
    // Table k's runs: tokens[t * n + j] and run_scores[..] for j in [ends[t][c - 1], ends[t][c]), code c.
    const auto entries = static_cast<std::size_t>(mine.size() * n);
    std::vector<std::int32_t> tokens(entries);
    std::vector<T> run_scores(entries), dots(entries, T(0));
    std::vector<Eigen::Index> ends(static_cast<std::size_t>(mine.size()) * buckets);
    for (Eigen::Index t = 0; t < mine.size(); ++t)
      sort_by_code(codes, scores, mine.begin + t, buckets, tokens.data() + t * n, run_scores.data() + t * n,
                   ends.data() + t * buckets);
    AlignedBuffer<T> strip_buffer(static_cast<std::size_t>(n * columns));
    for (Eigen::Index col = 0; col < width; col += columns) {
      const Eigen::Index w = std::min(columns, width - col);
      Eigen::Map<RowMatrix<T>> strip(strip_buffer.data(), n, w);
      strip = dy.middleCols(col, w);
      for (Eigen::Index t = 0; t < mine.size(); ++t) {
        const Eigen::Index first_row = (mine.begin + t) * buckets;
        const Eigen::Index* run_end = ends.data() + t * buckets;
        auto run_begin = [&](Eigen::Index c) { return c == 0 ? Eigen::Index{0} : run_end[c - 1]; };
        for (Eigen::Index c = 0; c < buckets; ++c) {
          const Eigen::Index ahead = c + kRunRowsAhead;
          if (ahead < buckets && run_begin(ahead) < run_end[ahead]) {
            prefetch_row(table + (first_row + ahead) * width + col, piece_bytes);
            prefetch_row(grad + (first_row + ahead) * width + col, piece_bytes);
          }
          const Eigen::Index begin = run_begin(c), count = run_end[c] - begin;
          if (count == 0) continue;
          const auto at = static_cast<std::size_t>(t * n + begin);
          run_backward(table + (first_row + c) * width + col, grad + (first_row + c) * width + col,
                       CodeRun<T>{tokens.data() + at, run_scores.data() + at, static_cast<int>(count)},
                       strip.data(), w, static_cast<int>(w), dots.data() + at);
        }
      }
    }
    for (Eigen::Index t = 0; t < mine.size(); ++t)
      for (Eigen::Index j = 0; j < n; ++j) {
        const auto at = static_cast<std::size_t>(t * n + j);
        dscores(tokens[at], mine.begin + t) = dots[at];
      }
  });
}

// The backward of every token (Eq. 12) on the per-token schedule: grad [K * buckets, width]
// (row-major) += the scatter-add through the path's `scatter` kernel, with threads owning column
// ranges (rows picked by several tokens never race), and the row dots through `dot`, with threads
// owning tokens.
template <class T, class Dy, class Kernels>
void backward_per_token(const Context& ctx, const T* table, T* grad, const CodeMatrix& codes,
                        const RowMatrix<T>& scores, int buckets, const Dy& dy, RowMatrix<T>& dscores,
                        const Kernels& kernels) {
  const Eigen::Index n = codes.rows(), width = dy.cols();
  const int chunks = static_cast<int>(codes.cols());
  const double work = static_cast<double>(n) * chunks * width;
  const int col_tasks = task_count(work, width / column_align<T>(), ctx.num_threads());
  ctx.parallel_for(col_tasks, [&](int task) {
    const Range cols = split_range(width, col_tasks, task, column_align<T>());
    for (Eigen::Index i = 0; i < n; ++i)
      kernels.scatter(grad + cols.begin, RowSelection{codes.row(i).data(), chunks, buckets, width},
                      scores.row(i).data(), dy.row(i).data() + cols.begin, static_cast<int>(cols.size()));
  });
  const int row_tasks = task_count(work, n, ctx.num_threads());
  ctx.parallel_for(row_tasks, [&](int task) {
    const Range rows = split_range(n, row_tasks, task);
    for (Eigen::Index i = rows.begin; i < rows.end; ++i)
      kernels.dot(table, RowSelection{codes.row(i).data(), chunks, buckets, width}, dy.row(i).data(),
                  static_cast<int>(width), dscores.row(i).data());
  });
}

// The backward of every token (Eq. 12): grad [K * buckets, width] (row-major) += the scatter-add,
// and the row dots returned as dscores [N, K], on choose_backward_schedule's schedule.
template <class T, class Dy, class Kernels>
RowMatrix<T> backward_tokens(const Context& ctx, const T* table, T* grad, const CodeMatrix& codes,
                             const RowMatrix<T>& scores, int buckets, const Dy& dy, const Kernels& kernels) {
  RowMatrix<T> dscores(codes.rows(), codes.cols());
  if (choose_backward_schedule(codes.rows(), buckets) == Schedule::by_code)
    backward_by_code(ctx, table, grad, codes, scores, buckets, dy, dscores, kernels.run_backward);
  else
    backward_per_token(ctx, table, grad, codes, scores, buckets, dy, dscores, kernels);
  return dscores;
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
