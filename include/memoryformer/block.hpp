// The two Transformer blocks a Model is built from, behind one interface:
//  - MemoryFormerBlock (docs/method.md §2, paper Eq. 13): Q, K, V and the FFN are Memory Layers; no
//    output projection unless ModelConfig::output_projection asks for one (a Memory Layer).
//    Pre-norm, sequential residuals, as the released code runs it.
//  - DenseBlock: the standard pre-norm block of the same shape (Q/K/V/O projections, 4x FFN with
//    GeLU, the same norms and rotary) on Eigen GEMM: the honest baseline.
// Both model the Block concept that Model relies on (block_concept.hpp), which checks it.
#pragma once

#include "activation.hpp"
#include "attention.hpp"
#include "config.hpp"
#include "detail/random.hpp"
#include "flops.hpp"
#include "linear.hpp"
#include "memory_block.hpp"
#include "memory_layer.hpp"
#include "model_config.hpp"
#include "norm.hpp"
#include "parameter.hpp"
#include "rotary.hpp"
#include "tensor.hpp"

#include <cmath>
#include <optional>
#include <string>
#include <vector>

namespace memoryformer {
inline namespace v0 {
namespace detail {

// Rotary on Q and K, then causal attention: the part both blocks share between their projections.
template <class Scalar>
class RotaryAttention {
 public:
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;
  using Saved = typename CausalSelfAttention<Scalar>::Saved;

  explicit RotaryAttention(const ModelConfig& c)
      : attention_(c.d_model, c.n_heads), rotary_(c.head_dim(), c.rotary_pct, c.rotary_base) {}

  int n_heads() const { return attention_.n_heads(); }
  void set_context(const Context& context) { attention_.set_context(context); }

  RowMatrix<Scalar> forward(const Input& q, const Input& k, const Input& v, Eigen::Index seq_len,
                            Saved* saved) const {
    return attention_.forward(rotary_.apply_batch(q, n_heads(), seq_len),
                              rotary_.apply_batch(k, n_heads(), seq_len), v, seq_len, saved);
  }

  // dL/d(attention output) -> dL/dq, dL/dk (through the rotation), dL/dv.
  typename CausalSelfAttention<Scalar>::Gradients backward(const Saved& saved, const Input& dout) const {
    auto g = attention_.backward(saved, dout);
    g.dq = rotary_.apply_batch_backward(g.dq, n_heads(), saved.seq_len);
    g.dk = rotary_.apply_batch_backward(g.dk, n_heads(), saved.seq_len);
    return g;
  }

  // New positions of one sequence: they start where the cache ends.
  RowMatrix<Scalar> decode(const Input& q, const Input& k, const Input& v, KVCache<Scalar>& cache) const {
    const Eigen::Index first = cache.size();
    return attention_.decode(rotary_.apply(q, n_heads(), first), rotary_.apply(k, n_heads(), first), v,
                             cache);
  }

 private:
  CausalSelfAttention<Scalar> attention_;
  Rotary<Scalar> rotary_;
};

// The modules both blocks read their input with, under their docs/method.md §5 names.
template <class Visit, class Norm, class Projection>
void visit_attention_inputs(const std::string& prefix, const Visit& visit, Norm& norm, Projection& q,
                            Projection& k, Projection& v) {
  visit(norm, prefix + ".attn_norm");
  visit(q, prefix + ".attn.q");
  visit(k, prefix + ".attn.k");
  visit(v, prefix + ".attn.v");
}

}  // namespace detail

template <class ScalarType>
class MemoryFormerBlock {
 public:
  using Scalar = ScalarType;
  static constexpr const char* kArch = "memoryformer";  // the "arch" of weight files
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;

  struct Saved {
    RowMatrix<Scalar> x, a;    // block input, RMSNorm_attn(x)
    Buckets<Scalar> qkv_hash;  // of a, shared by Q, K and V
    typename detail::RotaryAttention<Scalar>::Saved attention;
    RowMatrix<Scalar> attended;  // attention output and its hash: the input of W_O, when there is one
    Buckets<Scalar> o_hash;
    RowMatrix<Scalar> z;  // x + W_O(attention), or x + attention
    typename MemoryBlock<Scalar>::Saved mlp;
  };

  // Q/K/V (and W_O) tables N(0, sqrt(2 / (5 d))) (init_std 0: the layer's default) and biases
  // 0.001 N(0, 1) (§3).
  MemoryFormerBlock(const ModelConfig& config, std::uint64_t seed, Init init = Init::random)
      : attn_norm_(config.d_model, config.norm_eps, config.rms_form),
        q_(attention_layer(config, seed, "attn.q"), init),
        k_(attention_layer(config, seed, "attn.k"), init),
        v_(attention_layer(config, seed, "attn.v"), init),
        qkv_hash_(q_.hash()),
        attention_(config),
        mlp_norm_(config.d_model, config.norm_eps, config.rms_form),
        mlp_(config, detail::derive_seed(seed, "mlp"), init) {
    if (config.output_projection) o_.emplace(attention_layer(config, seed, "attn.o"), init);
  }

  int d_model() const { return q_.in_dim(); }
  MemoryLayer<Scalar>& q() { return q_; }
  MemoryLayer<Scalar>& k() { return k_; }
  MemoryLayer<Scalar>& v() { return v_; }
  // The one hash of RMSNorm_attn(x) that Q, K and V all read (their options agree on it).
  const SignHash<Scalar>& qkv_hash() const { return qkv_hash_; }
  MemoryBlock<Scalar>& mlp() { return mlp_; }
  // W_O, a d -> d Memory Layer after attention (ModelConfig::output_projection); null without one.
  MemoryLayer<Scalar>* o() { return o_ ? &*o_ : nullptr; }

  // The tensor form, for inference: [batch, seq, d] -> [batch, seq, d]; x is read in place.
  Tensor3<Scalar> forward(const Tensor3<Scalar>& x) const {
    const auto rows = detail::rows_of("MemoryFormerBlock::forward", "x", x, d_model());
    return detail::to_tensor3<Scalar>(forward(rows, x.dimension(1)), x.dimension(0), x.dimension(1));
  }

  // x [batch * seq_len, d], sequences stacked -> [batch * seq_len, d] (docs/method.md §2).
  // Saving activations for backward() needs the fp32 tables (compress_tables).
  RowMatrix<Scalar> forward(const Input& x, Eigen::Index seq_len, Saved* saved = nullptr) const {
    if (saved != nullptr) detail::require_trainable_for_saved("MemoryFormerBlock::forward", q_);
    RowMatrix<Scalar> a = attn_norm_.forward(x);
    Buckets<Scalar> hash = qkv_hash_(a, q_.context());
    typename detail::RotaryAttention<Scalar>::Saved* attention_saved = saved ? &saved->attention : nullptr;
    RowMatrix<Scalar> z = x + output(attention_.forward(q_.forward(hash), k_.forward(hash), v_.forward(hash),
                                                        seq_len, attention_saved),
                                     saved);
    RowMatrix<Scalar> y = z + mlp_.forward(mlp_norm_.forward(z), saved ? &saved->mlp : nullptr);
    if (saved != nullptr) {
      saved->x = x;
      saved->a = std::move(a);
      saved->qkv_hash = std::move(hash);
      saved->z = std::move(z);
    }
    return y;
  }

  // dL/dy -> dL/dx; accumulates every parameter's gradient.
  RowMatrix<Scalar> backward(const Saved& saved, const Input& dy) {
    // y = z + mlp(norm(z)): dz = dy + norm'(mlp'(dy)).
    RowMatrix<Scalar> dz = dy + mlp_norm_.backward(saved.z, mlp_.backward(saved.mlp, dy));
    // z = x + W_O(attention(q(a), k(a), v(a))): the three layers' score gradients meet in one hash
    // backward.
    const auto g = attention_.backward(
        saved.attention,
        o_ ? qkv_hash_.backward(saved.attended, o_->backward_scores(saved.o_hash, dz), q_.context()) : dz);
    const RowMatrix<Scalar> dscores = q_.backward_scores(saved.qkv_hash, g.dq) +
                                      k_.backward_scores(saved.qkv_hash, g.dk) +
                                      v_.backward_scores(saved.qkv_hash, g.dv);
    dz += attn_norm_.backward(saved.x, qkv_hash_.backward(saved.a, dscores, q_.context()));
    return dz;
  }

  // New tokens x [n, d] of one sequence whose earlier keys and values are in `cache`.
  RowMatrix<Scalar> decode(const Input& x, KVCache<Scalar>& cache) const {
    const Buckets<Scalar> hash = qkv_hash_(attn_norm_.forward(x), q_.context());
    const RowMatrix<Scalar> z =
        x + output(attention_.decode(q_.forward(hash), k_.forward(hash), v_.forward(hash), cache), nullptr);
    return z + mlp_.forward(mlp_norm_.forward(z));
  }

  // Every table of the block stored as `type` in `layout`, for inference (MemoryLayer::compress).
  void compress_tables(TableType type, TableLayout layout = TableLayout::rows) {
    for (MemoryLayer<Scalar>* layer : attention_layers()) layer->compress(type, layout);
    mlp_.compress_tables(type, layout);
  }
  TableType table_type() const { return q_.table_type(); }
  TableLayout table_layout() const { return q_.table_layout(); }

  // What the block runs on (context.hpp): one context for its hash, layers and attention, which
  // set_context() gives them all.
  Context context() const { return q_.context(); }
  void set_context(const Context& context) {
    for (MemoryLayer<Scalar>* layer : attention_layers()) layer->set_context(context);
    attention_.set_context(context);
    mlp_.set_context(context);
  }

  void zero_grad() {
    attn_norm_.zero_grad();
    for (MemoryLayer<Scalar>* layer : attention_layers()) layer->zero_grad();
    mlp_norm_.zero_grad();
    mlp_.zero_grad();
  }

  // How many values append_parameters() hands out for `config` (validated), computed without
  // building the block: loaders check it against a file before allocating. Throws on overflow.
  static std::int64_t parameter_values(const ModelConfig& config) {
    constexpr const char* where = "MemoryFormerBlock::parameter_values";
    using detail::flops_add;
    using detail::flops_mul;
    const std::int64_t d = config.d_model, chunks = config.num_chunks(),
                       hidden = flops_mul(where, config.tau + config.expand_bits, chunks);
    const std::int64_t qkv = flops_add(where, flops_mul(where, chunks, std::int64_t{1} << config.tau, d), d);
    const std::int64_t up = flops_add(where, flops_mul(where, chunks, std::int64_t{1} << config.tau, hidden),
                                      3 * hidden);  // tables, bias, LayerNorm weight and bias
    const std::int64_t down = flops_add(
        where, flops_mul(where, chunks, std::int64_t{1} << (config.tau + config.expand_bits), d), d);
    return flops_add(where, flops_add(where, flops_mul(where, config.output_projection ? 4 : 3, qkv), up),
                     flops_add(where, down, 2 * d));
  }

  // Names of docs/method.md §5 below prefix ("blocks.{i}").
  void append_parameters(const std::string& prefix, ParameterList<Scalar>& out) {
    for_each_module(prefix, [&](auto& m, const std::string& name) { m.append_parameters(name, out); });
  }
  // The same without gradients and without the tables (MemoryLayer::append_weights).
  void append_weights(const std::string& prefix, ParameterList<Scalar>& out) {
    for_each_module(prefix, [&](auto& m, const std::string& name) { m.append_weights(name, out); });
  }
  // prefix.attn.{q,k,v}, prefix.attn.o with W_O, prefix.mlp.{up,down}.
  void append_memory_layers(const std::string& prefix, NamedMemoryLayers<Scalar>& out) {
    out.push_back({prefix + ".attn.q", &q_});
    out.push_back({prefix + ".attn.k", &k_});
    out.push_back({prefix + ".attn.v", &v_});
    if (o_) out.push_back({prefix + ".attn.o", &*o_});
    mlp_.append_memory_layers(prefix + ".mlp", out);
  }

 private:
  static MemoryLayerOptions attention_layer(const ModelConfig& config, std::uint64_t seed, const char* name) {
    return detail::memory_layer_options(config, config.d_model, config.d_model, config.tau, 0.0f,
                                        detail::derive_seed(seed, name));
  }

  template <class Visit>
  void for_each_module(const std::string& prefix, const Visit& visit) {
    detail::visit_attention_inputs(prefix, visit, attn_norm_, q_, k_, v_);
    if (o_) visit(*o_, prefix + ".attn.o");
    visit(mlp_norm_, prefix + ".mlp_norm");
    visit(mlp_, prefix + ".mlp");
  }

  std::vector<MemoryLayer<Scalar>*> attention_layers() {
    std::vector<MemoryLayer<Scalar>*> layers{&q_, &k_, &v_};
    if (o_) layers.push_back(&*o_);
    return layers;
  }

  // W_O(attended) with W_O, else attended; saves W_O's input and hash for backward().
  RowMatrix<Scalar> output(RowMatrix<Scalar> attended, Saved* saved) const {
    if (!o_) return attended;
    Buckets<Scalar> hash = qkv_hash_(attended, q_.context());  // W_O's hash has Q's shape and options
    RowMatrix<Scalar> out = o_->forward(hash);
    if (saved != nullptr) {
      saved->attended = std::move(attended);
      saved->o_hash = std::move(hash);
    }
    return out;
  }

  RMSNorm<Scalar> attn_norm_;
  MemoryLayer<Scalar> q_, k_, v_;
  std::optional<MemoryLayer<Scalar>> o_;
  SignHash<Scalar> qkv_hash_;
  detail::RotaryAttention<Scalar> attention_;
  RMSNorm<Scalar> mlp_norm_;
  MemoryBlock<Scalar> mlp_;
};

template <class ScalarType>
class DenseBlock {
 public:
  using Scalar = ScalarType;
  static constexpr const char* kArch = "dense";
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;

  struct Saved {
    RowMatrix<Scalar> x, a;  // block input, RMSNorm_attn(x)
    typename detail::RotaryAttention<Scalar>::Saved attention;
    RowMatrix<Scalar> attended;  // attention output, the input of O
    RowMatrix<Scalar> z, m;      // x + O(attended), RMSNorm_mlp(z)
    RowMatrix<Scalar> hidden;    // up(m), before GeLU
  };

  // Weights N(0, 0.02), biases 0: GPT-NeoX's default ("normal") initialisation.
  DenseBlock(const ModelConfig& config, std::uint64_t seed, Init init = Init::random)
      : attn_norm_(config.d_model, config.norm_eps, config.rms_form),
        q_(linear(config.d_model, config.d_model, seed, "attn.q", init)),
        k_(linear(config.d_model, config.d_model, seed, "attn.k", init)),
        v_(linear(config.d_model, config.d_model, seed, "attn.v", init)),
        o_(linear(config.d_model, config.d_model, seed, "attn.o", init)),
        attention_(config),
        mlp_norm_(config.d_model, config.norm_eps, config.rms_form),
        up_(linear(config.d_model, kFfnMultiple * config.d_model, seed, "mlp.up", init)),
        down_(linear(kFfnMultiple * config.d_model, config.d_model, seed, "mlp.down", init)) {}

  int d_model() const { return q_.in_dim(); }

  // The tensor form, for inference: [batch, seq, d] -> [batch, seq, d]; x is read in place.
  Tensor3<Scalar> forward(const Tensor3<Scalar>& x) const {
    const auto rows = detail::rows_of("DenseBlock::forward", "x", x, d_model());
    return detail::to_tensor3<Scalar>(forward(rows, x.dimension(1)), x.dimension(0), x.dimension(1));
  }

  RowMatrix<Scalar> forward(const Input& x, Eigen::Index seq_len, Saved* saved = nullptr) const {
    RowMatrix<Scalar> a = attn_norm_.forward(x);
    RowMatrix<Scalar> attended = attention_.forward(q_.forward(a), k_.forward(a), v_.forward(a), seq_len,
                                                    saved ? &saved->attention : nullptr);
    RowMatrix<Scalar> z = x + o_.forward(attended);
    RowMatrix<Scalar> m = mlp_norm_.forward(z);
    RowMatrix<Scalar> hidden = up_.forward(m);
    RowMatrix<Scalar> y = z + down_.forward(detail::gelu(hidden));
    if (saved != nullptr) {
      saved->x = x;
      saved->a = std::move(a);
      saved->attended = std::move(attended);
      saved->z = std::move(z);
      saved->m = std::move(m);
      saved->hidden = std::move(hidden);
    }
    return y;
  }

  RowMatrix<Scalar> backward(const Saved& saved, const Input& dy) {
    const RowMatrix<Scalar> d_hidden =
        detail::gelu_backward(saved.hidden, down_.backward(detail::gelu(saved.hidden), dy));
    RowMatrix<Scalar> dz = dy + mlp_norm_.backward(saved.z, up_.backward(saved.m, d_hidden));
    const auto g = attention_.backward(saved.attention, o_.backward(saved.attended, dz));
    const RowMatrix<Scalar> da =
        q_.backward(saved.a, g.dq) + k_.backward(saved.a, g.dk) + v_.backward(saved.a, g.dv);
    dz += attn_norm_.backward(saved.x, da);
    return dz;
  }

  RowMatrix<Scalar> decode(const Input& x, KVCache<Scalar>& cache) const {
    const RowMatrix<Scalar> a = attn_norm_.forward(x);
    const RowMatrix<Scalar> z =
        x + o_.forward(attention_.decode(q_.forward(a), k_.forward(a), v_.forward(a), cache));
    return z + down_.forward(detail::gelu(up_.forward(mlp_norm_.forward(z))));
  }

  // What the block runs on (context.hpp), given to all its projections and its attention.
  Context context() const { return q_.context(); }
  void set_context(const Context& context) {
    for (Linear<Scalar>* l : {&q_, &k_, &v_, &o_, &up_, &down_}) l->set_context(context);
    attention_.set_context(context);
  }

  void zero_grad() {
    attn_norm_.zero_grad();
    for (Linear<Scalar>* l : {&q_, &k_, &v_, &o_, &up_, &down_}) l->zero_grad();
    mlp_norm_.zero_grad();
  }

  // As MemoryFormerBlock::parameter_values: 4 d x d projections and the d x 4d MLP, with biases.
  static std::int64_t parameter_values(const ModelConfig& config) {
    constexpr const char* where = "DenseBlock::parameter_values";
    const std::int64_t d = config.d_model, ffn = kFfnMultiple * d;
    const std::int64_t attention = detail::flops_mul(where, 4, detail::flops_add(where, d * d, d));
    const std::int64_t mlp = detail::flops_add(where, detail::flops_mul(where, 2, d, ffn), ffn + d);
    return detail::flops_add(where, detail::flops_add(where, attention, mlp), 2 * d);
  }

  // blocks.{i}.attn_norm.weight, .attn.{q,k,v,o}.{weight,bias}, .mlp_norm.weight,
  // .mlp.{up,down}.{weight,bias}; weights in PyTorch nn.Linear layout [out, in].
  void append_parameters(const std::string& prefix, ParameterList<Scalar>& out) {
    for_each_module(prefix, [&](auto& m, const std::string& name) { m.append_parameters(name, out); });
  }
  void append_weights(const std::string& prefix, ParameterList<Scalar>& out) {
    for_each_module(prefix, [&](auto& m, const std::string& name) { m.append_weights(name, out); });
  }
  void append_memory_layers(const std::string&, NamedMemoryLayers<Scalar>&) {}  // none

 private:
  template <class Visit>
  void for_each_module(const std::string& prefix, const Visit& visit) {
    detail::visit_attention_inputs(prefix, visit, attn_norm_, q_, k_, v_);
    visit(o_, prefix + ".attn.o");
    visit(mlp_norm_, prefix + ".mlp_norm");
    visit(up_, prefix + ".mlp.up");
    visit(down_, prefix + ".mlp.down");
  }

  static constexpr int kFfnMultiple = 4;
  static constexpr double kInitStd = 0.02;

  static Linear<Scalar> linear(int in_dim, int out_dim, std::uint64_t seed, const char* name, Init init) {
    return Linear<Scalar>(in_dim, out_dim, true, kInitStd, detail::derive_seed(seed, name), init);
  }

  RMSNorm<Scalar> attn_norm_;
  Linear<Scalar> q_, k_, v_, o_;
  detail::RotaryAttention<Scalar> attention_;
  RMSNorm<Scalar> mlp_norm_;
  Linear<Scalar> up_, down_;
};

}  // namespace v0
}  // namespace memoryformer
