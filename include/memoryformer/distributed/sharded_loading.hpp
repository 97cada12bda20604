// load_sharded_model: every rank of a communicator loads its part of a model file for sharded
// inference (docs/distributed.md): its columns of every Memory Layer's tables and bias and its
// rows of the LM head, copied from the file's mapping by offsets (io::load_model with an
// OutputShard), and the small rest whole. The ranks share the checksum hashing, one part each,
// and an error on any rank (a bad file, a missing tensor) is thrown on every rank.
#pragma once

#include "../io/model_file.hpp"
#include "column_gather.hpp"
#include "communicator.hpp"

#include <optional>
#include <string>
#include <utility>

namespace memoryformer {
inline namespace v0 {
namespace distributed {

// The model file at `path`, opened on every rank of `comm` (an error on any rank is thrown on all),
// its checksums left for load_sharded_model to verify, a part on each rank.
inline io::SafetensorsFile open_sharded_file(const std::string& path, const Communicator& comm) {
  std::optional<io::SafetensorsFile> file;
  comm.run_together([&] { file.emplace(io::SafetensorsFile::open(path, io::Checksums::report)); });
  return std::move(*file);
}

// `file` opened on every rank with io::Checksums::report: each rank verifies its part of the
// checksums, then loads its part of the model.
template <class Model>
Model load_sharded_model(const io::SafetensorsFile& file, const Communicator& comm) {
  comm.run_together([&] {
    const auto bad = file.checksum_mismatches(comm.rank(), comm.size());
    if (!bad.empty())
      throw FormatError(file.path(), bad.front().tensor, "checksum",
                        "mismatch, header says " + bad.front().stored + ", data hashes to " + bad.front().actual);
  });
  std::optional<Model> model;
  comm.run_together([&] {
    model.emplace(io::load_model<Model>(file, MpiColumnGather<typename Model::Scalar>::shard(comm)));
  });
  return std::move(*model);
}

// The file at `path`, opened by every rank together (open_sharded_file), then loaded as above.
template <class Model>
Model load_sharded_model(const std::string& path, const Communicator& comm) {
  return load_sharded_model<Model>(open_sharded_file(path, comm), comm);
}

}  // namespace distributed
}  // namespace v0
}  // namespace memoryformer
