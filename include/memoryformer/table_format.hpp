// How hash table values are encoded: the table types and layouts, and the one definition of each
// rounding, shared by TableStore (tables in memory) and io/model_file.hpp (tables in files), so
// that a converted file loads to exactly the values a compressed layer computes with.
//  - bf16: each value rounded to bfloat16 (8 significant bits, relative error <= 2^-8);
//  - int8: each row r scaled symmetrically, q = round(v / scale_r), scale_r = max|row r| / 127, so
//    |v - q scale_r| <= scale_r / 2.
#pragma once

#include "config.hpp"
#include "platform/float16.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace memoryformer {
inline namespace v0 {

// How tables are stored. The values are the benchmarks' `table` argument.
enum class TableType { fp32 = 0, bf16 = 1, int8 = 2 };

template <>
struct EnumNames<TableType> {
  static constexpr EnumName<TableType> table[] = {
      {TableType::fp32, "fp32"}, {TableType::bf16, "bf16"}, {TableType::int8, "int8"}};
};

// How a compressed copy lays its values out in memory (detail/table_tiles.hpp). `rows`, the
// default, keeps each table row contiguous: batch-1 decoding reads every selected row in one piece.
// `tiles` stores column tiles of 128: a forward over a few hundred to a few thousand tokens then
// reads each table once, contiguously (docs/performance.md has the measured trade).
enum class TableLayout { rows = 0, tiles = 1 };

template <>
struct EnumNames<TableLayout> {
  static constexpr EnumName<TableLayout> table[] = {{TableLayout::rows, "rows"},
                                                    {TableLayout::tiles, "tiles"}};
};

// Bytes per table value.
inline int table_value_bytes(TableType type) {
  switch (type) {
    case TableType::bf16:
      return 2;
    case TableType::int8:
      return 1;
    case TableType::fp32:
      break;
  }
  return 4;
}

// Per-row symmetric int8 of a row-major [rows, cols] table: q [rows * cols] and scales [rows].
// An all-zero row keeps scale 0 and quantises to zeros.
inline void quantise_int8_rows(const float* table, Eigen::Index rows, Eigen::Index cols, std::int8_t* q,
                               float* scales) {
  const Eigen::Map<const RowMatrix<float>> t(table, rows, cols);
  for (Eigen::Index r = 0; r < rows; ++r) {
    const float scale = cols > 0 ? t.row(r).cwiseAbs().maxCoeff() / 127.0f : 0.0f;
    scales[r] = scale;
    for (Eigen::Index c = 0; c < cols; ++c) {
      const float v = scale > 0 ? std::nearbyint(t(r, c) / scale) : 0.0f;
      q[r * cols + c] = static_cast<std::int8_t>(std::clamp(v, -127.0f, 127.0f));
    }
  }
}

// The value an int8 entry stands for.
inline float dequantise_int8(std::int8_t q, float scale) { return scale * static_cast<float>(q); }

}  // namespace v0
}  // namespace memoryformer
