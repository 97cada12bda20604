// HashShape: the geometry of a Memory Layer's hash (docs/method.md §1), and the one place its limits
// are written. d inputs are cut into K = d / tau chunks of tau values; each chunk's sign bits pick
// one of 2^tau buckets, i.e. one row of that chunk's table. SignHash, MemoryLayer, ModelConfig and
// the counts of flops.hpp all check their shapes here, so they accept and refuse the same ones.
#pragma once

#include "config.hpp"

#include <cstdint>
#include <string>

namespace memoryformer {
inline namespace v0 {

// Bits per chunk a hash takes at most. Codes are int32 and a chunk's table has 2^tau rows, so
// 16 bits already means 65536 rows of h values per chunk.
inline constexpr int kMaxTau = 16;

struct HashShape {
  std::int64_t d = 0;        // input width, a multiple of tau
  int tau = 0;               // bits per chunk, 1..kMaxTau
  std::int64_t chunks = 0;   // K = d / tau: one table each
  std::int64_t buckets = 0;  // 2^tau rows per table

  // The shape of d inputs hashed tau bits at a time. Throws ArgumentError naming `where` and the
  // argument (`d_name` for d: "in_dim", "d_model", ...) unless tau is in 1..kMaxTau and d is a
  // positive multiple of tau.
  static constexpr HashShape of(const char* where, const char* d_name, std::int64_t d, int tau) {
    check_bits(where, "tau", tau);
    if (d < 1) detail::fail(where, d_name, d, "a positive integer");
    if (d % tau != 0) detail::fail(where, d_name, d, "a multiple of tau = " + std::to_string(tau));
    return HashShape{d, tau, d / tau, std::int64_t{1} << tau};
  }

  // Rows of all K tables stacked: K * 2^tau.
  constexpr std::int64_t table_rows() const { return chunks * buckets; }

  // Throws unless `bits` (a tau, or the bits of any table's chunks) is in 1..kMaxTau.
  static constexpr void check_bits(const char* where, const char* name, int bits) {
    if (bits < 1 || bits > kMaxTau)
      detail::fail(where, name, bits, "an integer in 1.." + std::to_string(kMaxTau));
  }

  // A Memory Block's down layer hashes tau + expand_bits bits per chunk (docs/method.md §2), so
  // expand_bits is >= 0 and tau + expand_bits stays within kMaxTau.
  static constexpr void check_expand_bits(const char* where, int tau, int expand_bits) {
    if (expand_bits < 0 || tau + expand_bits > kMaxTau)
      detail::fail(where, "expand_bits", expand_bits,
                   "an integer >= 0 with tau + expand_bits <= " + std::to_string(kMaxTau) +
                       " (tau = " + std::to_string(tau) + ")");
  }
};

}  // namespace v0
}  // namespace memoryformer
