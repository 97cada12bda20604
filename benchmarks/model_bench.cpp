// Whole-model generation: the number a CPU-inference user asks for first (docs/performance.md).
//   BM_ModelDecode/arch:{0 dense, 1 memoryformer}/size:{0 tiny, 1 small, 2 base}/table:{0 fp32,
//   1 bf16, 2 int8}/kv: one generated token through every layer, the LM head included, with kv
//   positions in every KV cache. Counters as in layer_bench.cpp (tokens_per_s), FLOPs by
//   flops.hpp's block counts plus attention over kv + 1 positions and the LM head.
// Sizes are the paper's (ModelConfig::tiny/small/base: 6 x 512, 12 x 768, 24 x 1024, tau 8, e 2)
// with Pythia's padded vocabulary of 50304; the dense models of the same shapes are Pythia-70M,
// -160M and -410M. Models are written once by io::write_initial_model into MF_BENCH_MODELS
// (default build/release/bench_models: MF-base is 6.6 GB in int8) and loaded as a user would,
// with io::Weights::map. Points that do not fit this machine's memory are not registered: MF-base
// in fp32 (27 GB).
#include "counters.hpp"
#include "grid.hpp"

#include <memoryformer/io/model_file.hpp>
#include <memoryformer/memoryformer.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include <unistd.h>

namespace mf = memoryformer;
namespace io = memoryformer::io;

namespace {

constexpr int kVocab = 50304;

mf::ModelConfig model_config(std::int64_t size) {
  return size == 0 ? mf::ModelConfig::tiny(kVocab) : size == 1 ? mf::ModelConfig::small(kVocab) : mf::ModelConfig::base(kVocab);
}

// The model file of (arch, size, table), written on first use.
template <class Model>
std::string model_file(std::int64_t size, mf::TableType table) {
  const char* dir_env = std::getenv("MF_BENCH_MODELS");
  const std::filesystem::path dir = dir_env != nullptr ? dir_env : "build/release/bench_models";
  std::filesystem::create_directories(dir);
  const char* sizes[] = {"tiny", "small", "base"};
  const std::string path = (dir / (std::string(Model::Block::kArch) + "_" + sizes[size] + "_" +
                                   mf::to_string(table) + ".safetensors"))
                               .string();
  if (!std::filesystem::exists(path)) io::write_initial_model<Model>(model_config(size), path, table);
  return path;
}

// The model under test, kept between repetitions of the same point.
template <class Model>
Model& cached_model(std::int64_t size, mf::TableType table) {
  static std::unique_ptr<Model> model;
  static std::string loaded;
  const std::string path = model_file<Model>(size, table);
  if (!model || loaded != path) {
    model.reset();
    model = std::make_unique<Model>(io::load_model<Model>(path, io::Weights::map));
    model->set_context(mf::Context());  // every core, a context of the model's own
    loaded = path;
  }
  return *model;
}

// Prefills kv positions, then every iteration decodes position kv and rewinds to kv. Tokens come
// from a fixed pseudo-random ring, so that the hash codes differ between iterations.
template <class Model>
void decode(benchmark::State& state, const Model& model, Eigen::Index kv) {
  auto decoding = model.start_decoding(kv + 1);
  mf::TokenMatrix prompt(1, kv);
  for (Eigen::Index i = 0; i < kv; ++i) prompt(0, i) = static_cast<std::int32_t>((i * 7919 + 13) % kVocab);
  model.decode(prompt, decoding);
  constexpr int kRing = 61;
  int next = 0;
  for (auto _ : state) {
    mf::TokenMatrix token(1, 1);
    token(0, 0) = static_cast<std::int32_t>((next * 104729 + 7) % kVocab);
    mf::RowMatrix<float> logits = model.decode(token, decoding);
    benchmark::DoNotOptimize(logits.data());
    for (auto& cache : decoding.caches) cache.truncate(kv);
    decoding.position = kv;
    if (++next == kRing) next = 0;
  }
}

// Multiply-adds of one decoded token: each layer's projections and attention over kv + 1 keys, and
// the LM head.
double decode_macs(std::int64_t arch, const mf::ModelConfig& c, Eigen::Index kv) {
  const double attention = 2.0 * static_cast<double>(kv + 1) * c.d_model;
  const double projections = static_cast<double>(
      arch == 0 ? mf::dense_block_macs_without_attention(1, c.d_model)
                : mf::memoryformer_block_macs_without_attention(1, c.d_model, c.tau));
  return c.n_layers * (attention + projections) + static_cast<double>(c.d_model) * c.vocab_size;
}

void BM_ModelDecode(benchmark::State& state) {
  const std::int64_t arch = state.range(0), size = state.range(1);
  const auto table = static_cast<mf::TableType>(state.range(2));
  const Eigen::Index kv = state.range(3);
  Eigen::setNbThreads(1);
  try {
    if (arch == 0)
      decode(state, cached_model<mf::DenseModel<float>>(size, table), kv);
    else
      decode(state, cached_model<mf::MemoryFormerModel<float>>(size, table), kv);
  } catch (const mf::Error& e) {
    state.SkipWithError(e.what());
    return;
  }
  mf_bench::set_token_counters(state, 1.0, decode_macs(arch, model_config(size), kv));
}

// Bytes of a model's file, by the counts of parameter_values (4 bytes a value in fp32).
double model_bytes(std::int64_t arch, std::int64_t size, mf::TableType table) {
  const mf::ModelConfig c = model_config(size);
  if (arch == 0) return 4.0 * static_cast<double>(mf::DenseModel<float>::parameter_values(c));
  const double all = static_cast<double>(mf::MemoryFormerModel<float>::parameter_values(c));
  return all * mf::table_value_bytes(table);  // the tables are nearly all of it
}

// Every point whose model fits in half this machine's memory (the rest is page cache and the OS).
void model_grid(benchmark::internal::Benchmark* b) {
  b->ArgNames({"arch", "size", "table", "kv"});
  const double memory = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  const std::int64_t largest = mf_bench::bench_grid() == mf_bench::Grid::quick ? 0 : 2;
  for (std::int64_t size = 0; size <= largest; ++size) {
    b->Args({0, size, 0, 512});
    for (const mf::TableType table : {mf::TableType::fp32, mf::TableType::bf16, mf::TableType::int8})
      if (model_bytes(1, size, table) < 0.6 * memory) b->Args({1, size, static_cast<std::int64_t>(table), 512});
  }
}

const bool kRegistered = [] {
  benchmark::RegisterBenchmark("BM_ModelDecode", BM_ModelDecode)
      ->Apply(model_grid)
      ->UseRealTime()
      ->MeasureProcessCPUTime()
      ->Unit(benchmark::kMillisecond);
  return true;
}();

}  // namespace
