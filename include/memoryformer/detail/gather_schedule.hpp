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
// - by code (the backward's scatter-add and row dots below the panels): table by table, each
//   table's tokens in code order, so that each row is read from DRAM once per call and in address
//   order, while dy's rows come from L2 or L3.
// Within a panel, tokens are visited once per kPanelColumns piece (panel_tokens).
#pragma once

#include "../config.hpp"
#include "../context.hpp"
#include "aligned_buffer.hpp"
#include "kernels/row_selection.hpp"
#include "partition.hpp"
#include "table_tiles.hpp"

#include <algorithm>
#include <cstddef>
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
// The backward's scatter and row dots take the same threshold (BM_MemoryLayerBackward).
inline constexpr double kMinTokensPerRowForPanels = 4.0;

// Whole-tile panels of tiled tables (table_tiles.hpp) from this many tokens per row on, up to
// kMinTokensPerRowForPanels: the copy is one contiguous read at DRAM streaming speed. Chosen with
// BM_MemoryLayer on 128-column tiles (docs/performance.md, "Tiled tables"). From 4 tokens per
// row, 64-column panels cut from the tiles hold twice the tables and are as fast or faster.
inline constexpr double kMinTokensPerRowForTiledPanels = 0.5;

// The backward's scatter-add and row dots go by code (for_each_token_by_code) from this many tokens
// per row on, until panels pay; below it by code was even or worse (BM_MemoryLayerBackward;
// docs/performance.md, "Backward").
inline constexpr double kMinTokensPerRowByCode = 0.5;

// Chunk tables per panel: as many as fit in half of L2 (the other half holds the y being written).
template <class T>
int panel_group(int chunks, int buckets, Eigen::Index panel_columns, std::size_t l2_bytes) {
  const std::size_t table_bytes = static_cast<std::size_t>(buckets) * panel_columns * sizeof(T);
  const std::size_t fit = l2_bytes / 2 / table_bytes;
  return static_cast<int>(std::clamp<std::size_t>(fit, 1, static_cast<std::size_t>(chunks)));
}

// The schedules (top of this file): per token; panels of kPanelColumns, sliced out of the table's
// rows or tiles; panels of whole tiles, copied in one contiguous read; by code (backward only).
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

// The backward's schedule for `tokens` tokens on a row-major table: panels where the forward takes
// them, else by code from kMinTokensPerRowByCode tokens per row, else per token.
template <class T>
Schedule choose_backward_schedule(Eigen::Index tokens, int buckets, const TableTiles<T>& tiles) {
  const Schedule forward = choose_schedule(tokens, buckets, tiles);
  if (forward == Schedule::per_token && static_cast<double>(tokens) / buckets >= kMinTokensPerRowByCode)
    return Schedule::by_code;
  return forward;
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
// chunk tables from `first` and the slice's w columns: one contiguous copy for a tile.
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

// The inverse of pack_panel.
template <class T>
void unpack_panel(const T* panel, int first, int group, int buckets, const PanelSlice<T>& slice) {
  const std::ptrdiff_t rows = static_cast<std::ptrdiff_t>(group) * buckets, w = slice.width;
  T* dest = slice.source + static_cast<std::ptrdiff_t>(first) * buckets * slice.ld;
  for (std::ptrdiff_t r = 0; r < rows; ++r) std::copy(panel + r * w, panel + r * w + w, dest + r * slice.ld);
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

// Tokens per pass over a slice's panels. A pass keeps its tokens' columns of y (or dy) in a
// contiguous strip, [tokens, slice width], that stays in L2 across the slice's groups: read in
// place, a slice of row-major y is 256 bytes every out_dim values, which maps onto few cache sets
// (as the tables do, above) and is evicted between groups. Longer inputs take several passes, each
// packing the panels again, so that the strip is at most 1 MiB of float.
inline constexpr Eigen::Index kStripTokens = 4096;

// The gather's and the scatter's panel loop over `matrix` (y or dy, [N, width]): for every slice of
// `columns` columns of every tile and every pass of at most kStripTokens tokens, the pass's tokens'
// columns of the matrix are copied into a contiguous strip, body(panel, strip, slice, tokens, first,
// g) runs for every group of g chunk tables from `first`, and the strip is copied back if the
// matrix is writable. Threads own slices, each with its own panel and strip buffers, so each packs
// its own panels and writes its own columns.
template <class T, class M, class Body>
void for_each_panel(const Context& ctx, const TableTiles<T>& tiles, Eigen::Index columns, int chunks,
                    int buckets, M& matrix, const Body& body) {
  using S = typename std::remove_const_t<M>::Scalar;
  const PanelGrid<T> grid(tiles, columns, chunks,
                          panel_group<T>(chunks, buckets, columns, ctx.l2_cache_bytes()));
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
        if constexpr (!std::is_const<M>::value) in_matrix = strip;
      }
    }
  });
}

