// Compute and storage counts (docs/method.md §4: paper Table 1 and its table-memory figures).
// FLOPs are counted as multiply-accumulates (MACs), as the paper does. Every count is an exact
// integer (std::int64_t); a count that would overflow throws Error instead of wrapping. Arguments
// are checked as the layers check them (HashShape: tau in 1..16, dims a positive multiple of tau;
// sizes >= 0).
// The functions are constexpr: with valid constant arguments they fold at compile time.
#pragma once

#include "config.hpp"
#include "hash_shape.hpp"

#include <cstdint>
#include <limits>
#include <string>

namespace memoryformer {
inline namespace v0 {

namespace detail {

constexpr void flops_check_size(const char* where, const char* name, std::int64_t value) {
  if (value < 0) fail(where, name, value, "an integer >= 0");
}

constexpr void flops_check_positive(const char* where, const char* name, std::int64_t value) {
  if (value < 1) fail(where, name, value, "an integer >= 1");
}

// Operands are >= 0 (checked by the callers), so overflow is only possible upwards.
constexpr std::int64_t flops_mul(const char* where, std::int64_t a, std::int64_t b) {
  if (a != 0 && b > std::numeric_limits<std::int64_t>::max() / a)
    fail(where, "count", std::to_string(a) + " * " + std::to_string(b), "a result below 2^63");
  return a * b;
}

constexpr std::int64_t flops_mul(const char* where, std::int64_t a, std::int64_t b, std::int64_t c) {
  return flops_mul(where, flops_mul(where, a, b), c);
}

constexpr std::int64_t flops_add(const char* where, std::int64_t a, std::int64_t b) {
  if (b > std::numeric_limits<std::int64_t>::max() - a)
    fail(where, "count", std::to_string(a) + " + " + std::to_string(b), "a result below 2^63");
  return a + b;
}

}  // namespace detail

// ---- One layer, tokens rows in, out_dim wide --------------------------------------------------

// Fully connected y = xW, W [in_dim, out_dim]: one MAC per weight per token.
constexpr std::int64_t dense_layer_macs(std::int64_t tokens, std::int64_t in_dim, std::int64_t out_dim) {
  constexpr const char* where = "dense_layer_macs";
  detail::flops_check_size(where, "tokens", tokens);
  detail::flops_check_size(where, "in_dim", in_dim);
  detail::flops_check_size(where, "out_dim", out_dim);
  return detail::flops_mul(where, tokens, in_dim, out_dim);
}

// A Memory Layer's multiply-adds given its chunk count: tokens * chunks * out_dim. Paper Table 3's FLOPs
// column is this for one d = h = 512 layer at s = 2048 with K = floor(512 / tau) = 128 / 64 / 51
// (the chunk counts its memory column uses), rounded up to two decimals of G: 0.134 -> 0.14,
// 0.067 -> 0.07, 0.053 -> 0.06 (docs/method.md §4).
constexpr std::int64_t memory_chunk_macs(std::int64_t tokens, std::int64_t chunks, std::int64_t out_dim) {
  constexpr const char* where = "memory_chunk_macs";
  detail::flops_check_size(where, "tokens", tokens);
  detail::flops_check_size(where, "chunks", chunks);
  detail::flops_check_size(where, "out_dim", out_dim);
  return detail::flops_mul(where, tokens, chunks, out_dim);
}

// Memory Layer (docs/method.md §1): K = in_dim / tau selected rows of out_dim summed per token, i.e.
// exactly dense_layer_macs / tau. Hashing and scoring (O(in_dim) per token) are not MACs of a
// product and are left out, as in the paper.
constexpr std::int64_t memory_layer_macs(std::int64_t tokens, std::int64_t in_dim, std::int64_t out_dim,
                                         int tau) {
  const std::int64_t chunks = HashShape::of("memory_layer_macs", "in_dim", in_dim, tau).chunks;
  return memory_chunk_macs(tokens, chunks, out_dim);
}

// Values in tables [chunks, 2^bits, out_dim], given the chunk count directly. This is the form for
// shapes the paper quotes with a truncated K: its tau = 10 row for d = 512 uses K = 51 chunks
// (510 of the 512 dims), which no MemoryLayer can build since 10 does not divide 512. bits is tau,
// or tau + expand_bits for a Memory Block's down layer, within the same 1..16 as any hash.
constexpr std::int64_t memory_table_values(std::int64_t chunks, int bits, std::int64_t out_dim) {
  constexpr const char* where = "memory_table_values";
  detail::flops_check_size(where, "chunks", chunks);
  HashShape::check_bits(where, "bits", bits);
  detail::flops_check_size(where, "out_dim", out_dim);
  return detail::flops_mul(where, chunks, std::int64_t{1} << bits, out_dim);
}

constexpr std::int64_t memory_table_bytes(std::int64_t chunks, int bits, std::int64_t out_dim,
                                          std::int64_t bytes_per_value) {
  detail::flops_check_positive("memory_table_bytes", "bytes_per_value", bytes_per_value);
  return detail::flops_mul("memory_table_bytes", memory_table_values(chunks, bits, out_dim), bytes_per_value);
}

// Tables of a buildable Memory Layer: (in_dim / tau) * 2^tau * out_dim values, 2^tau / tau times
// the dense weight count. in_dim must be a multiple of tau (use memory_table_values otherwise).
constexpr std::int64_t memory_layer_table_values(std::int64_t in_dim, std::int64_t out_dim, int tau) {
  const std::int64_t chunks = HashShape::of("memory_layer_table_values", "in_dim", in_dim, tau).chunks;
  return memory_table_values(chunks, tau, out_dim);
}

constexpr std::int64_t memory_layer_table_bytes(std::int64_t in_dim, std::int64_t out_dim, int tau,
                                                std::int64_t bytes_per_value) {
  const std::int64_t chunks = HashShape::of("memory_layer_table_bytes", "in_dim", in_dim, tau).chunks;
  return memory_table_bytes(chunks, tau, out_dim, bytes_per_value);
}

// ---- One block, sequence length s, width d: the paper's convention (docs/method.md §4) --------

// QK^T and AV over the full s x s score matrix (the paper does not halve it for the causal mask).
constexpr std::int64_t attention_macs(std::int64_t s, std::int64_t d) {
  constexpr const char* where = "attention_macs";
  detail::flops_check_size(where, "s", s);
  detail::flops_check_size(where, "d", d);
  return detail::flops_mul(where, 2, s, detail::flops_mul(where, s, d));
}

// 12sd^2 = Q, K, V, O projections (4sd^2) + FFN d -> 4d -> d (8sd^2). Table 1 "w/o attention".
constexpr std::int64_t dense_block_macs_without_attention(std::int64_t s, std::int64_t d) {
  constexpr const char* where = "dense_block_macs_without_attention";
  detail::flops_check_size(where, "s", s);
  detail::flops_check_size(where, "d", d);
  return detail::flops_mul(where, 12, s, detail::flops_mul(where, d, d));
}

// 2s^2d + 12sd^2: Table 1, dense Transformer (10.7G / 20.9G / 34.4G at s = 2048).
constexpr std::int64_t dense_block_macs(std::int64_t s, std::int64_t d) {
  // Checked here so that an error names this function, whichever operand is evaluated first.
  detail::flops_check_size("dense_block_macs", "s", s);
  detail::flops_check_size("dense_block_macs", "d", d);
  return detail::flops_add("dense_block_macs", attention_macs(s, d),
                           dense_block_macs_without_attention(s, d));
}

// 6Ksd with K = d / tau, as the paper prints it (Table 1 "w/o attention"). See
// memoryformer_block_macs_exact for the count from the layer shapes.
constexpr std::int64_t memoryformer_block_macs_without_attention(std::int64_t s, std::int64_t d, int tau) {
  constexpr const char* where = "memoryformer_block_macs_without_attention";
  const std::int64_t chunks = HashShape::of(where, "d", d, tau).chunks;
  detail::flops_check_size(where, "s", s);
  return detail::flops_mul(where, 6, chunks, detail::flops_mul(where, s, d));
}

// 2s^2d + 6Ksd: Table 1, MemoryFormer (4.7G / 7.35G / 10.2G at s = 2048, tau = 8; the paper
// prints 7.4G for small, which the formula does not give).
constexpr std::int64_t memoryformer_block_macs(std::int64_t s, std::int64_t d, int tau) {
  detail::flops_check_size("memoryformer_block_macs", "s", s);
  HashShape::of("memoryformer_block_macs", "d", d, tau);
  return detail::flops_add("memoryformer_block_macs", attention_macs(s, d),
                           memoryformer_block_macs_without_attention(s, d, tau));
}

// ---- One block counted from its real layer shapes (docs/method.md §2) -------------------------

// Attention plus: Q, K, V (d -> d, tau bits, 3Ksd); up (d -> (tau+e)K, tau bits, s K (tau+e)K);
// down ((tau+e)K -> d, K chunks of tau+e bits, Ksd). Total 2s^2d + Ks(4d + (tau+e)K)
// = 2s^2d + (4 + (tau+e)/tau) Ksd, i.e. 5.25Ksd at tau = 8, e = 2. The paper's 6Ksd equals this
// only when e = tau (an up layer 2d wide); at the default e = 2 it overstates the block by 0.75Ksd.
// Norms, hashing, scores, biases and softmax are not counted.
constexpr std::int64_t memoryformer_block_macs_exact(std::int64_t s, std::int64_t d, int tau,
                                                     int expand_bits) {
  constexpr const char* where = "memoryformer_block_macs_exact";
  detail::flops_check_size(where, "s", s);
  const std::int64_t chunks = HashShape::of(where, "d", d, tau).chunks;
  HashShape::check_expand_bits(where, tau, expand_bits);
  const std::int64_t hidden = detail::flops_mul(where, tau + expand_bits, chunks);
  const std::int64_t qkv = detail::flops_mul(where, 3, memory_layer_macs(s, d, d, tau));
  const std::int64_t up = memory_layer_macs(s, d, hidden, tau);
  // K chunks of tau+e bits each add one d-wide row.
  const std::int64_t down = detail::flops_mul(where, s, chunks, d);
  std::int64_t total = attention_macs(s, d);
  total = detail::flops_add(where, total, qkv);
  total = detail::flops_add(where, total, up);
  return detail::flops_add(where, total, down);
}

// ---- Memory Block (the FFN replacement) storage -----------------------------------------------

// Up tables [K, 2^tau, (tau+e)K] + down tables [K, 2^(tau+e), d], biases and LayerNorm excluded.
// d = 512, tau = 8 in fp16: e = 0/1/2/3 -> 33.6/52.4/88.1/157.3 MB; each extra bit roughly doubles
// the down tables.
constexpr std::int64_t memory_block_table_values(std::int64_t d, int tau, int expand_bits) {
  constexpr const char* where = "memory_block_table_values";
  const std::int64_t chunks = HashShape::of(where, "d", d, tau).chunks;
  HashShape::check_expand_bits(where, tau, expand_bits);
  const std::int64_t hidden = detail::flops_mul(where, tau + expand_bits, chunks);
  return detail::flops_add(where, memory_table_values(chunks, tau, hidden),
                           memory_table_values(chunks, tau + expand_bits, d));
}

constexpr std::int64_t memory_block_table_bytes(std::int64_t d, int tau, int expand_bits,
                                                std::int64_t bytes_per_value) {
  constexpr const char* where = "memory_block_table_bytes";
  detail::flops_check_positive(where, "bytes_per_value", bytes_per_value);
  return detail::flops_mul(where, memory_block_table_values(d, tau, expand_bits), bytes_per_value);
}

}  // namespace v0
}  // namespace memoryformer
