// memoryformer train and eval: a language model trained on a token dataset, with checkpoints that
// a killed run resumes from bit for bit (docs/training.md, "Checkpoints"), alone or data-parallel
// over mpirun's ranks (docs/distributed.md §6); and a model's loss over a dataset split.
#include "checkpoints.hpp"
#include "commands.hpp"
#include "common/cli.hpp"
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

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tool {
namespace {

io::TokenDataset open_dataset(const std::string& folder) {
  return for_argument("--data", folder, [&] { return io::TokenDataset::open(folder); });
}

// A model file must come from the dataset's tokenizer: same vocabulary size and checksum.
void check_dataset_matches(const io::TokenDataset& data, const std::string& model_path, int vocab,
                           const std::string& checksum) {
  if (vocab != data.meta().vocab_size || checksum != data.meta().tokenizer_checksum)
    throw UsageError("--data = " + in_quotes(data.folder()) + ": tokenizer checksum " +
                     data.meta().tokenizer_checksum + " with vocab_size " + std::to_string(data.meta().vocab_size) +
                     ", but " + in_quotes(model_path) + " was trained with tokenizer checksum " +
                     (checksum.empty() ? std::string("(none recorded)") : checksum) + " and vocab_size " +
                     std::to_string(vocab));
}

std::string metrics_json(const char* prefix, const lm::Evaluation& e, const io::TokenSplit& split) {
  std::ostringstream j;
  j << std::setprecision(6) << '"' << prefix << "loss\": " << e.loss() << ", \"" << prefix << "ppl\": " << e.ppl()
    << ", \"" << prefix << "bpb\": " << lm::bits_per_byte(e, split);
  return j.str();
}

struct TrainArgs {
  std::string data, out, resume, log;
  cli::ModelFlags model;  // --arch, the shape and the variants of docs/method.md §6
  int seq = 128, batch = 16, steps = 1000, seed = 1;
  int eval_every = 100, save_every = 0, eval_tokens = 65536, threads = 0, warmup = -1, stop_after = 0;
  int keep_checkpoints = 2;
  double lr = 0, min_lr_ratio = 0.1, weight_decay = 0.1, clip = 1.0;
  bool data_parallel = false;
};

// --data-parallel: this process's share of every batch and the sums over MPI_COMM_WORLD
// (docs/distributed.md §6); null without the flag.
std::unique_ptr<lm::DataParallel> data_parallel(const TrainArgs& a) {
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
void check_same_parameters(const mf::ParameterList<float>& params) {
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
io::Checkpoint open_checkpoint(const std::string& resume, bool lead) {
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
std::string exact(double x) {
  std::ostringstream s;
  s << std::setprecision(std::numeric_limits<double>::max_digits10) << x;
  return s.str();
}

template <class Model>
int train_model(const TrainArgs& a, const io::TokenDataset& data, mf::ModelConfig config) {
  const std::unique_ptr<lm::DataParallel> parallel = data_parallel(a);
  const bool lead = parallel == nullptr || parallel->process == 0;  // prints and writes files
  const io::TokenSplit& train = data.train();
  const io::TokenSplit& val = data.val();
  const std::string log = a.log.empty() ? a.out + ".csv" : a.log;
  if (lead)
    for (const std::string& stale : checkpoints::remove_stale_temporaries({a.out, log}))
      std::cerr << "train: removed " << stale << ", left by a run that was killed while writing it\n";
  std::optional<io::Checkpoint> checkpoint;
  if (!a.resume.empty()) checkpoint = open_checkpoint(a.resume, lead);
  Model model = !checkpoint ? Model(config) : [&] {
    const io::SafetensorsFile& file = checkpoint->file();
    const std::string arch = io::load_arch(file);
    if (arch != Model::Block::kArch)
      throw UsageError("--resume = " + in_quotes(checkpoint->path()) + ": a checkpoint of arch " + in_quotes(arch) +
                       ", expected --arch " + a.model.arch);
    const std::string found = io::config_to_json(io::load_config(file)), want = io::config_to_json(config);
    if (found != want)
      throw UsageError("--resume = " + in_quotes(checkpoint->path()) + ": its config " + found +
                       " differs from the flags' " + want);
    check_dataset_matches(data, checkpoint->path(), config.vocab_size, metadata_or_empty(file, "tokenizer_checksum"));
    return for_argument("--resume", checkpoint->path(), [&] { return checkpoint->model<Model>(); });
  }();
  auto params = model.parameters();
  mf::AdamWOptions adam;
  adam.weight_decay = a.weight_decay;
  mf::AdamW<float> optimizer(params, adam);
  // The curve's rows so far and the running mean of the train loss since the last validation.
  std::string csv = "step,lr,train_loss,val_loss,val_bpb,tokens_per_s,seconds\n";
  double recent_loss = 0;
  int recent = 0;
  if (checkpoint)
    for_argument("--resume", checkpoint->path(), [&] {
      checkpoint->restore(optimizer, params);
      csv = checkpoint->state("curve");
      recent_loss = io::parse_json(checkpoint->state("recent_loss"), checkpoint->path(), "recent_loss").as_number();
      recent = static_cast<int>(io::parse_json(checkpoint->state("recent_steps"), checkpoint->path(), "recent_steps").as_int64());
    });
  const int first_step = static_cast<int>(optimizer.step_count()) + 1;
  if (first_step > a.steps + 1)
    throw UsageError("--steps = " + std::to_string(a.steps) + ": expected at least the checkpoint's step " +
                     std::to_string(first_step - 1));
  const double peak_lr = a.lr > 0 ? a.lr : (a.model.arch == "dense" ? 1e-3 : 3e-3);
  const int warmup = a.warmup >= 0 ? std::min(a.warmup, a.steps) : std::max(1, a.steps / 100);
  const mf::CosineSchedule schedule(peak_lr, std::min(warmup, std::max(a.steps, 1)), std::max(a.steps, 1),
                                    peak_lr * a.min_lr_ratio);
  const std::map<std::string, std::string> metadata = {{"tokenizer", data.meta().tokenizer},
                                                       {"tokenizer_checksum", data.meta().tokenizer_checksum},
                                                       {"train_seq", std::to_string(a.seq)}};
  if (lead)
    std::cerr << "train: " << a.model.arch << ", " << config.n_layers << " x " << config.d_model << ", vocab "
              << config.vocab_size << ", " << mf::parameter_count(params) << " parameters; " << train.size()
              << " train / " << val.size() << " val tokens; lr " << peak_lr << ", " << a.steps << " steps of "
              << a.batch << " x " << a.seq
              << (checkpoint ? "; resuming at step " + std::to_string(first_step) + " from " + checkpoint->path() : "")
              << (parallel ? " over " + std::to_string(parallel->processes) + " ranks" : "") << '\n';

  // The resumed curve is the checkpoint's: rows a killed run wrote past it are dropped.
  if (lead && checkpoint) for_argument("--log", log, [&] { io::write_file_atomically(log, csv); });
  const bool tty = lead && ::isatty(STDERR_FILENO) != 0;
  const auto t_start = std::chrono::steady_clock::now();
  double seconds = 0;
  lm::Evaluation last;
  int evaluated_at = -1;
  auto tokens_per_s = [&](int step) {
    return seconds > 0 ? static_cast<double>(step - first_step + 1) * a.batch * a.seq / seconds : 0.0;
  };
  // The checkpoint first, complete on its own; then the model file, for generate and eval; then
  // the checkpoints it supersedes go.
  auto save = [&] {
    if (!lead) return;
    const long step = optimizer.step_count();
    const std::string path = checkpoints::path_for(a.out, step);
    checkpoints::kill_point("before-checkpoint", step);
    for_argument("--out", path, [&] {
      io::save_checkpoint(path, model, optimizer, params,
                          {{"curve", csv}, {"recent_loss", exact(recent_loss)}, {"recent_steps", std::to_string(recent)}},
                          metadata);
    });
    checkpoints::kill_point("after-checkpoint", step);
    for_argument("--out", a.out, [&] { io::save_model(model, a.out, metadata); });
    checkpoints::kill_point("after-model", step);
    checkpoints::prune(a.out, step, a.keep_checkpoints);
  };
  const int last_step = a.stop_after > 0 ? std::min(a.steps, first_step - 1 + a.stop_after) : a.steps;
  const std::string rank_step = "rank" + std::to_string(parallel ? parallel->process : 0) + "-step";
  for (int step = first_step; step <= last_step; ++step) {
    checkpoints::kill_point(rank_step.c_str(), step);
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = schedule(step - 1);
    const double loss = [&] {
      try {
        return lm::train_step(model, params, optimizer, train, static_cast<std::uint64_t>(a.seed), step, a.batch,
                              a.seq, lr, a.clip, parallel.get());
      } catch (const std::runtime_error& e) {
        throw RunError(e.what(), kFailure);
      }
    }();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    recent_loss += loss;
    ++recent;
    if (tty) {
      const double eta = tokens_per_s(step) > 0 ? (a.steps - step) * double(a.batch) * a.seq / tokens_per_s(step) : 0;
      std::cerr << "\rstep " << step << '/' << a.steps << "  loss " << std::fixed << std::setprecision(3) << loss
                << "  " << std::setprecision(0) << tokens_per_s(step) << " tok/s  ETA " << eta << " s   "
                << std::defaultfloat << std::flush;
    }
    if (step % a.eval_every == 0 || step == a.steps) {
      last = lm::evaluate(model, val, a.seq, a.batch, static_cast<std::size_t>(a.eval_tokens));
      evaluated_at = step;
      const double bpb = lm::bits_per_byte(last, val);
      std::ostringstream row;
      row << std::setprecision(6) << step << ',' << lr << ',' << recent_loss / recent << ',' << last.loss() << ','
          << bpb << ',' << tokens_per_s(step) << ','
          << std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count() << '\n';
      csv += row.str();
      if (lead) for_argument("--log", log, [&] { io::write_file_atomically(log, csv); });
      if (lead) checkpoints::kill_point("after-log", step);
      if (lead)
        std::cerr << (tty ? "\n" : "") << "step " << step << ": train loss " << std::fixed << std::setprecision(4)
                  << recent_loss / recent << ", val loss " << last.loss() << ", val bpb " << bpb << ", "
                  << std::setprecision(0) << tokens_per_s(step) << " tok/s\n"
                  << std::defaultfloat;
      recent_loss = 0;
      recent = 0;
    }
    if ((a.save_every > 0 && step % a.save_every == 0) || step == last_step) save();
  }
  if (first_step > a.steps) save();  // nothing left to train: the checkpoint as it is
  if (evaluated_at != last_step)     // stopped between validations, or nothing trained
    last = lm::evaluate(model, val, a.seq, a.batch, static_cast<std::size_t>(a.eval_tokens));
  if (parallel) check_same_parameters(params);
  if (!lead) return 0;
  std::cout << std::setprecision(6) << "{" << metrics_json("val_", last, val) << ", \"tokens_per_s\": " << tokens_per_s(last_step)
            << ", \"steps\": " << std::max(last_step, first_step - 1) << ", \"arch\": \"" << a.model.arch << "\", \"lr\": " << peak_lr
            << ", \"seed\": " << a.seed << ", \"val_tokens\": " << last.tokens << "}" << std::endl;
  return 0;
}

// train's flags, in the order its --help lists them.
void add_train_flags(cli::Flags& f, TrainArgs& a) {
  f.add("--data", &a.data, "dataset folder (memoryformer tokenize)");
  a.model.add_to(f);
  f.add("--seq", &a.seq, "tokens per training sequence", 1, 1 << 16);
  f.add("--batch", &a.batch, "sequences per step", 1, 1 << 16);
  f.add("--steps", &a.steps, "optimizer steps in all (a resumed run counts the earlier ones)", 0, 1 << 30);
  f.add("--lr", &a.lr, "peak learning rate (0: 3e-3 MemoryFormer, 1e-3 dense)", 0, 10);
  f.add("--warmup", &a.warmup, "linear warmup steps (-1: 1% of steps)", -1, 1 << 30);
  f.add("--min-lr-ratio", &a.min_lr_ratio, "learning rate at the end of the cosine decay, over the peak", 0, 1);
  f.add("--weight-decay", &a.weight_decay, "AdamW decoupled weight decay", 0, 10);
  f.add("--clip", &a.clip, "gradient clipping by global norm", 1e-9, 1e9);
  f.add("--seed", &a.seed, "seed of weights and batches", 0, std::numeric_limits<int>::max());
  f.add("--out", &a.out, "model file to write (checkpoints go to FILE.ckpt-STEP)");
  f.add("--eval-every", &a.eval_every, "steps between validations", 1, 1 << 30);
  f.add("--eval-tokens", &a.eval_tokens, "val tokens each validation reads (0: all)", 0,
        std::numeric_limits<int>::max());
  f.add("--save-every", &a.save_every, "steps between checkpoints (0: only at the end)", 0, 1 << 30);
  f.add("--keep-checkpoints", &a.keep_checkpoints,
        "checkpoints kept, the newest (older ones are a fallback should the newest be damaged)", 1, 1 << 20);
  f.add("--resume", &a.resume,
        "continue with the same flags from the newest complete checkpoint of this --out (FILE.ckpt-STEP), or "
        "from the checkpoint file named");
  f.add("--stop-after", &a.stop_after,
        "stop with a checkpoint after this many steps of this run (0: run to --steps); --resume goes on", 0,
        1 << 30);
  f.add("--log", &a.log, "CSV of the validation curve (default: OUT.csv)");
  add_threads_flag(f, &a.threads);
  f.add("--data-parallel", &a.data_parallel,
        "under mpirun -np P: each rank takes its share of every batch and the gradients are summed over the "
        "ranks, which stay identical; rank 0 writes (docs/distributed.md)");
}

}  // namespace

int run_train(int argc, char** argv) {
  TrainArgs a;
  cli::Flags f(
      "memoryformer train --data data/ --arch memoryformer|dense --layers 2 --d-model 128 --heads 4 --tau 8 "
      "--seq 128 --batch 16 --steps 1000 --lr 5e-2 --seed 1 --out M.safetensors [--eval-every 100] "
      "[--save-every 500] [--resume M.safetensors]\n"
      "Trains a language model on a token dataset (tokenize). Writes a checkpoint (M.safetensors.ckpt-STEP: "
      "model, optimizer state and curve in one file) and the model at --save-every and at the end, and the "
      "validation curve to a CSV; the last "
      "stdout line is a JSON object with val_loss, val_ppl, val_bpb, tokens_per_s and steps.");
  add_train_flags(f, a);
  for (const char* name : {"--data", "--out"}) f.require(name);
  if (!f.parse(argc, argv)) return 0;
  mf::set_num_threads(a.threads);
  const io::TokenDataset data = open_dataset(a.data);
  for (const auto& [name, split] : {std::pair<const char*, const io::TokenSplit*>{"train", &data.train()},
                                    std::pair<const char*, const io::TokenSplit*>{"val", &data.val()}})
    if (split->size() < static_cast<std::size_t>(a.seq) + 1)
      throw UsageError("--seq = " + std::to_string(a.seq) + ": expected at most " +
                       std::to_string(split->size() > 0 ? split->size() - 1 : 0) + ", the " + name + " split of " +
                       in_quotes(a.data) + " has " + std::to_string(split->size()) + " tokens");
  const mf::ModelConfig config = a.model.config(data.meta().vocab_size, static_cast<std::uint64_t>(a.seed));
  for_argument("--d-model", std::to_string(a.model.d_model), [&] { config.validate(); });
  return a.model.arch == "dense" ? train_model<mf::DenseModel<float>>(a, data, config)
                                 : train_model<mf::MemoryFormerModel<float>>(a, data, config);
}

int run_eval(int argc, char** argv) {
  std::string weights, data_path, split_name = "val";
  int seq = 0, batch = 16, threads = 0;
  cli::Flags f(
      "memoryformer eval --weights M.safetensors --data data/ [--split val]\n"
      "Next-token loss over a whole split; the last stdout line is a JSON object with loss, ppl and bpb "
      "(bits per byte of the split's text).");
  f.add("--weights", &weights, "model file (memoryformer train)");
  f.add("--data", &data_path, "dataset folder (memoryformer tokenize)");
  f.add("--split", &split_name, "which split", {"val", "train"});
  f.add("--seq", &seq, "tokens per window (0: the training --seq the model file records)", 0, 1 << 16);
  f.add("--batch", &batch, "windows per forward", 1, 1 << 16);
  add_threads_flag(f, &threads);
  for (const char* name : {"--weights", "--data"}) f.require(name);
  if (!f.parse(argc, argv)) return 0;
  mf::set_num_threads(threads);
  const io::TokenDataset data = open_dataset(data_path);
  const io::SafetensorsFile file = open_file("--weights", weights);
  return with_model("--weights", file, io::Weights::map, [&](const auto& model) {
    check_dataset_matches(data, weights, model.config().vocab_size, metadata_or_empty(file, "tokenizer_checksum"));
    const std::string recorded = metadata_or_empty(file, "train_seq");
    const std::optional<long long> recorded_seq = recorded.empty() ? 128 : parse_integer(recorded);
    if (seq == 0 && (!recorded_seq || *recorded_seq < 1 || *recorded_seq > (1 << 16)))
      throw RunError("--weights = " + in_quotes(weights) + ": __metadata__.train_seq = " + in_quotes(recorded) +
                         ": expected an integer in [1, 65536] (or pass --seq)",
                     kMalformedFile);
    const int window = seq > 0 ? seq : static_cast<int>(*recorded_seq);
    const io::TokenSplit& split = data.split(split_name);
    const lm::Evaluation e = lm::evaluate(model, split, window, batch);
    if (e.tokens == 0)
      throw UsageError("--split = " + split_name + ": the split of " + in_quotes(data_path) +
                       " has fewer than 2 tokens, nothing to predict");
    std::cout << "{" << metrics_json("", e, split) << ", \"tokens\": " << e.tokens << ", \"split\": \"" << split_name
              << "\"}" << std::endl;
    return 0;
  });
}

}  // namespace tool
