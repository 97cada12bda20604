// memoryformer train and eval: a language model trained on a token dataset by lm::train, with
// checkpoints that a killed run resumes from bit for bit (docs/training.md, "Checkpoints"), alone
// or data-parallel over mpirun's ranks (docs/distributed.md §6); and a model's loss over a split.
#include "checkpoints.hpp"
#include "commands.hpp"
#include "common/cli.hpp"
#include "common/errors.hpp"
#include "common/lm_training.hpp"
#include "common/model_files.hpp"
#include "common/model_flags.hpp"
#include "train_run.hpp"

#include <memoryformer/io/checkpoint.hpp>
#include <memoryformer/io/model_file.hpp>
#include <memoryformer/memoryformer.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

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

// --resume's model, checked to be the one the flags and the dataset would train.
template <class Model>
Model resumed_model(const TrainArgs& a, const io::TokenDataset& data, const mf::ModelConfig& config,
                    const io::Checkpoint& checkpoint) {
  const io::SafetensorsFile& file = checkpoint.file();
  const std::string arch = io::load_arch(file);
  if (arch != Model::Block::kArch)
    throw UsageError("--resume = " + in_quotes(checkpoint.path()) + ": a checkpoint of arch " + in_quotes(arch) +
                     ", expected --arch " + a.model.arch);
  const std::string found = io::config_to_json(io::load_config(file)), want = io::config_to_json(config);
  if (found != want)
    throw UsageError("--resume = " + in_quotes(checkpoint.path()) + ": its config " + found +
                     " differs from the flags' " + want);
  check_dataset_matches(data, checkpoint.path(), config.vocab_size, metadata_or_empty(file, "tokenizer_checksum"));
  return for_argument("--resume", checkpoint.path(), [&] { return checkpoint.model<Model>(); });
}

// Restores AdamW's state and the curve (`csv`) from the checkpoint; returns the running train loss
// it carried, so that the resumed run reports the means the uninterrupted one would.
lm::RunningLoss restore(const io::Checkpoint& c, mf::AdamW<float>& optimizer, const mf::ParameterList<float>& params,
                        std::string& csv) {
  return for_argument("--resume", c.path(), [&] {
    c.restore(optimizer, params);
    csv = c.state("curve");
    lm::RunningLoss running;
    running.sum = io::parse_json(c.state("recent_loss"), c.path(), "recent_loss").as_number();
    running.steps = static_cast<int>(io::parse_json(c.state("recent_steps"), c.path(), "recent_steps").as_int64());
    return running;
  });
}

// The steps of this run, from the checkpoint's next (`first_step`) to --steps or --stop-after's
// end, and when it validates and saves.
lm::TrainOptions train_options(const TrainArgs& a, int first_step, const lm::DataParallel* parallel) {
  if (first_step > a.steps + 1)
    throw UsageError("--steps = " + std::to_string(a.steps) + ": expected at least the checkpoint's step " +
                     std::to_string(first_step - 1));
  lm::TrainOptions o;
  o.first_step = first_step;
  o.last_step = a.stop_after > 0 ? std::min(a.steps, first_step - 1 + a.stop_after) : a.steps;
  o.steps = a.steps;
  o.batch = a.batch;
  o.seq = a.seq;
  o.seed = static_cast<std::uint64_t>(a.seed);
  o.clip = a.clip;
  o.eval_every = a.eval_every;
  o.save_every = a.save_every;
  o.parallel = parallel;
  return o;
}

// --lr, or the paper's peak for the arch.
double peak_lr(const TrainArgs& a) { return a.lr > 0 ? a.lr : (a.model.arch == "dense" ? 1e-3 : 3e-3); }

// Linear warmup (--warmup, or 1% of the steps) to the peak, then a cosine down to --min-lr-ratio of it.
mf::CosineSchedule schedule(const TrainArgs& a) {
  const int warmup = a.warmup >= 0 ? std::min(a.warmup, a.steps) : std::max(1, a.steps / 100);
  return mf::CosineSchedule(peak_lr(a), std::min(warmup, std::max(a.steps, 1)), std::max(a.steps, 1),
                            peak_lr(a) * a.min_lr_ratio);
}

