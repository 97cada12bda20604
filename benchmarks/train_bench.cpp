// Training-step benchmark: one optimizer step of a whole byte-level language model, MemoryFormer
// against the dense Transformer of the same shape (docs/performance.md), as train_char_lm runs it:
// zero_grad, forward saving activations, cross-entropy, backward, gradient clipping and AdamW.
//   BM_TrainStep/arch:{0 dense, 1 memoryformer}/d/layers/seq: a batch of kTrainBatch sequences of
//   seq tokens, vocabulary 256, heads d / 64, tau 8, expand bits 2, on every thread the library's
//   pool has (MF_NUM_THREADS or the machine's cores), Eigen's products single-threaded inside it
//   (and OpenBLAS's, in memoryformer_bench_blas_block, through OPENBLAS_NUM_THREADS=1).
// time_per_token is per trained token (batch x seq); FLOP_per_s counts the forward's block MACs
// only (flops.hpp), so compare times, not rates, between the two models.
#include "counters.hpp"

#include <memoryformer/memoryformer.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>

namespace mf = memoryformer;

namespace {

constexpr Eigen::Index kTrainBatch = 16;

mf::ModelConfig train_config(std::int64_t d, std::int64_t layers) {
  mf::ModelConfig c;
  c.vocab_size = 256;
  c.n_layers = static_cast<int>(layers);
  c.d_model = static_cast<int>(d);
  c.n_heads = static_cast<int>(d / 64);
  c.tau = 8;
  c.expand_bits = 2;
  return c;
}

// A model, its parameter list and its optimizer, built once per benchmark point.
template <class Model>
struct Trainee {
  Model model;
  mf::ParameterList<float> params;
  mf::AdamW<float> optimizer;

  explicit Trainee(const mf::ModelConfig& config)
      : model(config), params(model.parameters()), optimizer(params, mf::AdamWOptions{}) {}

  // One step on `tokens` predicting `targets`, as train_char_lm takes it; returns the loss.
  double step(const mf::TokenMatrix& tokens, const mf::TokenMatrix& targets) {
    model.zero_grad();
    typename Model::Saved saved;
    mf::RowMatrix<float> dlogits;
    const double loss = mf::cross_entropy<float>(model.forward(tokens, &saved), targets, &dlogits);
    model.backward(saved, dlogits);
    optimizer.step(params, 1e-4, mf::clip_scale(mf::global_grad_norm(params), 1.0));
    return loss;
  }
};

mf::TokenMatrix random_tokens(Eigen::Index seq, std::uint64_t seed) {
  mf::TokenMatrix t(kTrainBatch, seq);
  mf::detail::Rng rng(seed);
  for (Eigen::Index i = 0; i < t.size(); ++i) t.data()[i] = static_cast<std::int32_t>(rng.uniform() * 256) % 256;
  return t;
}

// The trainee of `config`, kept between the calls Google Benchmark makes for one point (building
// the MemoryFormer model at d 512 initialises ~1 GiB of tables). One model is alive at a time.
template <class Model>
Trainee<Model>& cached_trainee(const mf::ModelConfig& config) {
  static std::unique_ptr<Trainee<Model>> trainee;
  static mf::ModelConfig built_for;
  if (!trainee || built_for.d_model != config.d_model || built_for.n_layers != config.n_layers) {
    trainee.reset();
    trainee = std::make_unique<Trainee<Model>>(config);
    built_for = config;
  }
  return *trainee;
}

template <class Model>
void train_steps(benchmark::State& state, const mf::ModelConfig& config, Eigen::Index seq) {
  Trainee<Model>& trainee = cached_trainee<Model>(config);
  const mf::TokenMatrix tokens = random_tokens(seq, 3), targets = random_tokens(seq, 5);
  for (auto _ : state) benchmark::DoNotOptimize(trainee.step(tokens, targets));
}

void BM_TrainStep(benchmark::State& state) {
  const bool memoryformer = state.range(0) != 0;
  const std::int64_t d = state.range(1), layers = state.range(2), seq = state.range(3);
  const mf::ModelConfig config = train_config(d, layers);
  Eigen::setNbThreads(1);  // products run on the library's pool, as in the block benchmarks
  try {
    if (memoryformer)
      train_steps<mf::MemoryFormerModel<float>>(state, config, seq);
    else
      train_steps<mf::DenseModel<float>>(state, config, seq);
  } catch (const mf::Error& e) {
    state.SkipWithError(e.what());
    return;
  }
  const double tokens = static_cast<double>(kTrainBatch * seq);
  const double macs = static_cast<double>(layers) * (memoryformer ? mf::memoryformer_block_macs(seq, d, 8)
                                                                  : mf::dense_block_macs(seq, d)) *
                      static_cast<double>(kTrainBatch);
  mf_bench::set_token_counters(state, tokens, macs);
}

const bool kRegistered = [] {
  auto* b = benchmark::RegisterBenchmark("BM_TrainStep", BM_TrainStep);
  b->ArgNames({"arch", "d", "layers", "seq"});
  for (std::int64_t arch : {0, 1}) {
    b->Args({arch, 256, 2, 64});    // train_char_lm's defaults, quick
    b->Args({arch, 512, 4, 256});   // issue 19's training target
  }
  b->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
  return true;
}();

}  // namespace
