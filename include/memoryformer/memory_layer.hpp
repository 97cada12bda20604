// MemoryLayer: the drop-in replacement of a dense projection y = xW (docs/method.md §1, paper Eq. 11).
// [N, in_dim] -> [N, out_dim]: each row is hashed into K = in_dim / tau buckets (SignHash) and the
// selected table rows, weighted by their scores, are summed with the bias.
#pragma once

#include "config.hpp"
#include "context.hpp"
#include "detail/partition.hpp"
#include "detail/random.hpp"
#include "hash_bucket.hpp"
#include "lookup.hpp"
#include "output_shard.hpp"
#include "parameter.hpp"
#include "platform/aligned_buffer.hpp"
#include "table_store.hpp"
#include "tensor.hpp"

#include <cmath>
#include <optional>

namespace memoryformer {
inline namespace v0 {

namespace detail {

// Throws unless `b` holds [N, K] codes in [0, buckets) and [N, K] scores: a code out of range would
// read another chunk's table, or past the end.
template <class Scalar>
void check_buckets(const char* where, const Buckets<Scalar>& b, int chunks, int buckets) {
  const Eigen::Index n = b.codes.rows();
  require_shape(where, "buckets.codes", b.codes.rows(), b.codes.cols(), n, chunks);
  require_shape(where, "buckets.scores", b.scores.rows(), b.scores.cols(), n, chunks);
  if (n > 0 && (b.codes.minCoeff() < 0 || b.codes.maxCoeff() >= buckets))
    fail(
        where, "buckets.codes",
        "a value in [" + std::to_string(b.codes.minCoeff()) + ", " + std::to_string(b.codes.maxCoeff()) + "]",
        "codes in [0, " + std::to_string(buckets) + ") (2^tau)");
}

}  // namespace detail

struct MemoryLayerOptions {
  int in_dim = 0;              // d, a multiple of tau
  int out_dim = 0;             // h
  int tau = 8;                 // bits per chunk, 1..16; K = in_dim / tau tables of 2^tau rows
  Score score = Score::paper;  // chunk weight: p(z) or ||z||_1 p(z)
  float temperature = 1.0f;    // t of Eq. 10, > 0
  bool bias = true;
  float init_std = 0.0f;  // table init N(0, init_std); 0 picks sqrt(2 / (5 in_dim)) (docs/method.md §3)
  std::uint64_t seed = 0x4d656d6f7279ULL;  // initialisation is a pure function of the options
};

template <class Scalar>
class MemoryLayer {
  static_assert(std::is_floating_point<Scalar>::value, "MemoryLayer<Scalar>: Scalar must be float or double");

 public:
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;
  using MatrixView = Eigen::Map<RowMatrix<Scalar>>;
  using ConstMatrixView = Eigen::Map<const RowMatrix<Scalar>>;
  using Tensor3 = memoryformer::Tensor3<Scalar>;
  using TableTensorView = Eigen::TensorMap<Tensor3>;
  using ConstTableTensorView = Eigen::TensorMap<const Tensor3>;

  // Tables N(0, init_std) and bias 0.001 N(0, 1) drawn from options.seed, as the released code
  // initialises them; `init` may leave the tables unallocated (config.hpp).
  explicit MemoryLayer(const MemoryLayerOptions& options, Init init = Init::random)
      : options_(validated(options)),
        tables_(init == Init::random ? TableStore<Scalar>(table_rows(options), options.out_dim)
                                     : TableStore<Scalar>::unallocated(table_rows(options), options.out_dim)),
        bias_(RowMatrix<Scalar>::Zero(1, options.bias ? options.out_dim : 0)) {
    if (init == Init::none) return;
    if (init == Init::random)
      detail::fill_normal_rows(default_context(), options_.seed, table_init_std(), 0, tables_.rows(),
                               tables_.width(), tables_.data("MemoryLayer"));
    // The bias is the row after the tables' last.
    detail::draw_normal_rows(options_.seed, kBiasInitStd, tables_.rows(), 1, bias_.cols(), bias_.data());
  }

  const MemoryLayerOptions& options() const { return options_; }
  int in_dim() const { return options_.in_dim; }
  int out_dim() const { return options_.out_dim; }
  int tau() const { return options_.tau; }
  int num_chunks() const { return options_.in_dim / options_.tau; }
  int num_buckets() const { return 1 << options_.tau; }
  bool has_bias() const { return options_.bias; }
  // The hash of this layer's options, a small value. Layers that read the same input share one
  // hash result (forward(buckets)): a block hashes once for Q, K and V.
  SignHash<Scalar> hash() const {
    return SignHash<Scalar>(in_dim(), tau(), options_.score, static_cast<Scalar>(options_.temperature));
  }

  // Tables [K * 2^tau, out_dim]: chunk k's bucket c is row k * 2^tau + c. The trained tables
  // only: after compress() to another type or layout these throw, and table_values() reads them.
  MatrixView tables() { return {tables_.data("MemoryLayer::tables"), tables_.rows(), tables_.width()}; }
  ConstMatrixView tables() const {
    return {tables_.data("MemoryLayer::tables"), tables_.rows(), tables_.width()};
  }
  // The same tables as a tensor [K, 2^tau, out_dim]: element (k, c, j) is tables()(k * 2^tau + c, j).
  TableTensorView tables_tensor() {
    return {tables_.data("MemoryLayer::tables_tensor"), num_chunks(), num_buckets(), tables_.width()};
  }
  ConstTableTensorView tables_tensor() const {
    return {tables_.data("MemoryLayer::tables_tensor"), num_chunks(), num_buckets(), tables_.width()};
  }
  // The values forward() computes with, [K * 2^tau, out_dim], in any storage (a copy).
  RowMatrix<Scalar> table_values() const { return tables_.values(); }

  // Rows [first, first + count) of the tables the constructor draws with Init::random, into out
  // ([count, out_dim] row-major), without holding the tables: how `memoryformer init` streams them.
  void draw_table_rows(Eigen::Index first, Eigen::Index count, Scalar* out) const {
    if (first < 0 || count < 0 || first + count > tables_.rows())
      detail::fail("MemoryLayer::draw_table_rows", "rows",
                   "[" + std::to_string(first) + ", " + std::to_string(first + count) + ")",
                   "rows within [0, " + std::to_string(tables_.rows()) + ")");
    detail::fill_normal_rows(context(), options_.seed, table_init_std(), first, count, tables_.width(), out);
  }

  // The storage policy itself: how and where the tables are held (table_store.hpp).
  const TableStore<Scalar>& table_store() const { return tables_; }

  // Replaces the tables with `tables` of the same shape, in any storage (load_model hands in the
  // file's). Gradients are dropped.
  void set_tables(TableStore<Scalar> tables) {
    if (tables.rows() != tables_.rows() || tables.width() != tables_.width())
      detail::fail("MemoryLayer::set_tables", "tables",
                   std::to_string(tables.rows()) + " x " + std::to_string(tables.width()),
                   std::to_string(tables_.rows()) + " x " + std::to_string(tables_.width()) +
                       " (K * 2^tau rows of out_dim)");
    tables_ = std::move(tables);
    grads_.reset();
  }

  // How the tables are stored (table_store.hpp): TableType::fp32 in TableLayout::rows unless
  // compress() chose otherwise.
  TableType table_type() const { return tables_.type(); }
  TableLayout table_layout() const { return tables_.layout(); }
  std::size_t table_bytes() const { return tables_.bytes(); }
  // Whether the tables are the trainable ones (fp32 in rows): what backward() and tables() need.
  bool is_trainable() const { return tables_.is_trainable(); }

  // Stores the tables as `type` in `layout`, for inference: bf16 or int8 (float layers) hold a
  // quarter or half the bytes, column tiles suit forwards over a few hundred tokens or more, rows
  // batch-1 decoding (docs/performance.md). The trained tables are replaced, not kept: backward()
  // and the parameters then refuse to run, and compressing back to fp32 gives the rounded values.
  // Gradients are dropped. Tables read in place from a file (io::Weights::map) are copied into
  // memory of the layer's own, even to their own type and layout.
  void compress(TableType type, TableLayout layout = TableLayout::rows) {
    if (type == table_type() && layout == table_layout() && !tables_.is_view()) return;
    tables_ = tables_.compressed(type, layout);
    grads_.reset();
  }

  // A copy of this layer with its tables stored as `type` in `layout`, made without copying the
  // trained tables first.
  MemoryLayer compressed(TableType type, TableLayout layout = TableLayout::rows) const {
    MemoryLayer out(options_, tables_.compressed(type, layout), bias_);
    out.shard_ = shard_;
    out.context_ = context_;
    return out;
  }

  // Splits the layer by output columns over processes (output_shard.hpp), for inference: it keeps
  // columns shard.columns(out_dim()) of its bias and will hold those of its tables, which must not
  // be allocated yet (Init::none: a sharded loader gives them with set_tables()). forward() then
  // computes those columns and returns the whole rows through shard.gather; backward() refuses.
  void shard_output(OutputShard<Scalar> shard) {
    const char* where = "MemoryLayer::shard_output";
    shard.check(where, out_dim());
    if (shard_ || tables_.is_allocated())
      detail::fail(where, "tables", shard_ ? "already sharded" : "allocated",
                   "a layer built with Init::none whose tables are not loaded yet");
    const detail::Range cols = shard.columns(out_dim());
    tables_ = TableStore<Scalar>::unallocated(tables_.rows(), cols.size());
    if (has_bias()) bias_ = RowMatrix<Scalar>(bias_.middleCols(cols.begin, cols.size()));
    shard_ = std::move(shard);
  }
  // The shard given to shard_output(), or null: the layer computes every column.
  const OutputShard<Scalar>* output_shard() const { return shard_ ? &*shard_ : nullptr; }

  // What the layer runs on: the context given to set_context(), else the default context at the
  // time of each call (context.hpp).
  Context context() const { return context_.get(); }
  void set_context(Context context) { context_.set(std::move(context)); }
  // Bias [1, out_dim] ([1, 0] when options().bias is false); this process's columns when sharded.
  MatrixView bias() { return detail::view(bias_); }
  ConstMatrixView bias() const { return detail::view(bias_); }

  // [N, in_dim] -> [N, out_dim]. Const and safe to call from several threads at once.
  RowMatrix<Scalar> forward(const Input& x) const {
    const Context ctx = context();
    return gather(ctx, hash()(x, ctx));
  }

  // The tensor form: [batch, seq, in_dim] -> [batch, seq, out_dim]; x is read in place.
  Tensor3 forward(const Tensor3& x) const {
    return detail::to_tensor3<Scalar>(forward(detail::rows_of("MemoryLayer::forward", "x", x, in_dim())),
                                      x.dimension(0), x.dimension(1));
  }

  // The same from a precomputed hash of the input (Q, K and V share one).
  RowMatrix<Scalar> forward(const Buckets<Scalar>& buckets) const { return gather(context(), buckets); }

  // Given x [N, in_dim] and dL/dy [N, out_dim]: accumulates dL/dtables and dL/dbias into the
  // gradients and returns dL/dx [N, in_dim] (Eq. 12).
  RowMatrix<Scalar> backward(const Input& x, const Input& dy) {
    const Context ctx = context();
    const SignHash<Scalar> h = hash();
    const Buckets<Scalar> buckets = h(x, ctx);
    return h.backward(x, backward_scores(ctx, buckets, dy), ctx);
  }

  // The same from a precomputed hash: accumulates the table and bias gradients and returns
  // dL/dscores [N, K], for the caller to pass to SignHash::backward (summed over the layers that
  // share the hash).
  RowMatrix<Scalar> backward_scores(const Buckets<Scalar>& buckets, const Input& dy) {
    return backward_scores(context(), buckets, dy);
  }

  // Accumulated gradients, shaped like tables() and bias(). They exist from the first backward()
  // or zero_grad() on; asking before that is an error rather than a silent zero.
  ConstMatrixView table_grad() const {
    return detail::view(detail::allocated(grads_, "MemoryLayer", "table_grad").tables);
  }
  ConstMatrixView bias_grad() const {
    return detail::view(detail::allocated(grads_, "MemoryLayer", "bias_grad").bias);
  }
  bool has_grad() const { return grads_.has_value(); }

  // Appends prefix.bias, with no gradient (Parameter::grad null) and nothing allocated: what
  // loading and saving see of the layer besides its tables (table_store(), set_tables()).
  void append_weights(const std::string& prefix, ParameterList<Scalar>& out) {
    if (has_bias())
      out.push_back({prefix + ".bias", bias_.data(), nullptr, bias_.rows(), bias_.cols(), false});
  }

  // Appends prefix.tables (weight decay) and prefix.bias (none), allocating the gradients if needed.
  void append_parameters(const std::string& prefix, ParameterList<Scalar>& out) {
    Scalar* tables = tables_.data("MemoryLayer::append_parameters");
    if (!grads_) zero_grad();
    out.push_back({prefix + ".tables", tables, grads_->tables.data(), tables_.rows(), tables_.width(), true});
    append_weights(prefix, out);
    if (has_bias()) out.back().grad = grads_->bias.data();
  }

  // Sets the gradients to zero, allocating them on first use.
  void zero_grad() {
    if (!grads_)
      grads_.emplace(Gradients{detail::AlignedMatrix<Scalar>(tables_.rows(), tables_.width()),
                               RowMatrix<Scalar>(bias_.rows(), bias_.cols())});
    detail::view(grads_->tables).setZero();
    grads_->bias.setZero();
  }

 private:
  RowMatrix<Scalar> gather(const Context& ctx, const Buckets<Scalar>& buckets) const {
    detail::check_buckets("MemoryLayer::forward", buckets, num_chunks(), num_buckets());
    RowMatrix<Scalar> y = detail::lookup_forward(ctx, tables_, buckets, num_buckets(), bias_);
    return shard_ ? shard_->gather->gather(y, out_dim()) : y;
  }

  RowMatrix<Scalar> backward_scores(const Context& ctx, const Buckets<Scalar>& buckets, const Input& dy) {
    detail::check_buckets("MemoryLayer::backward", buckets, num_chunks(), num_buckets());
    if (shard_)
      detail::fail("MemoryLayer::backward", "layer", "sharded by output columns (shard_output)",
                   "a whole layer: sharded layers are for inference");
    const Eigen::Index n = buckets.codes.rows();
    detail::require_shape("MemoryLayer::backward", "dy", dy.rows(), dy.cols(), n, out_dim());
    const Scalar* tables = tables_.data("MemoryLayer::backward");
    if (!grads_) zero_grad();
    if (has_bias()) grads_->bias += dy.colwise().sum();

    return detail::lookup_backward(ctx, tables, grads_->tables.data(), buckets, num_buckets(), dy);
  }

  struct Gradients {
    detail::AlignedMatrix<Scalar> tables;  // aligned like the tables: the scatter writes its rows
    RowMatrix<Scalar> bias;
  };

  static constexpr double kBiasInitStd = 0.001;

  MemoryLayer(const MemoryLayerOptions& options, TableStore<Scalar> tables, const RowMatrix<Scalar>& bias)
      : options_(options), tables_(std::move(tables)), bias_(bias) {}

  static Eigen::Index table_rows(const MemoryLayerOptions& o) {
    return static_cast<Eigen::Index>(o.in_dim / o.tau) << o.tau;
  }
  double table_init_std() const {
    return options_.init_std > 0 ? options_.init_std : std::sqrt(2.0 / (5.0 * in_dim()));
  }

  static MemoryLayerOptions validated(const MemoryLayerOptions& o) {
    const char* where = "MemoryLayerOptions";
    HashShape::of(where, "in_dim", o.in_dim, o.tau);
    detail::check_temperature(where, o.temperature);
    if (o.out_dim < 1) detail::fail(where, "out_dim", o.out_dim, "a positive integer");
    if (o.score != Score::paper && o.score != Score::l1)
      detail::fail(where, "score", static_cast<int>(o.score), "Score::paper or Score::l1");
    if (!std::isfinite(o.init_std) || o.init_std < 0)
      detail::fail(where, "init_std", o.init_std, "a finite value >= 0 (0 for the default)");
    const double rows = static_cast<double>(o.in_dim / o.tau) * std::ldexp(1.0, o.tau);
    const double bytes = rows * o.out_dim * sizeof(Scalar);
    if (bytes > 0x1.0p46)  // 64 TiB: beyond any machine, and near Eigen::Index overflow
      detail::fail(where, "tables", std::to_string(bytes) + " bytes",
                   "a size that fits in memory "
                   "(in_dim / tau * 2^tau * out_dim values); lower tau or the dimensions");
    return o;
  }

  MemoryLayerOptions options_;
  TableStore<Scalar> tables_;
  RowMatrix<Scalar> bias_;
  std::optional<Gradients> grads_;
  std::optional<OutputShard<Scalar>> shard_;
  detail::ModuleContext context_;
};

// The Memory Layers of a module by their docs/method.md §5 names ("blocks.0.attn.q"), for loaders.
template <class Scalar>
using NamedMemoryLayers = std::vector<std::pair<std::string, MemoryLayer<Scalar>*>>;

namespace detail {

// The error of a forward asked to save activations for training on tables compress() converted:
// the gradients would be those of other weights, and backward has no trained tables to update.
template <class Scalar>
void require_trainable_for_saved(const char* where, const MemoryLayer<Scalar>& layer) {
  if (!layer.is_trainable())
    fail(where, "saved",
         std::string("a request to save activations with ") + to_string(layer.table_type()) + " tables in " +
             to_string(layer.table_layout()),
         "the trained tables (fp32 in rows) for training; compress_tables() replaced them, so forward "
         "without `saved` for inference");
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
