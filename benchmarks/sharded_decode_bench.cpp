// The latency of a decoding step with the model sharded over the ranks of MPI_COMM_WORLD
// (docs/distributed.md), against the whole model in one process, in the same run. Rank 0 times
// both: first the whole model alone (the other ranks wait), then every rank its shard. Google
// Benchmark has no notion of ranks, hence this small harness.
//
//   mpirun -np P memoryformer_sharded_decode_bench --weights M.safetensors [--threads T]
//          [--prompt 32] [--steps 64] [--repetitions 5]
//
// Prints one JSON line: milliseconds per decoded token, median and range over the repetitions.
#include <memoryformer/distributed/sharded_loading.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace mf = memoryformer;
namespace dist = memoryformer::distributed;
using Model = mf::MemoryFormerModel<float>;

namespace {

struct Options {
  std::string weights;
  int threads = 1, prompt = 32, steps = 64, repetitions = 5;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(flag + ": expected a value after it");
    const std::string value = argv[i + 1];
    const auto count = [&] {
      const int n = std::atoi(value.c_str());
      if (n < 1) throw std::invalid_argument(flag + " = " + value + ": expected a positive integer");
      return n;
    };
    if (flag == "--weights") o.weights = value;
    else if (flag == "--threads") o.threads = count();
    else if (flag == "--prompt") o.prompt = count();
    else if (flag == "--steps") o.steps = count();
    else if (flag == "--repetitions") o.repetitions = count();
    else throw std::invalid_argument(flag + ": expected --weights, --threads, --prompt, --steps or --repetitions");
  }
  if (o.weights.empty()) throw std::invalid_argument("--weights: required, a model file");
  return o;
}

// Milliseconds per decoded token of each repetition: a prompt, then `steps` tokens one at a time.
std::vector<double> time_decoding(const Model& model, const Options& o, const dist::Communicator& comm) {
  const int vocab = model.config().vocab_size;
  mf::TokenMatrix tokens(1, o.prompt + o.steps);
  for (Eigen::Index t = 0; t < tokens.cols(); ++t) tokens(0, t) = static_cast<std::int32_t>((t * 7919) % vocab);
  std::vector<double> ms;
  for (int r = 0; r < o.repetitions; ++r) {
    auto state = model.start_decoding(tokens.cols());
    model.decode(tokens.leftCols(o.prompt), state);
    MPI_Barrier(comm.handle());
    const double start = MPI_Wtime();
    for (Eigen::Index t = o.prompt; t < tokens.cols(); ++t) model.decode(tokens.middleCols(t, 1), state);
    ms.push_back((MPI_Wtime() - start) * 1e3 / o.steps);
  }
  return ms;
}

std::string summary(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  char buf[160];
  std::snprintf(buf, sizeof buf, "{\"median_ms\": %.4f, \"min_ms\": %.4f, \"max_ms\": %.4f}", ms[ms.size() / 2],
                ms.front(), ms.back());
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  const dist::MpiSession mpi(&argc, &argv);
  const dist::Communicator world;
  try {
    const Options o = parse(argc, argv);
    const mf::Context ctx(o.threads);
    std::string whole;
    if (world.rank() == 0) {
      Model model = mf::io::load_model<Model>(o.weights);
      model.set_context(ctx);
      dist::Communicator self(MPI_COMM_SELF);
      whole = summary(time_decoding(model, o, self));
    }
    Model sharded = dist::load_sharded_model<Model>(o.weights, world);
    sharded.set_context(ctx);
    const std::string split = summary(time_decoding(sharded, o, world));
    if (world.rank() == 0)
      std::cout << "{\"weights\": \"" << o.weights << "\", \"ranks\": " << world.size() << ", \"threads_per_rank\": "
                << o.threads << ", \"prompt\": " << o.prompt << ", \"steps\": " << o.steps
                << ", \"one_process\": " << whole << ", \"sharded\": " << split << "}" << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "memoryformer_sharded_decode_bench (rank " << world.rank() << "): " << e.what() << std::endl;
    world.abort(1);
  }
  return 0;
}