// The row dots' panel loop: the same panels, but threads own groups of chunk tables and visit
// their slices in order, so that a sum over slices per (token, chunk) is added up in the same order
// on any number of threads. Groups are made small enough that every thread has one.
template <class T, class Body>
void for_each_panel_by_group(const Context& ctx, const TableTiles<T>& tiles, Eigen::Index columns, int chunks,
                             int buckets, const Body& body) {
  const int per_thread = (chunks + ctx.num_threads() - 1) / ctx.num_threads();
  const PanelGrid<T> grid(
      tiles, columns, chunks,
      std::min(panel_group<T>(chunks, buckets, columns, ctx.l2_cache_bytes()), per_thread));
  const int tasks = std::min(grid.groups(), ctx.num_threads());
  ctx.parallel_for(tasks, [&](int task) {
    AlignedBuffer<std::remove_const_t<T>> panel(grid.panel_values(buckets));
    const Range mine = split_range(grid.groups(), tasks, task);
    for (Eigen::Index g = mine.begin; g < mine.end; ++g)
      for (Eigen::Index j = 0; j < grid.slices(); ++j) {
        const PanelSlice<T> piece = grid.slice(j);
        if (piece.width <= 0) continue;
        body(panel.data(), piece, grid.first(static_cast<int>(g)), grid.group_size(static_cast<int>(g)));
      }
  });
}

// Panel columns of a panel schedule: whole tiles, or kPanelColumns.
template <class T>
Eigen::Index panel_columns(Schedule schedule, const TableTiles<T>& tiles) {
  return schedule == Schedule::tile_panels ? tiles.tile_columns : kPanelColumns;
}

// body(i, c, selection, w) for every token i of `tokens` and every kPanelColumns piece c
// (w <= kPanelColumns columns) of a packed panel of `width` columns holding `group` chunk tables
// from `first` (the pieces the panel kernels hold in registers). Tokens are visited once per piece,
// so that the part of y, dy or the score sums they touch is a 64-column strip however wide the panel.
template <class Body>
void panel_tokens(int width, int first, int group, int buckets, const CodeMatrix& codes, const Range& tokens,
                  const Body& body) {
  for (int c = 0; c < width; c += kPanelColumns)
    for (Eigen::Index i = tokens.begin; i < tokens.end; ++i)
      body(i, c, RowSelection{codes.row(i).data() + first, group, buckets, width},
           std::min(kPanelColumns, width - c));
}

