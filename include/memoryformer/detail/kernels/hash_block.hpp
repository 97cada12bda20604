// The SIMD hash kernels' common part (Eq. 9-10). A kernel works through a row kHashBlockChunks
// chunks at a time: its vector code reads the block's values contiguously and fills a HashBlock
// (1 + exp(-2|z|/t), |z| and the sign bit of every value), finish() forms each chunk's code and
// score product from it, and the kernel divides. Reading contiguously, rather than gathering
// element j of 16 chunks, is what keeps the hash fast when rows stream from memory: a gather waits
// on every line it misses (BM_MemoryLayer at N = 4096; docs/performance.md, "Hashing").
#pragma once

#include "../../config.hpp"
#include "../../hash_shape.hpp"

#include <array>
#include <cstdint>
#include <cstring>

namespace memoryformer {
inline namespace v0 {
namespace detail {

inline constexpr int kHashBlockChunks = 16;

// The tau low bits of `bits` (element 0 in bit 0, as vector compares give them) as a code with
// element 0 as its most significant bit (docs/method.md §1 step 2).
inline std::int32_t msb_first(std::uint32_t bits, int tau) {
  static constexpr std::array<std::uint8_t, 256> kReversed = [] {
    std::array<std::uint8_t, 256> reversed{};
    for (int byte = 0; byte < 256; ++byte)
      for (int bit = 0; bit < 8; ++bit)
        if ((byte >> bit) & 1) reversed[byte] = static_cast<std::uint8_t>(reversed[byte] | 1 << (7 - bit));
    return reversed;
  }();
  const std::uint32_t reversed16 = std::uint32_t{kReversed[bits & 0xFF]} << 8 | kReversed[(bits >> 8) & 0xFF];
  return static_cast<std::int32_t>(reversed16 >> (16 - tau));
}

struct HashBlock {
  alignas(64) float factor[kHashBlockChunks * kMaxTau];     // 1 + exp(-2|z_i|/t)
  alignas(64) float magnitude[kHashBlockChunks * kMaxTau];  // |z_i|, for Score::l1
  alignas(64) float product[kHashBlockChunks];              // out: prod_j factor, per chunk
  alignas(64) float l1[kHashBlockChunks];                   // out: ||z||_1 per chunk, for Score::l1
  // Bit i % 8 of byte i / 8 is z_i >= 0. Four spare bytes: finish() reads four at a time.
  std::uint8_t sign_bits[kHashBlockChunks * kMaxTau / 8 + 4] = {};

  // codes[k], product[k] and (Score::l1) l1[k] for the block's n chunks of tau values.
  void finish(int n, int tau, Score score, std::int32_t* codes) {
    for (int k = 0; k < n; ++k) {
      const int first = k * tau;
      std::uint32_t window;
      std::memcpy(&window, sign_bits + first / 8, sizeof window);  // x86 only: little-endian
      codes[k] = msb_first(window >> (first % 8), tau);
      float p = 1;
      for (int j = 0; j < tau; ++j) p *= factor[first + j];
      product[k] = p;
      if (score == Score::l1) {
        float sum = 0;
        for (int j = 0; j < tau; ++j) sum += magnitude[first + j];
        l1[k] = sum;
      }
    }
  }
};

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
