// A small deterministic generator for weight initialisation. The standard library's
// normal_distribution differs between libstdc++ and libc++, so the same seed would give different
// weights with gcc and clang; SplitMix64 plus Box-Muller gives the same numbers everywhere.
//
// Weights are drawn row by row: row r of a tensor comes from its own generator, seeded by
// (seed, r), so any set of rows can be drawn alone, on any thread, in any order, and the values are
// the same. That is what lets initialisation run on the thread pool and `memoryformer init` stream
// a model to disk a few rows at a time (fill_normal_rows).
#pragma once

#include "../config.hpp"
#include "../threading.hpp"
#include "partition.hpp"

#include <cmath>
#include <cstdint>
#include <string>

namespace memoryformer {
inline namespace v0 {
namespace detail {

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}

  std::uint64_t next_u64() {  // SplitMix64 (Steele, Lea, Flood 2014)
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // Uniform in (0, 1): 53 random bits, offset by half a step so that log() never sees 0.
  double uniform() { return (static_cast<double>(next_u64() >> 11) + 0.5) * 0x1.0p-53; }

  // Standard normal by Box-Muller (one value per call; simplicity over speed).
  double normal() {
    const double radius = std::sqrt(-2.0 * std::log(uniform()));
    return radius * std::cos(6.283185307179586 * uniform());
  }

  // Two independent standard normals from one Box-Muller draw: half the logarithms of normal().
  void normal_pair(double& a, double& b) {
    const double radius = std::sqrt(-2.0 * std::log(uniform()));
    const double angle = 6.283185307179586 * uniform();
    a = radius * std::cos(angle);
    b = radius * std::sin(angle);
  }

 private:
  std::uint64_t state_;
};

// The seed of one named module of a model ("blocks.3.attn.q"): a model's weights are a pure function
// of (seed, name), so adding a layer never changes the others. FNV-1a over the name, then the
// SplitMix64 finaliser to spread it.
inline std::uint64_t derive_seed(std::uint64_t seed, const std::string& name) {
  std::uint64_t h = 0xcbf29ce484222325ULL ^ seed;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ULL;
  return Rng(h).next_u64();
}

// The seed of row `row` of a tensor drawn from `seed`.
inline std::uint64_t row_seed(std::uint64_t seed, Eigen::Index row) {
  return Rng(seed ^ (0x9e3779b97f4a7c15ULL * static_cast<std::uint64_t>(row + 1))).next_u64();
}

// Rows [first_row, first_row + rows) of a [*, cols] tensor of scale * N(0, 1) values, row r drawn
// from Rng(row_seed(seed, r)), into out (row-major, rows * cols values).
template <class Scalar>
void draw_normal_rows(std::uint64_t seed, double scale, Eigen::Index first_row, Eigen::Index rows,
                      Eigen::Index cols, Scalar* out) {
  for (Eigen::Index r = 0; r < rows; ++r) {
    Rng rng(row_seed(seed, first_row + r));
    Scalar* row = out + r * cols;
    for (Eigen::Index c = 0; c < cols; c += 2) {
      double a, b;
      rng.normal_pair(a, b);
      row[c] = static_cast<Scalar>(scale * a);
      if (c + 1 < cols) row[c + 1] = static_cast<Scalar>(scale * b);
    }
  }
}

// The same cut over the thread pool: bit-identical for any thread count.
template <class Scalar>
void fill_normal_rows(std::uint64_t seed, double scale, Eigen::Index first_row, Eigen::Index rows,
                      Eigen::Index cols, Scalar* out) {
  const auto pool = thread_pool();
  // A normal costs about as much as 16 multiply-adds (a logarithm per pair).
  const int tasks = task_count(static_cast<double>(rows) * static_cast<double>(cols) * 16, rows, pool->size());
  pool->parallel_for(tasks, [&](int task) {
    const Range part = split_range(rows, tasks, task);
    draw_normal_rows(seed, scale, first_row + part.begin, part.size(), cols, out + part.begin * cols);
  });
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
