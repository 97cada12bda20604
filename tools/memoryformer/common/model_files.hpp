// The memoryformer tool's model files: opening one for a flag, loading the model its "arch" names,
// alone or split over the ranks of mpirun (--shard tables, docs/distributed.md), and the flags
// every command that reads one shares.
#pragma once

#include "cli.hpp"
#include "errors.hpp"
#include "mpi_world.hpp"

#include <memoryformer/io/model_file.hpp>
#include <memoryformer/memoryformer.hpp>
#if MF_HAVE_MPI
#include <memoryformer/distributed/sharded_loading.hpp>
#endif

#include <string>
#include <type_traits>

namespace tool {

namespace io = memoryformer::io;

inline io::SafetensorsFile open_file(const std::string& arg, const std::string& path,
                                     io::Checksums checksums = io::Checksums::verify) {
  return for_argument(arg, path, [&] { return io::SafetensorsFile::open(path, checksums); });
}

// The entries train writes into a model file's metadata (the tokenizer's); "" where the file has none.
inline std::string metadata_or_empty(const io::SafetensorsFile& file, const std::string& key) {
  const auto it = file.metadata().find(key);
  return it == file.metadata().end() ? std::string() : it->second;
}

inline void add_threads_flag(cli::Flags& f, int* threads) {
  f.add("--threads", threads, "threads (0: all cores)", 0, 1024);
}

// ---- sharded runs (--shard tables, docs/distributed.md)

// The model file of logits and generate. Sharded, every rank opens it together, so that an error is
// thrown on every rank and printed once, and each verifies its part of the checksums as it loads.
inline io::SafetensorsFile open_model_file(const std::string& arg, const std::string& path, bool sharded) {
#if MF_HAVE_MPI
  if (sharded) return for_argument(arg, path, [&] { return mf::distributed::open_sharded_file(path, world()); });
#else
  (void)sharded;
#endif
  return open_file(arg, path);
}

// Whether this process prints a sharded command's output: rank 0 alone, or any process unsharded.
inline bool prints_output(bool sharded) {
#if MF_HAVE_MPI
  return !sharded || world().rank() == 0;
#else
  (void)sharded;
  return true;
#endif
}

inline void add_shard_flag(cli::Flags& f, std::string* shard) {
  f.add("--shard", shard,
        "none, or tables: run under mpirun -np P with every Memory Layer's tables and the LM head split "
        "over the P ranks, each loading only its part (docs/distributed.md)");
}

// --shard's value: true for "tables", false for "none"; anything else, or "tables" in a build
// without MPI, is refused.
inline bool sharded(const std::string& shard) {
  if (shard == "none") return false;
  if (shard != "tables")
    throw UsageError("--shard = " + in_quotes(shard) + ": expected none or tables");
#if !MF_HAVE_MPI
  throw RunError("--shard = \"tables\": this memoryformer was built without MPI; install OpenMPI "
                 "(scripts/install-deps.sh, Debian's libopenmpi-dev) and rebuild",
                 kFailure);
#else
  return true;
#endif
}

// Loads the model in `file` as the block type its "arch" names and returns f(model). Tables stay
// as the file stores them (fp32, bf16 or int8); inference maps them (io::Weights::map), so a
// model loads in the time it takes to check the file and shares its pages with the page cache.
// With `sharded`, each rank of MPI_COMM_WORLD loads its part of the model instead
// (distributed::load_sharded_model): f's model then computes with all ranks. The model runs on
// `ctx` (the command's --threads).
template <class F>
int with_model(const std::string& arg, const io::SafetensorsFile& file, io::Weights how, const mf::Context& ctx,
               F f, bool sharded = false) {
  const auto load = [&](auto* type) {
    using Model = std::remove_pointer_t<decltype(type)>;
#if MF_HAVE_MPI
    if (sharded) return mf::distributed::load_sharded_model<Model>(file, world());
#else
    (void)sharded;
#endif
    return io::load_model<Model>(file, how);
  };
  const std::string arch = io::load_arch(file);
  if (arch == mf::DenseBlock<float>::kArch) {
    auto model = for_argument(arg, file.path(), [&] { return load(static_cast<mf::DenseModel<float>*>(nullptr)); });
    model.set_context(ctx);
    return f(model);
  }
  // Any other arch is reported by load_model, naming the ones it knows.
  auto model =
      for_argument(arg, file.path(), [&] { return load(static_cast<mf::MemoryFormerModel<float>*>(nullptr)); });
  model.set_context(ctx);
  return f(model);
}

}  // namespace tool
