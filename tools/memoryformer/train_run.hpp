// What `memoryformer train` (training.cpp) does around lm::train: its flags' values, the
// data-parallel plumbing over MPI_COMM_WORLD (docs/distributed.md §6), the checkpoint --resume
// names, and the hooks that print progress, write the validation curve and save checkpoints and
// the model (docs/training.md, "Checkpoints").
#pragma once

#include "checkpoints.hpp"
#include "common/errors.hpp"
#include "common/lm_training.hpp"
#include "common/model_files.hpp"
#include "common/model_flags.hpp"

#include <memoryformer/io/checkpoint.hpp>
#include <memoryformer/io/model_file.hpp>
#include <memoryformer/memoryformer.hpp>
#if MF_HAVE_MPI
#include <memoryformer/distributed/gradient_sum.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tool {

struct TrainArgs {
  std::string data, out, resume, log;
  cli::ModelFlags model;  // --arch, the shape and the variants of docs/method.md §6
  int seq = 128, batch = 16, steps = 1000, seed = 1;
  int eval_every = 100, save_every = 0, eval_tokens = 65536, threads = 0, warmup = -1, stop_after = 0;
  int keep_checkpoints = 2;
  double lr = 0, min_lr_ratio = 0.1, weight_decay = 0.1, clip = 1.0;
  bool data_parallel = false;
};

// The header of the validation curve's CSV.
constexpr const char* kCurveHeader = "step,lr,train_loss,val_loss,val_bpb,tokens_per_s,seconds\n";

// Where the validation curve goes: --log, or OUT.csv.
inline std::string curve_path(const TrainArgs& a) { return a.log.empty() ? a.out + ".csv" : a.log; }

// --data-parallel: this process's share of every batch and the sums over MPI_COMM_WORLD
// (docs/distributed.md §6); null without the flag.
inline std::unique_ptr<lm::DataParallel> data_parallel(const TrainArgs& a) {
  if (!a.data_parallel) return nullptr;
#if MF_HAVE_MPI
  const mf::distributed::Communicator& comm = world();
  if (a.batch < comm.size())
    throw UsageError("--batch = " + std::to_string(a.batch) + ": expected at least the " +
                     std::to_string(comm.size()) + " ranks of --data-parallel, a sequence each");
  auto parallel = std::make_unique<lm::DataParallel>();
  parallel->process = comm.rank();
  parallel->processes = comm.size();
  auto sum = std::make_shared<mf::distributed::GradientSum>(comm);
  parallel->sum_gradients = [sum](const mf::ParameterList<float>& params) { sum->sum(params); };
  parallel->sum = [comm](double value) {
    comm.all_reduce_sum(&value, 1);
    return value;
  };
  return parallel;
#else
  throw RunError("--data-parallel: this memoryformer was built without MPI; install OpenMPI "
                 "(scripts/install-deps.sh, Debian's libopenmpi-dev) and rebuild",
                 kFailure);
#endif
}

// After data-parallel training every rank must hold the same parameters: their checksums, compared.
inline void check_same_parameters(const mf::ParameterList<float>& params) {
#if MF_HAVE_MPI
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  for (const auto& p : params) XXH3_64bits_update(state, p.value, static_cast<std::size_t>(p.size()) * sizeof(float));
  const auto mine = static_cast<std::int64_t>(XXH3_64bits_digest(state));
  XXH3_freeState(state);
  const mf::distributed::Communicator& comm = world();
  std::vector<std::int64_t> all(static_cast<std::size_t>(comm.size()));
  comm.all_gather(&mine, std::vector<int>(all.size(), 1), all.data());
  for (std::size_t r = 0; r < all.size(); ++r)
    if (all[r] != mine)
      throw RunError("--data-parallel: rank " + std::to_string(r) + "'s parameters differ from rank " +
                         std::to_string(comm.rank()) + "'s after training (a bug: please report it)",
                     kFailure);
#else
  (void)params;
#endif
}

// The checkpoint --resume names: the file itself, or the newest of PATH.ckpt-<step> that opens
// whole (checksums verified). Each one skipped is named with why.
inline io::Checkpoint open_checkpoint(const std::string& resume, bool lead) {
  const std::string name = checkpoints::split(resume).second;
  const std::size_t dot = name.rfind(".ckpt-");
  if (dot != std::string::npos && checkpoints::step_of(name, name.substr(0, dot)))
    return for_argument("--resume", resume, [&] { return io::Checkpoint::open(resume); });
  const auto found = checkpoints::find(resume);
  if (found.empty()) {
    const bool old_pair = std::filesystem::exists(resume + ".optim");
    throw UsageError("--resume = " + in_quotes(resume) + ": no checkpoint " + in_quotes(resume + ".ckpt-<step>") +
                     " found; " +
                     (old_pair ? "its model and .optim pair was written by an older memoryformer, without the "
                                 "checkpoints a resume needs (docs/training.md, \"Checkpoints\")"
                               : "train writes one at every --save-every and at the end"));
  }
  for (std::size_t i = 0; i < found.size(); ++i) {
    try {
      return io::Checkpoint::open(found[i].second);
    } catch (const mf::Error& e) {
      if (i + 1 == found.size())
        throw RunError("--resume = " + in_quotes(resume) + ": no complete checkpoint; the oldest, " +
                           in_quotes(found[i].second) + ": " + e.what(),
                       status_of(e));
      if (lead)
        std::cerr << "train: skipping checkpoint " << found[i].second << " (" << e.what() << "); trying "
                  << found[i + 1].second << '\n';
    }
  }
  throw std::logic_error("open_checkpoint: unreachable");
}

