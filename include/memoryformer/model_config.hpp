// The shape and hyper-parameters of a MemoryFormer (or of the dense Transformer of the same shape):
// everything a block and a model are built from, and what a weight file's "config" records
// (docs/method.md §3, §5).
#pragma once

#include "config.hpp"
#include "hash_bucket.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

namespace memoryformer {
inline namespace v0 {

struct ModelConfig {
  int vocab_size = 256;
  int d_model = 512;
  int n_layers = 6;
  int n_heads = 8;
  int tau = 8;          // bits per chunk of the Q/K/V and up layers; K = d_model / tau
  int expand_bits = 2;  // e: the Memory Block is d -> (tau + e) K -> d, its down layer hashes tau + e bits
  double rotary_pct = 0.25;
  double rotary_base = 10000.0;
  Score score = Score::paper;
  double temperature = 1.0;
  double norm_eps = 1e-8;       // RMSNorm
  double layernorm_eps = 1e-5;  // the Memory Block's LayerNorm
  // Variants for the released code's numerics and the paper's ablations (docs/method.md §6); files
  // that do not record them mean these defaults.
  RmsForm rms_form = RmsForm::eps_in_root;
  EmbeddingInit embedding_init = EmbeddingInit::normal_0_02;
  Activation memory_block_activation = Activation::none;  // between the Memory Block's LayerNorm and down layer
  bool output_projection = false;  // a Memory Layer W_O after attention, which the paper and released code omit
  std::uint64_t seed = 0x4d46;  // initialisation is a pure function of the config

  int head_dim() const { return d_model / n_heads; }
  int num_chunks() const { return d_model / tau; }                               // K
  int memory_block_width() const { return (tau + expand_bits) * num_chunks(); }  // (tau + e) K
  // The embedding's and LM head's init std (EmbeddingInit).
  double embedding_std() const {
    return embedding_init == EmbeddingInit::small_init ? std::sqrt(2.0 / (5.0 * d_model)) : 0.02;
  }

  // The paper's sizes (docs/method.md §3): tau 8, e 2.
  static ModelConfig tiny(int vocab_size) { return sized(vocab_size, 6, 512, 8); }
  static ModelConfig small(int vocab_size) { return sized(vocab_size, 12, 768, 12); }
  static ModelConfig base(int vocab_size) { return sized(vocab_size, 24, 1024, 16); }

  // Throws Error naming the first field that cannot build a model.
  void validate() const {
    const char* where = "ModelConfig";
    if (vocab_size < 1) detail::fail(where, "vocab_size", vocab_size, "a positive integer");
    if (n_layers < 0) detail::fail(where, "n_layers", n_layers, "an integer >= 0");
    if (d_model < 1) detail::fail(where, "d_model", d_model, "a positive integer");
    if (n_heads < 1 || d_model % n_heads != 0)
      detail::fail(where, "n_heads", n_heads, "a positive divisor of d_model = " + std::to_string(d_model));
    HashShape::of(where, "d_model", d_model, tau);
    detail::check_temperature(where, temperature);
    HashShape::check_expand_bits(where, tau, expand_bits);
    if (static_cast<std::int64_t>(tau + expand_bits) * num_chunks() > std::numeric_limits<int>::max())
      detail::fail(where, "d_model", d_model,
                   "a size whose Memory Block width (tau + expand_bits) * d_model / tau = " +
                       std::to_string(static_cast<std::int64_t>(tau + expand_bits) * num_chunks()) +
                       " fits in int");
    if (score != Score::paper && score != Score::l1)
      detail::fail(where, "score", static_cast<int>(score), "Score::paper or Score::l1");
    if (!(rotary_pct >= 0.0 && rotary_pct <= 1.0))
      detail::fail(where, "rotary_pct", rotary_pct, "a value in [0, 1]");
    if (!std::isfinite(rotary_base) || !(rotary_base > 0.0))
      detail::fail(where, "rotary_base", rotary_base, "a finite value > 0");
    if (!std::isfinite(norm_eps) || !(norm_eps > 0.0))
      detail::fail(where, "norm_eps", norm_eps, "a finite value > 0");
    if (!std::isfinite(layernorm_eps) || !(layernorm_eps > 0.0))
      detail::fail(where, "layernorm_eps", layernorm_eps, "a finite value > 0");
    if (rms_form != RmsForm::eps_in_root && rms_form != RmsForm::eps_after_root)
      detail::fail(where, "rms_form", static_cast<int>(rms_form), "RmsForm::eps_in_root or eps_after_root");
    if (embedding_init != EmbeddingInit::normal_0_02 && embedding_init != EmbeddingInit::small_init)
      detail::fail(where, "embedding_init", static_cast<int>(embedding_init),
                   "EmbeddingInit::normal_0_02 or small_init");
    if (memory_block_activation != Activation::none && memory_block_activation != Activation::gelu)
      detail::fail(where, "memory_block_activation", static_cast<int>(memory_block_activation),
                   "Activation::none or gelu");
  }

 private:
  static ModelConfig sized(int vocab_size, int n_layers, int d_model, int n_heads) {
    ModelConfig c;
    c.vocab_size = vocab_size;
    c.n_layers = n_layers;
    c.d_model = d_model;
    c.n_heads = n_heads;
    return c;
  }
};

}  // namespace v0
}  // namespace memoryformer
