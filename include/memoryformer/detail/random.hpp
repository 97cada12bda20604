// A small deterministic generator for weight initialisation. The standard library's
// normal_distribution differs between libstdc++ and libc++, so the same seed would give different
// weights with gcc and clang; SplitMix64 plus Box-Muller gives the same numbers everywhere.
#pragma once

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

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