// The line train starts with: the model, the data, the schedule and where it resumes from.
void print_start(const TrainArgs& a, const io::TokenDataset& data, const mf::ModelConfig& config,
                 const mf::ParameterList<float>& params, int first_step, const io::Checkpoint* checkpoint,
                 const lm::DataParallel* parallel) {
  std::cerr << "train: " << a.model.arch << ", " << config.n_layers << " x " << config.d_model << ", vocab "
            << config.vocab_size << ", " << mf::parameter_count(params) << " parameters; " << data.train().size()
            << " train / " << data.val().size() << " val tokens; lr " << peak_lr(a) << ", " << a.steps
            << " steps of " << a.batch << " x " << a.seq
            << (checkpoint ? "; resuming at step " + std::to_string(first_step) + " from " + checkpoint->path() : "")
            << (parallel ? " over " + std::to_string(parallel->processes) + " ranks" : "") << '\n';
}

template <class Model>
int train_model(const TrainArgs& a, const io::TokenDataset& data, const mf::ModelConfig& config) {
  const std::unique_ptr<lm::DataParallel> parallel = data_parallel(a);
  const bool lead = parallel == nullptr || parallel->process == 0;  // prints and writes files
  if (lead)
    for (const std::string& stale : checkpoints::remove_stale_temporaries({a.out, curve_path(a)}))
      std::cerr << "train: removed " << stale << ", left by a run that was killed while writing it\n";
  std::optional<io::Checkpoint> checkpoint;
  if (!a.resume.empty()) checkpoint = open_checkpoint(a.resume, lead);
  Model model = checkpoint ? resumed_model<Model>(a, data, config, *checkpoint) : Model(config);
  const mf::Context ctx(a.threads);
  model.set_context(ctx);
  auto params = model.parameters();
  mf::AdamW<float> optimizer = lm::adamw_on(params, a.weight_decay, ctx);
  TrainRecorder<Model> rec(a, data, model, optimizer, params, lead);
  lm::RunningLoss running;  // the train loss since the last validation, as the checkpoint left it
  if (checkpoint) running = restore(*checkpoint, optimizer, params, rec.csv);
  const lm::TrainOptions o = train_options(a, static_cast<int>(optimizer.step_count()) + 1, parallel.get());
  if (lead) print_start(a, data, config, params, o.first_step, checkpoint ? &*checkpoint : nullptr, parallel.get());
  // The resumed curve is the checkpoint's: rows a killed run wrote past it are dropped.
  if (lead && checkpoint) rec.write_curve();
  rec.tty = lead && ::isatty(STDERR_FILENO) != 0;
  const std::string rank_step = "rank" + std::to_string(parallel ? parallel->process : 0) + "-step";
  lm::TrainHooks hooks;
  hooks.before_step = [&](int step) { checkpoints::kill_point(rank_step.c_str(), step); };
  hooks.after_step = [&](const lm::Progress& p) { rec.show(p); };
  hooks.validate = [&](const lm::Progress& p) { rec.validate(p); };
  hooks.save = [&](const lm::Progress& p) { rec.save(p.running); };
  rec.start = std::chrono::steady_clock::now();
  const lm::Progress end = lm::train(model, params, optimizer, data.train(), schedule(a), o, hooks, running);
  if (o.first_step > a.steps) rec.save(running);  // nothing left to train: the checkpoint as it is
  if (end.validated_at != o.last_step)            // stopped between validations, or nothing trained
    rec.last = lm::evaluate(model, data.val(), a.seq, a.batch, static_cast<std::size_t>(a.eval_tokens));
  if (parallel) check_same_parameters(params);
  if (!lead) return 0;
  std::cout << std::setprecision(6) << "{" << metrics_json("val_", rec.last, data.val())
            << ", \"tokens_per_s\": " << end.tokens_per_s << ", \"steps\": " << std::max(o.last_step, o.first_step - 1)
            << ", \"arch\": \"" << a.model.arch << "\", \"lr\": " << peak_lr(a) << ", \"seed\": " << a.seed
            << ", \"val_tokens\": " << rec.last.tokens << "}" << std::endl;
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
  const io::TokenDataset data = open_dataset(data_path);
  const io::SafetensorsFile file = open_file("--weights", weights);
  return with_model("--weights", file, io::Weights::map, mf::Context(threads), [&](const auto& model) {
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
