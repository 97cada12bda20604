// MemoryBlock: the MemoryFormer's replacement of the FFN (docs/method.md §2, paper §3.3):
//   u = MemoryLayer_up(m)      d -> (tau + e) K, K = d / tau chunks of tau bits
//   u = LayerNorm(u)
//   y = MemoryLayer_down(u)    (tau + e) K -> d, K chunks of tau + e bits
// No activation: hashing is the non-linearity (ModelConfig::memory_block_activation puts a GeLU
// before the down layer, the paper's Table 6 ablation). The e "expanding bits" give the down layer
// 2^(tau + e) rows per table (Table 5: more bits, lower perplexity, larger tables).
#pragma once

#include "activation.hpp"
#include "config.hpp"
#include "detail/random.hpp"
#include "memory_layer.hpp"
#include "model_config.hpp"
#include "norm.hpp"
#include "parameter.hpp"

#include <string>

namespace memoryformer {
inline namespace v0 {
namespace detail {

// The options of one Memory Layer of a model: its shape and bits, the config's score and
// temperature, its own seed; init_std 0 keeps the layer's default N(0, sqrt(2 / (5 in_dim))).
inline MemoryLayerOptions memory_layer_options(const ModelConfig& c, int in_dim, int out_dim, int bits,
                                               float init_std, std::uint64_t seed) {
  MemoryLayerOptions o;
  o.in_dim = in_dim;
  o.out_dim = out_dim;
  o.tau = bits;
  o.score = c.score;
  o.temperature = static_cast<float>(c.temperature);
  o.init_std = init_std;
  o.seed = seed;
  return o;
}

}  // namespace detail

template <class Scalar>
class MemoryBlock {
 public:
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;

  // What backward() needs: the inputs of each stage and the two hashes.
  struct Saved {
    RowMatrix<Scalar> m;        // input [N, d]
    Buckets<Scalar> up_hash;    // of m
    RowMatrix<Scalar> u;        // up output [N, (tau + e) K]
    RowMatrix<Scalar> u_norm;   // LayerNorm(u)
    RowMatrix<Scalar> u_act;    // activation(u_norm), empty without one
    Buckets<Scalar> down_hash;  // of the down layer's input: u_act, or u_norm without an activation
  };

  // Tables N(0, 0.02) and biases 0.001 N(0, 1), as the released code initialises them (§3);
  // `seed` gives each layer its own stream.
  MemoryBlock(const ModelConfig& config, std::uint64_t seed, Init init = Init::random)
      : up_(detail::memory_layer_options(config, config.d_model, config.memory_block_width(), config.tau,
                                         kTableInitStd, detail::derive_seed(seed, "up")),
            init),
        norm_(config.memory_block_width(), config.layernorm_eps),
        activation_(config.memory_block_activation),
        down_(detail::memory_layer_options(config, config.memory_block_width(), config.d_model,
                                           config.tau + config.expand_bits, kTableInitStd,
                                           detail::derive_seed(seed, "down")),
              init) {}

  int d_model() const { return up_.in_dim(); }
  int hidden_width() const { return up_.out_dim(); }

  MemoryLayer<Scalar>& up() { return up_; }
  const MemoryLayer<Scalar>& up() const { return up_; }
  LayerNorm<Scalar>& norm() { return norm_; }
  const LayerNorm<Scalar>& norm() const { return norm_; }
  MemoryLayer<Scalar>& down() { return down_; }
  const MemoryLayer<Scalar>& down() const { return down_; }
  Activation activation() const { return activation_; }

  // m [N, d] -> [N, d]. Fills `saved` for backward() when given (fp32 tables only).
  RowMatrix<Scalar> forward(const Input& m, Saved* saved = nullptr) const {
    if (saved != nullptr) detail::require_trainable_for_saved("MemoryBlock::forward", up_);
    const Context ctx = context();
    Buckets<Scalar> up_hash = up_.hash()(m, ctx);
    RowMatrix<Scalar> u = up_.forward(up_hash);
    RowMatrix<Scalar> u_norm = norm_.forward(u);
    RowMatrix<Scalar> u_act;
    if (activation_ == Activation::gelu) u_act = detail::gelu(u_norm);
    Buckets<Scalar> down_hash = down_.hash()(down_input(u_norm, u_act), ctx);
    RowMatrix<Scalar> y = down_.forward(down_hash);
    if (saved != nullptr)
      *saved = Saved{m, std::move(up_hash), std::move(u), std::move(u_norm), std::move(u_act), std::move(down_hash)};
    return y;
  }

  // dL/dy [N, d] -> dL/dm [N, d]; accumulates the gradients of both layers and the norm.
  RowMatrix<Scalar> backward(const Saved& saved, const Input& dy) {
    const Context ctx = context();
    const RowMatrix<Scalar> d_down_scores = down_.backward_scores(saved.down_hash, dy);
    RowMatrix<Scalar> d_u_norm = down_.hash().backward(down_input(saved.u_norm, saved.u_act), d_down_scores, ctx);
    if (activation_ == Activation::gelu) d_u_norm = detail::gelu_backward(saved.u_norm, d_u_norm);
    const RowMatrix<Scalar> d_u = norm_.backward(saved.u, d_u_norm);
    const RowMatrix<Scalar> d_up_scores = up_.backward_scores(saved.up_hash, d_u);
    return up_.hash().backward(saved.m, d_up_scores, ctx);
  }

  // What both layers run on (context.hpp): the block's hashes and layers share one context.
  Context context() const { return up_.context(); }
  void set_context(const Context& context) {
    up_.set_context(context);
    down_.set_context(context);
  }

  void zero_grad() {
    up_.zero_grad();
    norm_.zero_grad();
    down_.zero_grad();
  }

  // Both layers' tables stored as `type` in `layout`, for inference (MemoryLayer::compress).
  void compress_tables(TableType type, TableLayout layout = TableLayout::rows) {
    up_.compress(type, layout);
    down_.compress(type, layout);
  }
  TableType table_type() const { return up_.table_type(); }
  TableLayout table_layout() const { return up_.table_layout(); }

  // prefix.up.{tables,bias}, prefix.norm.{weight,bias}, prefix.down.{tables,bias} (docs/method.md §5).
  void append_parameters(const std::string& prefix, ParameterList<Scalar>& out) {
    for_each_module(prefix, [&](auto& m, const std::string& name) { m.append_parameters(name, out); });
  }
  // The same without gradients and without the tables (MemoryLayer::append_weights).
  void append_weights(const std::string& prefix, ParameterList<Scalar>& out) {
    for_each_module(prefix, [&](auto& m, const std::string& name) { m.append_weights(name, out); });
  }
  // prefix.up and prefix.down.
  void append_memory_layers(const std::string& prefix, NamedMemoryLayers<Scalar>& out) {
    out.push_back({prefix + ".up", &up_});
    out.push_back({prefix + ".down", &down_});
  }

 private:
  template <class Visit>
  void for_each_module(const std::string& prefix, const Visit& visit) {
    visit(up_, prefix + ".up");
    visit(norm_, prefix + ".norm");
    visit(down_, prefix + ".down");
  }

  const RowMatrix<Scalar>& down_input(const RowMatrix<Scalar>& u_norm, const RowMatrix<Scalar>& u_act) const {
    return activation_ == Activation::none ? u_norm : u_act;
  }

  static constexpr float kTableInitStd = 0.02f;

  MemoryLayer<Scalar> up_;
  LayerNorm<Scalar> norm_;
  Activation activation_;
  MemoryLayer<Scalar> down_;
};

}  // namespace v0
}  // namespace memoryformer
