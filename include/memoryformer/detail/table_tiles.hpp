// How a [rows, width] hash table's values lie in memory, as the gather and scatter schedules
// (gather_schedule.hpp) see them: as column tiles. Tile t holds columns [t * tile_columns,
// t * tile_columns + w_t) of every row, the rows one after another (row stride w_t, the tile's
// width). Row-major storage is the case of a single tile as wide as the table.
//
// A layer's trained tables are row-major. compress(type, TableLayout::tiles) stores them in tiles
// of kTileColumns, so that the panel schedule's copy of a group of tables is one contiguous
// read: packing a 64-column slice out of row-major rows reads 64-256 bytes a row apart, which is
// no faster from DRAM than gathering rows per token. Tiles much narrower cost the batch-1 path,
// which then reads every row in small pieces. Both trades: BM_MemoryLayer and
// BM_Block{Forward,Decode}Tiled in docs/performance.md ("Tiled tables").
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstddef>

namespace memoryformer {
inline namespace v0 {
namespace detail {

// Columns per tile of tables stored in TableLayout::tiles.
inline constexpr Eigen::Index kTileColumns = 128;

// A view of a table stored as column tiles; T may be const.
template <class T>
struct TableTiles {
  T* data;
  Eigen::Index rows, width, tile_columns;

  static TableTiles row_major(T* data, Eigen::Index rows, Eigen::Index width) {
    return {data, rows, width, std::max<Eigen::Index>(width, 1)};
  }

  Eigen::Index tiles() const { return (width + tile_columns - 1) / tile_columns; }
  bool is_row_major() const { return tile_columns >= width; }
  Eigen::Index tile_begin(Eigen::Index t) const { return t * tile_columns; }
  Eigen::Index tile_width(Eigen::Index t) const { return std::min(tile_columns, width - tile_begin(t)); }
  // Tile t's value at row 0, column tile_begin(t); its rows are tile_width(t) values apart.
  T* tile(Eigen::Index t) const { return data + t * rows * tile_columns; }
  // Where value (r, c) is stored, relative to data.
  std::ptrdiff_t index(Eigen::Index r, Eigen::Index c) const {
    const Eigen::Index t = c / tile_columns;
    return static_cast<std::ptrdiff_t>(t * rows * tile_columns + r * tile_width(t) + (c - tile_begin(t)));
  }
};

// body(tile_piece, ld, c, w) for each piece of columns [begin, end) that lies within one tile:
// tile_piece points at column c of row 0, ld is the tile's row stride, w the piece's width.
template <class T, class Body>
void for_each_tile_piece(const TableTiles<T>& tiles, Eigen::Index begin, Eigen::Index end, const Body& body) {
  for (Eigen::Index t = begin / tiles.tile_columns; begin < end; ++t) {
    const Eigen::Index piece_end = std::min(end, tiles.tile_begin(t) + tiles.tile_width(t));
    body(tiles.tile(t) + (begin - tiles.tile_begin(t)), static_cast<std::ptrdiff_t>(tiles.tile_width(t)),
         begin, static_cast<int>(piece_end - begin));
    begin = piece_end;
  }
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
