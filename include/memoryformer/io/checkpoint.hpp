// Training checkpoints: a model's weights, AdamW's moments and step count, and the trainer's own
// entries (its curve, its running sums), in one safetensors file written atomically. A process
// killed at any moment leaves either the previous checkpoint or the new one, never a model and an
// optimizer state of different steps (docs/training.md, "Checkpoints").
//
// The file is a model file (model_file.hpp, docs/method.md §5) with "format":
// "memoryformer-checkpoint" and a "step" entry, plus "<name>.exp_avg" and "<name>.exp_avg_sq" for
// every parameter, as save_optimizer writes them. The caller's entries are stored as metadata
// "state.<key>". Its checksums are verified on open, so a damaged checkpoint is a FormatError
// naming the file before anything is read from it.
#pragma once

#include "../config.hpp"
#include "../optim.hpp"
#include "../parameter.hpp"
#include "model_file.hpp"
#include "safetensors.hpp"

#include <list>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace memoryformer {
inline namespace v0 {
namespace io {

// Writes `model`, `optimizer` (built on `params`, the model's parameters) and the caller's
// `state` to `path`, atomically. `metadata` adds model-file entries of the caller's (e.g. the
// tokenizer), as save_model's `extra` does.
template <class Model, class Scalar>
void save_checkpoint(const std::string& path, Model& model, const AdamW<Scalar>& optimizer,
                     const ParameterList<Scalar>& params, const std::map<std::string, std::string>& state = {},
                     std::map<std::string, std::string> metadata = {}) {
  std::vector<TensorData> tensors;
  std::list<std::vector<std::uint8_t>> keep;
  detail::append_model_tensors(model, TableType::fp32, tensors, keep);
  detail::append_optimizer_tensors("save_checkpoint", optimizer, params, tensors);
  for (const auto& [key, value] : state) metadata["state." + key] = value;
  metadata = detail::model_metadata<Model>(model.config(), TableType::fp32, std::move(metadata));
  metadata["format"] = kCheckpointFormat;
  metadata["step"] = std::to_string(optimizer.step_count());
  write_safetensors(path, tensors, std::move(metadata));
}

// A checkpoint file, opened and its checksums verified: its step and state at once, its model and
// optimizer state on request.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& path) { return Checkpoint(SafetensorsFile::open(path)); }

  const SafetensorsFile& file() const { return file_; }
  const std::string& path() const { return file_.path(); }
  // Optimizer steps taken when it was written.
  long step() const { return step_; }
  // The caller's entry `key` of save_checkpoint's state; a FormatError naming it when absent.
  const std::string& state(const std::string& key) const {
    return detail::metadata_entry(file_, "state." + key);
  }

  // The model, a copy of its weights. Model's block type must be the checkpoint's "arch".
  template <class Model>
  Model model() const {
    std::set<std::string> names;
    return detail::load_model_part<Model>(file_, Weights::copy, nullptr, names);
  }

  // Restores the optimizer's step count and moments into `optimizer`, built on `params`: the
  // parameters of model<Model>(). Every tensor of the file must then have been accounted for.
  template <class Scalar>
  void restore(AdamW<Scalar>& optimizer, const ParameterList<Scalar>& params) const {
    std::set<std::string> names;
    for (const auto& p : params) names.insert(p.name);
    detail::read_optimizer(file_, step_, optimizer, params, names);
    detail::reject_extra_tensors(file_, names);
  }

 private:
  explicit Checkpoint(SafetensorsFile file) : file_(std::move(file)) {
    detail::require_format(file_, kCheckpointFormat);
    step_ = load_step(file_);
  }

  SafetensorsFile file_;
  long step_ = 0;
};

}  // namespace io
}  // namespace v0
}  // namespace memoryformer