// The forward gather on the panel schedule: each panel packed from the table, every token's rows
// of it summed into the token's row of the strip of y.
template <class T, class Acc, class Kernel>
void gather_panels(const Context& ctx, const TableTiles<const T>& tiles, Eigen::Index columns,
                   const CodeMatrix& codes, const RowMatrix<Acc>& scores, int buckets, RowMatrix<Acc>& y,
                   const Kernel& kernel) {
  for_each_panel(ctx, tiles, columns, static_cast<int>(codes.cols()), buckets, y,
                 [&](T* panel, Eigen::Map<RowMatrix<Acc>>& strip, const PanelSlice<const T>& slice,
                     const Range& tokens, int first, int g) {
                   pack_panel(slice, first, g, buckets, panel);
                   panel_tokens(slice.width, first, g, buckets, codes, tokens,
                                [&](Eigen::Index i, int c, const RowSelection& sel, int w) {
                                  kernel(panel + c, sel, scores.row(i).data() + first,
                                         strip.row(i - tokens.begin).data() + c, w);
                                });
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
// table, through the active path's kernels(table, selection, scores, y, width): `gather` per
// token, `panel` on packed panels, on `schedule`. T is the stored type and Acc the accumulated one.
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

// The backward scatter-add (Eq. 12), grad[row(k, codes(i, k))] += scores(i, k) * dy(i), on the
// panel schedule: per slice and table group, the gradient panel is packed, every token's rows are
// added into it (`scatter`, the path's kernel, on panel rows), and it is copied back. Each value
// receives its additions in token order, as in the per-token loop: the results are identical, and
// each gradient row is read and written once per call rather than once per token.
template <class T, class Dy, class Kernel>
void scatter_panels(const Context& ctx, const TableTiles<T>& grad, const CodeMatrix& codes,
                    const RowMatrix<T>& scores, int buckets, const Dy& dy, const Kernel& scatter) {
  for_each_panel(ctx, grad, kPanelColumns, static_cast<int>(codes.cols()), buckets, dy,
                 [&](T* panel, Eigen::Map<RowMatrix<T>>& strip, const PanelSlice<T>& slice,
                     const Range& tokens, int first, int g) {
                   pack_panel(slice, first, g, buckets, panel);
                   panel_tokens(slice.width, first, g, buckets, codes, tokens,
                                [&](Eigen::Index i, int c, const RowSelection& sel, int w) {
                                  scatter(panel + c, sel, scores.row(i).data() + first,
                                          strip.row(i - tokens.begin).data() + c, w);
                                });
                   unpack_panel(panel, first, g, buckets, slice);
                 });
}

// Score gradients of 16 chunk tables fill a 64-byte line of float (two of double).
inline constexpr Eigen::Index kTablesPerLine = 16;

// order = the tokens in order of their code in chunk table k, in token order within a code (a
// counting sort; `next` is its scratch: where each code's next token goes).
inline void tokens_by_code(const CodeMatrix& codes, int k, int buckets, std::vector<Eigen::Index>& order,
                           std::vector<Eigen::Index>& next) {
  const Eigen::Index n = codes.rows();
  next.assign(static_cast<std::size_t>(buckets) + 1, 0);
  for (Eigen::Index i = 0; i < n; ++i) ++next[static_cast<std::size_t>(codes(i, k)) + 1];
  for (std::size_t r = 0; r < static_cast<std::size_t>(buckets); ++r) next[r + 1] += next[r];
  order.resize(static_cast<std::size_t>(n));
  for (Eigen::Index i = 0; i < n; ++i) order[static_cast<std::size_t>(next[codes(i, k)]++)] = i;
}

// The backward's by-code schedule: body(rows, k, i, selection) for every chunk table k and token i,
// where rows is table k's first row and the selection picks row codes(i, k) alone. Tables are visited
// one by one, each one's tokens in code order (tokens_by_code): a row picked by several tokens is
// read from DRAM once, and the table is walked in address order. The next tokens' table rows and
// dy rows are requested kPrefetchBytes ahead. Threads own ranges of tables, cut on kTablesPerLine
// boundaries where there are enough tables, so that the score gradients they write ([N, K]
// row-major) do not share cache lines.
template <class T, class Dy, class Body>
void for_each_token_by_code(const Context& ctx, T* table, const CodeMatrix& codes, int buckets, const Dy& dy,
                            const Body& body) {
  const Eigen::Index width = dy.cols();
  const int chunks = static_cast<int>(codes.cols());
  const std::size_t row_bytes = sizeof(T) * static_cast<std::size_t>(width);
  const std::size_t ahead =
      std::max<std::size_t>(1, kPrefetchBytes / std::max<std::size_t>(1, 2 * row_bytes));
  const Eigen::Index align = chunks >= kTablesPerLine * ctx.num_threads() ? kTablesPerLine : 1;
  const int tasks = task_count(static_cast<double>(codes.rows()) * chunks * width,
                               (chunks + align - 1) / align, ctx.num_threads());
  ctx.parallel_for(tasks, [&](int task) {
    const Range tables = split_range(chunks, tasks, task, align);
    std::vector<Eigen::Index> order, next_of_code;
    for (Eigen::Index k = tables.begin; k < tables.end; ++k) {
      tokens_by_code(codes, static_cast<int>(k), buckets, order, next_of_code);
      T* rows = table + k * buckets * width;
      for (std::size_t j = 0; j < order.size(); ++j) {
        if (j + ahead < order.size()) {
          const Eigen::Index next = order[j + ahead];
          prefetch_row(rows + codes(next, k) * width, row_bytes);
          prefetch_row(dy.row(next).data(), row_bytes);
        }
        const Eigen::Index i = order[j];
        body(rows, k, i, RowSelection{&codes(i, k), 1, buckets, width});
      }
    }
  });
}

// grad [K * buckets, width] (row-major) += the scatter-add (Eq. 12) of every token, through the
// active path's `scatter` kernel, on choose_backward_schedule's schedule: panels; by code, with
// threads owning tables; or per token, with threads owning column ranges (rows picked by several
// tokens never race). All add each value's terms in token order: the results are identical.
template <class T, class Dy, class Kernel>
void scatter_tokens(const Context& ctx, T* grad, const CodeMatrix& codes, const RowMatrix<T>& scores,
                    int buckets, const Dy& dy, const Kernel& scatter) {
  const Eigen::Index n = codes.rows(), width = dy.cols();
  const int chunks = static_cast<int>(codes.cols());
  const auto tiles = TableTiles<T>::row_major(grad, static_cast<Eigen::Index>(chunks) * buckets, width);
  const Schedule schedule = choose_backward_schedule(n, buckets, tiles);
  if (schedule == Schedule::panels) {
    scatter_panels(ctx, tiles, codes, scores, buckets, dy, scatter);
    return;
  }
  if (schedule == Schedule::by_code) {
    for_each_token_by_code(ctx, grad, codes, buckets, dy,
                           [&](T* rows, Eigen::Index k, Eigen::Index i, const RowSelection& sel) {
                             scatter(rows, sel, &scores(i, k), dy.row(i).data(), static_cast<int>(width));
                           });
    return;
  }
  const double work = static_cast<double>(n) * chunks * width;
  const int col_tasks = task_count(work, width / column_align<T>(), ctx.num_threads());
  ctx.parallel_for(col_tasks, [&](int task) {
    const Range cols = split_range(width, col_tasks, task, column_align<T>());
    for (Eigen::Index i = 0; i < n; ++i) {
      const RowSelection sel{codes.row(i).data(), chunks, buckets, width};
      scatter(grad + cols.begin, sel, scores.row(i).data(), dy.row(i).data() + cols.begin,
              static_cast<int>(cols.size()));
    }
  });
}

// The backward row dots (Eq. 12), dscores(i, k) = <dy(i), row(k, codes(i, k))> of the row-major
// [K * buckets, width] table, through the active path's kernels. From 4 tokens per row on they run
// on panels (`dot_panel`): each token's dots with the packed rows of one slice, added up over the
// slices in column order, so the table is read from DRAM once per call rather than once per token.
// Below that, `dot` straight from the table, by code from kMinTokensPerRowByCode tokens per row (a
// row shared by tokens read once), else per token.
template <class T, class Dy, class Kernels>
RowMatrix<T> dot_tokens(const Context& ctx, const T* table, const CodeMatrix& codes, int buckets,
                        const Dy& dy, const Kernels& kernels) {
  const Eigen::Index n = codes.rows(), width = dy.cols();
  const int chunks = static_cast<int>(codes.cols());
  const auto tiles =
      TableTiles<const T>::row_major(table, static_cast<Eigen::Index>(chunks) * buckets, width);
  RowMatrix<T> dscores(n, chunks);
  const Schedule schedule = choose_backward_schedule(n, buckets, tiles);
  if (schedule == Schedule::panels) {
    dscores.setZero();
    for_each_panel_by_group(
        ctx, tiles, kPanelColumns, chunks, buckets,
        [&](T* panel, const PanelSlice<const T>& slice, int first, int g) {
          pack_panel(slice, first, g, buckets, panel);
          RowMatrix<T> sums(1, g);
          panel_tokens(slice.width, first, g, buckets, codes, Range{0, codes.rows()},
                       [&](Eigen::Index i, int c, const RowSelection& sel, int w) {
                         kernels.dot_panel(panel + c, sel, dy.row(i).data() + slice.col + c, w, sums.data());
                         dscores.row(i).segment(first, g) += sums;
                       });
        });
    return dscores;
  }
  if (schedule == Schedule::by_code) {
    for_each_token_by_code(ctx, table, codes, buckets, dy,
                           [&](const T* rows, Eigen::Index k, Eigen::Index i, const RowSelection& sel) {
                             kernels.dot(rows, sel, dy.row(i).data(), static_cast<int>(width),
                                         &dscores(i, k));
                           });
    return dscores;
  }
  const int row_tasks = task_count(static_cast<double>(n) * chunks * width, n, ctx.num_threads());
  ctx.parallel_for(row_tasks, [&](int task) {
    const Range rows = split_range(n, row_tasks, task);
    for (Eigen::Index i = rows.begin; i < rows.end; ++i)
      kernels.dot(table, RowSelection{codes.row(i).data(), chunks, buckets, width}, dy.row(i).data(),
                  static_cast<int>(width), dscores.row(i).data());
  });
  return dscores;
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
