// A causal language model (docs/method.md §3): token embedding -> n_layers blocks -> final RMSNorm ->
// dense LM head (untied; the only fully connected layer a MemoryFormer keeps). Generic over the
// block type, so MemoryFormerModel and DenseModel share every line but the block.
#pragma once

#include "block.hpp"
#include "block_concept.hpp"
#include "config.hpp"
#include "detail/random.hpp"
#include "embedding.hpp"
#include "linear.hpp"
#include "model_config.hpp"
#include "norm.hpp"
#include "parameter.hpp"
#include "tensor.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace memoryformer {
inline namespace v0 {

template <class BlockType>
class Model {
  // First, so that a block missing a member is refused by name (block_concept.hpp).
  static_assert(detail::check_block<BlockType>(), "Model<Block>: Block does not model the Block concept");

 public:
  using Block = BlockType;
  using Scalar = typename Block::Scalar;
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;

  // What backward() needs from forward().
  struct Saved {
    TokenMatrix tokens;
    std::vector<typename Block::Saved> blocks;
    RowMatrix<Scalar> final_in;   // input of the final norm
    RowMatrix<Scalar> final_out;  // its output, the LM head's input
  };

  // Keys and values of every layer for one sequence being generated.
  struct DecodeState {
    std::vector<KVCache<Scalar>> caches;  // one per block
    Eigen::Index position = 0;            // tokens fed so far
    Eigen::Index capacity = 0;            // tokens it can hold
  };

  // Embedding and head N(0, config.embedding_std()) (§3); every module's weights derive from config.seed and its name,
  // drawn on the thread pool, the same for any thread count. Init::none draws nothing and allocates
  // no tables, for a loader to fill (io::load_model); Init::except_tables leaves only the tables
  // out (config.hpp).
  explicit Model(const ModelConfig& config, Init init = Init::random)
      : config_(validated(config)),
        embed_(config.vocab_size, config.d_model, config.embedding_std(), detail::derive_seed(config.seed, "embed"), init),
        final_norm_(config.d_model, config.norm_eps, config.rms_form),
        lm_head_(config.d_model, config.vocab_size, false, config.embedding_std(),
                 detail::derive_seed(config.seed, "lm_head"), init) {
    blocks_.reserve(static_cast<std::size_t>(config.n_layers));
    for (int i = 0; i < config.n_layers; ++i)
      blocks_.emplace_back(config, detail::derive_seed(config.seed, block_name(i)), init);
  }

  const ModelConfig& config() const { return config_; }
  int n_layers() const { return static_cast<int>(blocks_.size()); }
  Block& block(int i) { return blocks_.at(static_cast<std::size_t>(i)); }
  const Block& block(int i) const { return blocks_.at(static_cast<std::size_t>(i)); }
  Embedding<Scalar>& embedding() { return embed_; }
  RMSNorm<Scalar>& final_norm() { return final_norm_; }
  Linear<Scalar>& lm_head() { return lm_head_; }

  // tokens [batch, seq] -> logits [batch * seq, vocab]; row b * seq + t predicts token t + 1 of
  // sequence b. Fills `saved` for backward() when given.
  RowMatrix<Scalar> forward(const TokenMatrix& tokens, Saved* saved = nullptr) const {
    if (tokens.rows() < 1 || tokens.cols() < 1)
      detail::fail("Model::forward", "tokens",
                   std::to_string(tokens.rows()) + " x " + std::to_string(tokens.cols()),
                   "at least one sequence of at least one token ([batch, seq])");
    const Eigen::Index seq_len = tokens.cols();
    RowMatrix<Scalar> x = embed_.forward(tokens);
    if (saved != nullptr) {
      saved->tokens = tokens;
      saved->blocks.resize(blocks_.size());
    }
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      x = blocks_[i].forward(x, seq_len, saved ? &saved->blocks[i] : nullptr);
    RowMatrix<Scalar> normed = final_norm_.forward(x);
    RowMatrix<Scalar> logits = lm_head_.forward(normed);
    if (saved != nullptr) {
      saved->final_in = std::move(x);
      saved->final_out = std::move(normed);
    }
    return logits;
  }

  // The tensor form, for inference: tokens [batch, seq] -> logits [batch, seq, vocab].
  Tensor3<Scalar> forward(const TokenTensor& tokens) const {
    const Eigen::Map<const TokenMatrix> ids(tokens.data(), tokens.dimension(0), tokens.dimension(1));
    return detail::to_tensor3<Scalar>(forward(TokenMatrix(ids)), tokens.dimension(0), tokens.dimension(1));
  }

  // dL/dlogits [batch * seq, vocab] -> accumulates the gradient of every parameter.
  void backward(const Saved& saved, const Input& dlogits) {
    detail::require_shape("Model::backward", "dlogits", dlogits.rows(), dlogits.cols(), saved.tokens.size(),
                          config_.vocab_size);
    RowMatrix<Scalar> dx = final_norm_.backward(saved.final_in, lm_head_.backward(saved.final_out, dlogits));
    for (std::size_t i = blocks_.size(); i-- > 0;) dx = blocks_[i].backward(saved.blocks[i], dx);
    embed_.backward(saved.tokens, dx);
  }

  // An empty state for generating up to `capacity` positions (prompt included).
  DecodeState start_decoding(Eigen::Index capacity) const {
    if (capacity < 1) detail::fail("Model::start_decoding", "capacity", capacity, "a value >= 1");
    DecodeState state;
    state.capacity = capacity;
    state.caches.reserve(blocks_.size());
    for (std::size_t i = 0; i < blocks_.size(); ++i) state.caches.emplace_back(config_.d_model, capacity);
    return state;
  }

  // The next tokens [1, n] of the sequence in `state` -> their logits [n, vocab], equal to the
  // matching rows of forward() over the whole sequence.
  RowMatrix<Scalar> decode(const TokenMatrix& tokens, DecodeState& state) const {
    if (tokens.rows() != 1 || tokens.cols() < 1)
      detail::fail("Model::decode", "tokens",
                   std::to_string(tokens.rows()) + " x " + std::to_string(tokens.cols()),
                   "one sequence of at least one token ([1, n])");
    if (state.caches.size() != blocks_.size())
      detail::fail("Model::decode", "state", std::to_string(state.caches.size()) + " caches",
                   "one per layer (" + std::to_string(blocks_.size()) + "), from start_decoding()");
    if (state.position + tokens.cols() > state.capacity)
      detail::fail("Model::decode", "tokens", std::to_string(tokens.cols()) + " new tokens",
                   "at most " + std::to_string(state.capacity - state.position) + " (capacity " +
                       std::to_string(state.capacity) + ", " + std::to_string(state.position) + " used)");
    RowMatrix<Scalar> x = embed_.forward(tokens);
    for (std::size_t i = 0; i < blocks_.size(); ++i) x = blocks_[i].decode(x, state.caches[i]);
    state.position += tokens.cols();
    return lm_head_.forward(final_norm_.forward(x));
  }

  // MemoryFormer models: every table stored as `type` in `layout`, for inference (forward without
  // `saved`, decode, generate): bf16 or int8 hold a half or a quarter of the bytes; rows suit
  // decoding, tiles long forwards (TableLayout). The trained tables are replaced, not kept
  // (MemoryLayer::compress): training, parameters() and saving need a model that was not compressed.
  void compress_tables(TableType type, TableLayout layout = TableLayout::rows) {
    for (Block& b : blocks_) b.compress_tables(type, layout);
  }
  TableType table_type() const { return blocks_.empty() ? TableType::fp32 : blocks_.front().table_type(); }
  TableLayout table_layout() const {
    return blocks_.empty() ? TableLayout::rows : blocks_.front().table_layout();
  }

  // Splits every Memory Layer's tables and bias by output columns, and the LM head by vocabulary,
  // over processes (output_shard.hpp, docs/distributed.md), for inference: on a model built with
  // Init::none, before a sharded loader fills it (distributed/sharded_loading.hpp). Embedding,
  // norms and rotary stay whole on every process.
  void shard_outputs(const OutputShard<Scalar>& shard) {
    for (const auto& named : memory_layers()) named.second->shard_output(shard);
    lm_head_.shard_output(shard);
  }

  // What the model runs on (context.hpp): the default context until set_context() gives every
  // block and the LM head another. Two models with different contexts run side by side.
  Context context() const { return lm_head_.context(); }
  void set_context(const Context& context) {
    for (Block& b : blocks_) b.set_context(context);
    lm_head_.set_context(context);
  }

  void zero_grad() {
    embed_.zero_grad();
    for (Block& b : blocks_) b.zero_grad();
    final_norm_.zero_grad();
    lm_head_.zero_grad();
  }

  // The number of values parameters() holds for `config`, without building the model: what a
  // loader checks against a file before it allocates. Throws Error on overflow.
  static std::int64_t parameter_values(const ModelConfig& config) {
    constexpr const char* where = "Model::parameter_values";
    config.validate();
    const std::int64_t d = config.d_model;
    const std::int64_t ends = detail::flops_add(where, detail::flops_mul(where, 2, config.vocab_size, d), d);
    return detail::flops_add(where, ends,
                             detail::flops_mul(where, config.n_layers, Block::parameter_values(config)));
  }

  // Every trainable tensor by its docs/method.md §5 name, with its gradient and weight-decay flag. The
  // gradients are allocated here if they are not yet: this is the list an optimizer trains.
  ParameterList<Scalar> parameters() {
    ParameterList<Scalar> out;
    for_each_module([&](auto& m, const std::string& name) { m.append_parameters(name, out); });
    return out;
  }

  // Every tensor but the hash tables, in the order of parameters(), without gradients
  // (Parameter::grad null) and allocating none: what loading and saving read and write. The tables
  // are memory_layers()' TableStores.
  ParameterList<Scalar> weights() {
    ParameterList<Scalar> out;
    for_each_module([&](auto& m, const std::string& name) { m.append_weights(name, out); });
    return out;
  }

  // Every Memory Layer by its docs/method.md §5 name ("blocks.0.attn.q"); its tables are "<name>.tables".
  NamedMemoryLayers<Scalar> memory_layers() {
    NamedMemoryLayers<Scalar> out;
    for (int i = 0; i < n_layers(); ++i)
      blocks_[static_cast<std::size_t>(i)].append_memory_layers(block_name(i), out);
    return out;
  }

 private:
  template <class Visit>
  void for_each_module(const Visit& visit) {
    visit(embed_, "embed");
    for (int i = 0; i < n_layers(); ++i) visit(blocks_[static_cast<std::size_t>(i)], block_name(i));
    visit(final_norm_, "final_norm");
    visit(lm_head_, "lm_head");
  }

  static std::string block_name(int i) { return "blocks." + std::to_string(i); }

  static const ModelConfig& validated(const ModelConfig& c) {
    c.validate();
    return c;
  }

  ModelConfig config_;
  Embedding<Scalar> embed_;
  std::vector<Block> blocks_;
  RMSNorm<Scalar> final_norm_;
  Linear<Scalar> lm_head_;
};

template <class Scalar = float>
using MemoryFormerModel = Model<MemoryFormerBlock<Scalar>>;
template <class Scalar = float>
using DenseModel = Model<DenseBlock<Scalar>>;

// Values and bytes of a parameter list, and those of its hash tables (names ending in ".tables").
template <class Scalar>
Eigen::Index parameter_count(const ParameterList<Scalar>& params) {
  Eigen::Index n = 0;
  for (const auto& p : params) n += p.size();
  return n;
}

template <class Scalar>
Eigen::Index table_bytes(const ParameterList<Scalar>& params) {
  Eigen::Index n = 0;
  for (const auto& p : params)
    if (detail::is_table_name(p.name)) n += p.size();
  return n * static_cast<Eigen::Index>(sizeof(Scalar));
}

}  // namespace v0
}  // namespace memoryformer