// A double as text that reads back to the same bits.
inline std::string exact(double x) {
  std::ostringstream s;
  s << std::setprecision(std::numeric_limits<double>::max_digits10) << x;
  return s.str();
}

// The tool's side of lm::train: progress on a terminal, the validation curve (every rank keeps
// it; the lead writes it to --log) and the checkpoints and model file (the lead alone writes them).
template <class Model>
struct TrainRecorder {
  TrainRecorder(const TrainArgs& args, const io::TokenDataset& data, Model& m, const mf::AdamW<float>& adamw,
                const mf::ParameterList<float>& ps, bool is_lead)
      : a(args), val(data.val()), model(m), optimizer(adamw), params(ps), lead(is_lead),
        log(curve_path(args)),
        metadata({{"tokenizer", data.meta().tokenizer},
                  {"tokenizer_checksum", data.meta().tokenizer_checksum},
                  {"train_seq", std::to_string(args.seq)}}) {}

  const TrainArgs& a;
  const io::TokenSplit& val;
  Model& model;
  const mf::AdamW<float>& optimizer;
  const mf::ParameterList<float>& params;
  const bool lead;
  const std::string log;                              // --log, or OUT.csv
  const std::map<std::string, std::string> metadata;  // of the checkpoints and the model file
  std::string csv = kCurveHeader;                     // the curve's rows so far
  bool tty = false;                             // progress on stderr (the lead's, a terminal)
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  lm::Evaluation last;  // the last validation's

  void show(const lm::Progress& p) const {
    if (!tty) return;
    const double eta = p.tokens_per_s > 0 ? (a.steps - p.step) * double(a.batch) * a.seq / p.tokens_per_s : 0;
    std::cerr << "\rstep " << p.step << '/' << a.steps << "  loss " << std::fixed << std::setprecision(3) << p.loss
              << "  " << std::setprecision(0) << p.tokens_per_s << " tok/s  ETA " << eta << " s   "
              << std::defaultfloat << std::flush;
  }

  // Evaluates the model on --eval-tokens of val, adds the row of p.step to the curve and reports it.
  void validate(const lm::Progress& p) {
    last = lm::evaluate(model, val, a.seq, a.batch, static_cast<std::size_t>(a.eval_tokens));
    const double bpb = lm::bits_per_byte(last, val);
    std::ostringstream row;
    row << std::setprecision(6) << p.step << ',' << p.lr << ',' << p.running.mean() << ',' << last.loss() << ','
        << bpb << ',' << p.tokens_per_s << ','
        << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << '\n';
    csv += row.str();
    if (!lead) return;
    write_curve();
    checkpoints::kill_point("after-log", p.step);
    std::cerr << (tty ? "\n" : "") << "step " << p.step << ": train loss " << std::fixed << std::setprecision(4)
              << p.running.mean() << ", val loss " << last.loss() << ", val bpb " << bpb << ", "
              << std::setprecision(0) << p.tokens_per_s << " tok/s\n"
              << std::defaultfloat;
  }

  void write_curve() const { for_argument("--log", log, [&] { io::write_file_atomically(log, csv); }); }

  // The checkpoint first, complete on its own; then the model file, for generate and eval; then
  // the checkpoints it supersedes go. `running` goes into the checkpoint with the curve.
  void save(const lm::RunningLoss& running) const {
    if (!lead) return;
    const long step = optimizer.step_count();
    const std::string path = checkpoints::path_for(a.out, step);
    checkpoints::kill_point("before-checkpoint", step);
    for_argument("--out", path, [&] {
      io::save_checkpoint(
          path, model, optimizer, params,
          {{"curve", csv}, {"recent_loss", exact(running.sum)}, {"recent_steps", std::to_string(running.steps)}},
          metadata);
    });
    checkpoints::kill_point("after-checkpoint", step);
    for_argument("--out", a.out, [&] { io::save_model(model, a.out, metadata); });
    checkpoints::kill_point("after-model", step);
    checkpoints::prune(a.out, step, a.keep_checkpoints);
  }
};

}  // namespace tool
