// A small deterministic generator for weight initialisation. The standard library's
// normal_distribution differs between libstdc++ and libc++, so the same seed would give different
// weights with gcc and clang; SplitMix64 plus the ziggurat below gives the same numbers everywhere.
//
// Weights are drawn row by row: row r of a tensor comes from its own generator, seeded by
// (seed, r), so any set of rows can be drawn alone, on any thread, in any order, and the values are
// the same. That is what lets initialisation run on the thread pool and `memoryformer init` stream
// a model to disk a few rows at a time (fill_normal_rows).
#pragma once

#include "../config.hpp"
#include "../context.hpp"
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

  // Standard normal by Marsaglia and Tsang's ziggurat (2000): the density is cut into 128 layers of
  // equal area; a draw picks a layer and a point in it, and is accepted at once when the point lies
  // in the part of the layer wholly under the curve (about 99% of draws: a multiply and a compare).
  // Otherwise it tests the wedge against exp(), or draws from the tail beyond r by Marsaglia's
  // exponential method. Comparisons are written without a*b+c, so fused multiply-adds cannot
  // change which draws are accepted.
  double normal() {
    const Ziggurat& z = ziggurat();
    while (true) {
      const std::uint64_t bits = next_u64();
      const int layer = static_cast<int>(bits & (Ziggurat::kLayers - 1));
      // The sign as a factor: a branch on a random bit would be mispredicted half the time.
      const double sign = 1.0 - static_cast<double>((bits >> 6) & 2);
      const double x = (static_cast<double>(bits >> 11) + 0.5) * z.scaled_x[layer];
      if (x < z.x[layer + 1]) return sign * x;  // under the curve
      if (layer == 0) {                         // the tail beyond r = x[1]
        while (true) {
          const double a = -std::log(uniform()) / z.x[1], b = -std::log(uniform());
          if (b + b > a * a) return sign * (z.x[1] + a);
        }
      }
      const double height = uniform() * (z.f[layer + 1] - z.f[layer]);  // above f(x[layer])
      if (height < std::exp(-0.5 * x * x) - z.f[layer]) return sign * x;
    }
  }

 private:
  // Layer i spans densities f(x[i]) to f(x[i + 1]) over [0, x[i]), f(x) = exp(-x^2 / 2), each of
  // area v; layer 0 is the base strip with the tail beyond r, x[0] = v / f(r). r and v are those
  // of the paper for 128 layers.
  struct Ziggurat {
    static constexpr int kLayers = 128;
    double x[kLayers + 1], f[kLayers + 1];
    double scaled_x[kLayers];  // x[i] 2^-53: a point of layer i from 53 random bits
    Ziggurat() {
      const double r = 3.442619855899, v = 9.91256303526217e-3;
      x[0] = v / std::exp(-0.5 * r * r);
      x[1] = r;
      for (int i = 1; i < kLayers; ++i) {
        const double y = v / x[i] + std::exp(-0.5 * x[i] * x[i]);
        x[i + 1] = y < 1 ? std::sqrt(-2 * std::log(y)) : 0.0;
      }
      x[kLayers] = 0;
      for (int i = 0; i <= kLayers; ++i) f[i] = std::exp(-0.5 * x[i] * x[i]);
      for (int i = 0; i < kLayers; ++i) scaled_x[i] = x[i] * 0x1.0p-53;
    }
  };
  static const Ziggurat& ziggurat() {
    static const Ziggurat z;
    return z;
  }

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
    for (Eigen::Index c = 0; c < cols; ++c) row[c] = static_cast<Scalar>(scale * rng.normal());
  }
}

// The same cut over the context's threads: bit-identical for any thread count.
template <class Scalar>
void fill_normal_rows(const Context& ctx, std::uint64_t seed, double scale, Eigen::Index first_row,
                      Eigen::Index rows, Eigen::Index cols, Scalar* out) {
  // A normal costs about as much as 4 multiply-adds (a 64-bit draw, a lookup, a compare).
  const int tasks =
      task_count(static_cast<double>(rows) * static_cast<double>(cols) * 4, rows, ctx.num_threads());
  ctx.parallel_for(tasks, [&](int task) {
    const Range part = split_range(rows, tasks, task);
    draw_normal_rows(seed, scale, first_row + part.begin, part.size(), cols, out + part.begin * cols);
  });
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
