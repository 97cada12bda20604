// The flags of a language model's shape and variants (docs/method.md §6), defined once for the
// memoryformer tool's train and examples/train_char_lm: the same names, ranges, defaults and
// errors in both. Bounds are ModelConfig::validate's where a flag alone has one; the one that
// takes two flags (tau + expand_bits <= kMaxTau) is checked by check(), naming --expand-bits.
#pragma once

#include "cli.hpp"

#include <memoryformer/memoryformer.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace cli {

struct ModelFlags {
  std::string arch = "memoryformer";
  int layers = 2, d_model = 128, heads = 4, tau = 8;
  // The model variants (ModelConfig's defaults unless given).
  int expand_bits = 2;
  double temperature = 1.0, norm_eps = 1e-8;
  std::string score = "paper", rms_form = "eps_in_root", embedding_init = "normal_0.02",
              memory_block_activation = "none", output_projection = "none";

  void add_to(Flags& f) {
    namespace mf = memoryformer;
    f.add("--arch", &arch, "block type", {"memoryformer", "dense"});
    f.add("--layers", &layers, "number of blocks", 0, 64);
    f.add("--d-model", &d_model, "model width", 1, 8192);
    f.add("--heads", &heads, "attention heads (divide d-model)", 1, 1024);
    f.add("--tau", &tau, "bits per hash chunk (divides d-model)", 1, mf::kMaxTau);
    f.add("--expand-bits", &expand_bits,
          "extra bits of the Memory Block's down layer (tau + e <= " + std::to_string(mf::kMaxTau) + ")", 0,
          mf::kMaxTau - 1);
    f.add("--score", &score, "weight of a selected row", names<mf::Score>());
    f.add("--temperature", &temperature, "softmax temperature of the score", 1e-6, 1e6);
    f.add("--rms-form", &rms_form, "where RMSNorm adds eps (eps_after_root: the released code's)",
          names<mf::RmsForm>());
    f.add("--norm-eps", &norm_eps, "RMSNorm eps", 1e-30, 1);
    f.add("--embedding-init", &embedding_init,
          "init of the embedding and LM head (small_init: the released code's)", names<mf::EmbeddingInit>());
    f.add("--memory-block-activation", &memory_block_activation,
          "function between the Memory Block's LayerNorm and down layer", names<mf::Activation>());
    f.add("--output-projection", &output_projection, "W_O after attention (memory: a Memory Layer)",
          {"none", "memory"});
  }

  // Throws UsageError, naming --expand-bits, where tau + expand_bits exceeds what a Memory Block
  // hashes (ModelConfig::validate's rule, HashShape::check_expand_bits).
  void check() const {
    const int max = memoryformer::kMaxTau;
    if (tau + expand_bits > max)
      throw UsageError("--expand-bits = \"" + std::to_string(expand_bits) + "\": expected tau + expand_bits <= " +
                       std::to_string(max) + " (--tau " + std::to_string(tau) + ")");
  }

  // The config of these flags (check()ed; ModelConfig::validate is the caller's, for its error).
  memoryformer::ModelConfig config(int vocab_size, std::uint64_t seed) const {
    namespace mf = memoryformer;
    check();
    mf::ModelConfig c;
    c.vocab_size = vocab_size;
    c.n_layers = layers;
    c.d_model = d_model;
    c.n_heads = heads;
    c.tau = tau;
    c.expand_bits = expand_bits;
    c.score = named<mf::Score>(score);
    c.temperature = temperature;
    c.norm_eps = norm_eps;
    c.rms_form = named<mf::RmsForm>(rms_form);
    c.embedding_init = named<mf::EmbeddingInit>(embedding_init);
    c.memory_block_activation = named<mf::Activation>(memory_block_activation);
    c.output_projection = output_projection == "memory";
    c.seed = seed;
    return c;
  }

 private:
  // An enum's names (enum_names.hpp): the choices of its flag.
  template <class Enum>
  static std::vector<std::string> names() {
    std::vector<std::string> list;
    for (const auto& e : memoryformer::EnumNames<Enum>::table) list.push_back(e.name);
    return list;
  }

  // The enum value named `name` (a Flags choice, so one always is).
  template <class Enum>
  static Enum named(const std::string& name) {
    if (const auto e = memoryformer::detail::enum_named<Enum>(name)) return *e;
    throw std::logic_error("ModelFlags: no value named " + name);
  }
};

}  // namespace cli
