// Trains a character-level (byte-level) language model on a real text corpus, MemoryFormer or the
// dense Transformer of the same shape, and reports how well it predicts held-out text.
//
//   train_char_lm [--arch memoryformer|dense] [--corpus FILE] [--steps N] ... (--help lists all)
//
// Default corpus: the text files of Debian's `fortunes` package (/usr/share/games/fortunes, the
// "%" separator lines removed). The last 10% of the corpus is held out for validation. Progress
// goes to stderr; stdout gets the optional sample and, as its last line, one JSON object with the
// results (losses in nats per character; bpc = bits per character).
//
// Exit status: 0 on success, 1 for a failure at run time (corpus, library error), 2 for a bad
// command line.
#include "cli.hpp"
#include "freed_memory.hpp"
#include "lm_training.hpp"
#include "model_flags.hpp"

#include <memoryformer/io/checkpoint.hpp>
#include <memoryformer/io/model_file.hpp>
#include <memoryformer/memoryformer.hpp>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace mf = memoryformer;
namespace fs = std::filesystem;

namespace {

constexpr const char* kFortunesDir = "/usr/share/games/fortunes";

struct Args {
  std::string corpus;     // empty: the fortunes files
  cli::ModelFlags model;  // --arch, the shape and the variants (the memoryformer tool's train has the same)
  int seq = 64, batch = 16, steps = 300;
  double lr = 0;    // 0: the paper's, 3e-3 for MemoryFormer and 1e-3 for dense
  int warmup = -1;  // -1: 1% of the steps (at least 1)
  double min_lr = 3e-5, weight_decay = 0.1, clip = 1.0;
  int seed = 1, threads = 0, eval_every = 50, eval_batches = 8;
  int sample = 0;
  std::string prompt = "The ";
  double sample_temperature = 0.8;
  int top_k = 0;
  std::string log;
  std::string save, load;
};

Args parse_args(int argc, char** argv, bool& help) {
  Args a;
  cli::Flags f("train_char_lm [flags]");
  f.add("--corpus", &a.corpus, "training text, any bytes (default: Debian's fortunes files)");
  a.model.add_to(f);
  f.add("--seq", &a.seq, "tokens per training sequence", 1, 1 << 16);
  f.add("--batch", &a.batch, "sequences per step", 1, 1 << 16);
  f.add("--steps", &a.steps, "optimizer steps", 0, 1 << 30);
  f.add("--lr", &a.lr, "peak learning rate (0: 3e-3 MemoryFormer, 1e-3 dense)", 0, 10);
  f.add("--warmup", &a.warmup, "linear warmup steps (-1: 1% of steps)", -1, 1 << 30);
  f.add("--min-lr", &a.min_lr, "learning rate at the end of the cosine decay", 0, 10);
  f.add("--weight-decay", &a.weight_decay, "AdamW decoupled weight decay (tables, embedding, weights)", 0,
        10);
  f.add("--clip", &a.clip, "gradient clipping by global norm", 1e-9, 1e9);
  f.add("--seed", &a.seed, "seed of weights, batches and sampling", 0, 1 << 30);
  f.add("--threads", &a.threads, "threads (0: all cores)", 0, 1024);
  f.add("--eval-every", &a.eval_every, "steps between validation runs", 1, 1 << 30);
  f.add("--eval-batches", &a.eval_batches, "batches of held-out text per validation", 1, 1 << 20);
  f.add("--sample", &a.sample, "characters to generate after training", 0, 1 << 20);
  f.add("--prompt", &a.prompt, "start of the sample");
  f.add("--sample-temperature", &a.sample_temperature, "sampling temperature (0: greedy)", 0, 100);
  f.add("--top-k", &a.top_k, "sample from the k most likely characters (0: all)", 0, 256);
  f.add("--log", &a.log, "CSV of the validation curve, rewritten atomically at every validation");
  f.add("--save", &a.save,
        "safetensors file of the model, written at every validation, after a checkpoint (model and optimizer "
        "state in one file) to FILE.ckpt");
  f.add(
      "--load", &a.load,
      "start from this model file (its shape flags win); with FILE.ckpt beside it, resume where it stopped");
  help = !f.parse(argc, argv);
  if (help) return a;
  a.model.check();
  if (a.prompt.empty()) throw cli::UsageError("--prompt: expected at least one character");
  return a;
}

// ---- Corpus ----------------------------------------------------------------------------------------

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open corpus file " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  if (!in.good() && !in.eof()) throw std::runtime_error("cannot read corpus file " + path.string());
  return s.str();
}

// The fortunes text files in name order (the .dat index files and .u8 links skipped), with the
// lines that only hold the "%" separator removed.
std::string read_fortunes() {
  std::error_code ec;
  if (!fs::is_directory(kFortunesDir, ec))
    throw std::runtime_error(std::string("the default corpus ") + kFortunesDir +
                             " is missing: install Debian's fortunes package (apt-get install fortunes) "
                             "or pass --corpus FILE");
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(kFortunesDir))
    if (entry.is_regular_file() && !entry.is_symlink() && entry.path().extension() != ".dat")
      files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  std::string text;
  for (const fs::path& file : files) {
    std::istringstream lines(read_file(file));
    for (std::string line; std::getline(lines, line);)
      if (line != "%") text += line + '\n';
  }
  if (text.empty()) throw std::runtime_error(std::string("no fortunes text found in ") + kFortunesDir);
  return text;
}

// Tokens are bytes: a model file works for any text, and the command-line tool can prompt it.
constexpr int kVocab = 256;

int distinct_bytes(const std::string& text) {
  std::array<bool, 256> seen{};
  for (unsigned char c : text) seen[c] = true;
  return static_cast<int>(std::count(seen.begin(), seen.end(), true));
}

// Entropy in bits of the byte frequencies of `ids`: the bpc of the best model that ignores context.
double unigram_bpc(const std::vector<std::int32_t>& ids, int vocab) {
  std::vector<double> counts(static_cast<std::size_t>(vocab), 0.0);
  for (std::int32_t t : ids) counts[static_cast<std::size_t>(t)] += 1;
  double h = 0;
  for (double c : counts)
    if (c > 0) h -= c / ids.size() * std::log2(c / ids.size());
  return h;
}

// ---- Reporting ---------------------------------------------------------------------------------------

struct Point {
  int step;
  double lr, train_loss, val_loss, tokens_per_s, seconds;
};

void write_log(const std::string& path, const std::vector<Point>& curve, const std::string& arch) {
  std::ostringstream csv;
  csv << "arch,step,lr,train_loss,val_loss,val_bpc,tokens_per_s,seconds\n" << std::setprecision(6);
  for (const Point& p : curve)
    csv << arch << ',' << p.step << ',' << p.lr << ',' << p.train_loss << ',' << p.val_loss << ','
        << p.val_loss / std::log(2.0) << ',' << p.tokens_per_s << ',' << p.seconds << '\n';
  mf::io::write_file_atomically(path, csv.str());
}

void show_progress(bool tty, int step, int steps, double loss, double tokens_per_s) {
  if (!tty) return;
  const int width = 30, filled = steps > 0 ? width * step / steps : width;
  std::cerr << "\r[" << std::string(static_cast<std::size_t>(filled), '#')
            << std::string(static_cast<std::size_t>(width - filled), ' ') << "] step " << step << '/' << steps
            << "  loss " << std::fixed << std::setprecision(3) << loss << "  " << std::setprecision(0)
            << tokens_per_s << " tok/s   " << std::defaultfloat << std::flush;
}

// ---- Training ----------------------------------------------------------------------------------------

// The corpus as byte ids: the first 90% to train on, the last 10% held out.
struct Corpus {
  std::string text;
  std::vector<std::int32_t> ids, train, val;
};

Corpus read_corpus(const Args& a) {
  Corpus c;
  c.text = a.corpus.empty() ? read_fortunes() : read_file(a.corpus);
  c.ids.assign(reinterpret_cast<const unsigned char*>(c.text.data()),
               reinterpret_cast<const unsigned char*>(c.text.data()) + c.text.size());
  const std::size_t split = c.ids.size() - c.ids.size() / 10;
  c.train.assign(c.ids.begin(), c.ids.begin() + static_cast<std::ptrdiff_t>(split));
  c.val.assign(c.ids.begin() + static_cast<std::ptrdiff_t>(split), c.ids.end());
  const std::size_t window = static_cast<std::size_t>(a.seq) + 1;
  if (c.train.size() < window || c.val.size() < window)
    throw std::runtime_error("corpus of " + std::to_string(c.ids.size()) + " bytes is too short for --seq " +
                             std::to_string(a.seq) + ": each 90%/10% part needs at least seq + 1 bytes");
  return c;
}

// Held-out loss over consecutive windows from the start of the validation text, --eval-batches
// batches of them at the most.
template <class Model>
double validate(const Model& model, const std::vector<std::int32_t>& val_ids, const Args& a) {
  std::vector<std::size_t> val_starts;
  for (std::size_t s = 0; s + static_cast<std::size_t>(a.seq) + 1 <= val_ids.size() &&
                          val_starts.size() < std::size_t(a.eval_batches) * a.batch;
       s += static_cast<std::size_t>(a.seq))
    val_starts.push_back(s);
  double total = 0;
  mf::TokenMatrix tokens, targets;
  for (std::size_t begin = 0; begin < val_starts.size(); begin += static_cast<std::size_t>(a.batch)) {
    const std::vector<std::size_t> starts(
        val_starts.begin() + static_cast<std::ptrdiff_t>(begin),
        val_starts.begin() + static_cast<std::ptrdiff_t>(std::min(val_starts.size(), begin + a.batch)));
    lm::fill_batch(val_ids, starts, a.seq, tokens, targets);
    total += static_cast<double>(mf::cross_entropy<float>(model.forward(tokens), targets)) * starts.size();
  }
  return total / static_cast<double>(val_starts.size());
}

// The model to train: --load's checkpoint FILE.ckpt where there is one (with the optimizer state
// it restores), else --load's model file, else a new one of `config`.
template <class Model>
Model starting_model(const Args& a, const mf::ModelConfig& config, std::optional<mf::io::Checkpoint>& checkpoint) {
  // A checkpoint holds the model and the optimizer state of one step, written as one file.
  const std::string checkpoint_path = a.load + ".ckpt";
  if (!a.load.empty() && fs::exists(checkpoint_path)) checkpoint = mf::io::Checkpoint::open(checkpoint_path);
  Model model = checkpoint ? checkpoint->model<Model>()
                           : a.load.empty() ? Model(config) : mf::io::load_model<Model>(a.load);
  if (model.config().vocab_size != kVocab)
    throw std::runtime_error(a.load + ": vocab_size " + std::to_string(model.config().vocab_size) +
                             ", expected " + std::to_string(kVocab) + " (a byte-level model)");
  return model;
}

void print_start(const Args& a, const mf::ModelConfig& c, const mf::Context& ctx,
                 const mf::ParameterList<float>& params, const Corpus& corpus, double unigram, double peak_lr,
                 int warmup) {
  std::cerr << "train_char_lm: " << a.model.arch << ", " << c.n_layers << " layers, d_model " << c.d_model << ", "
            << c.n_heads << " heads"
            << (a.model.arch == "memoryformer"
                    ? ", tau " + std::to_string(c.tau) + ", e " + std::to_string(c.expand_bits) + ", score " +
                          mf::to_string(c.score)
                    : std::string())
            << "; " << mf::parameter_count(params) << " parameters (" << mf::table_bytes(params) / 1048576.0
            << " MiB of tables)\n"
            << "corpus: " << corpus.ids.size() << " bytes, " << distinct_bytes(corpus.text) << " distinct, "
            << corpus.train.size() << " train / " << corpus.val.size() << " validation; unigram entropy " << unigram
            << " bpc\n"
            << "kernels: " << mf::to_string(ctx.kernel_path()) << ", " << ctx.num_threads() << " threads; lr "
            << peak_lr << ", warmup " << warmup << ", " << a.steps << " steps of " << a.batch << " x " << a.seq
            << " tokens\n";
}

// --sample characters after --prompt, on stdout.
template <class Model>
void print_sample(const Model& model, const Args& a) {
  const std::vector<std::int32_t> prompt(
      reinterpret_cast<const unsigned char*>(a.prompt.data()),
      reinterpret_cast<const unsigned char*>(a.prompt.data()) + a.prompt.size());
  mf::SamplingOptions sampling;
  sampling.temperature = a.sample_temperature;
  sampling.top_k = a.top_k;
  sampling.seed = static_cast<std::uint64_t>(a.seed);
  std::string sample;
  for (std::int32_t t : mf::generate(model, prompt, a.sample, sampling)) sample += static_cast<char>(t);
  std::cout << sample << '\n';
}

// The results, the last line of stdout.
void print_json(const Args& a, const mf::ModelConfig& c, const mf::Context& ctx,
                const mf::ParameterList<float>& params, const Point& last, double val_loss, double unigram,
                double tokens_per_s, double peak_lr) {
  std::ostringstream json;
  json << std::setprecision(6) << "{\"arch\": \"" << a.model.arch << "\", \"step\": " << a.steps
       << ", \"train_loss\": " << (std::isfinite(last.train_loss) ? std::to_string(last.train_loss) : "null")
       << ", \"val_loss\": " << val_loss << ", \"val_bpc\": " << val_loss / std::log(2.0)
       << ", \"unigram_bpc\": " << unigram << ", \"tokens_per_s\": " << tokens_per_s
       << ", \"params\": " << mf::parameter_count(params) << ", \"table_bytes\": " << mf::table_bytes(params)
       << ", \"layers\": " << c.n_layers << ", \"d_model\": " << c.d_model << ", \"heads\": " << c.n_heads
       << ", \"tau\": " << c.tau << ", \"expand_bits\": " << c.expand_bits << ", \"score\": \"" << c.score
       << "\", \"temperature\": " << c.temperature << ", \"seq\": " << a.seq << ", \"batch\": " << a.batch
       << ", \"lr\": " << peak_lr << ", \"seed\": " << a.seed << ", \"threads\": " << ctx.num_threads()
       << ", \"vocab\": " << kVocab
       << ", \"corpus\": " << mf::io::json_quote(a.corpus.empty() ? kFortunesDir : a.corpus) << "}";
  std::cout << json.str() << std::endl;
}

template <class Model>
int train(const Args& a, mf::ModelConfig config) {
  const auto wall_start = std::chrono::steady_clock::now();
  const Corpus corpus = read_corpus(a);
  std::optional<mf::io::Checkpoint> checkpoint;
  Model model = starting_model<Model>(a, config, checkpoint);
  const mf::Context ctx(a.threads);
  model.set_context(ctx);
  auto params = model.parameters();
  mf::AdamW<float> optimizer = lm::adamw_on(params, a.weight_decay, ctx);
  if (checkpoint) checkpoint->restore(optimizer, params);
  const int first_step = static_cast<int>(optimizer.step_count()) + 1;
  if (first_step > a.steps + 1)
    throw std::runtime_error(a.load + ".ckpt is at step " + std::to_string(first_step - 1) +
                             ", past --steps " + std::to_string(a.steps));
  const double peak_lr = a.lr > 0 ? a.lr : (a.model.arch == "dense" ? 1e-3 : 3e-3);
  const int warmup = a.warmup >= 0 ? a.warmup : std::max(1, a.steps / 100);
  const mf::CosineSchedule schedule(peak_lr, warmup, std::max(a.steps, 1), std::min(a.min_lr, peak_lr));
  const double unigram = unigram_bpc(corpus.train, kVocab);
  print_start(a, model.config(), ctx, params, corpus, unigram, peak_lr, warmup);

  lm::TrainOptions o;  // validation (and saving) every --eval-every steps and at the last
  o.first_step = first_step;
  o.last_step = o.steps = a.steps;
  o.batch = a.batch;
  o.seq = a.seq;
  o.seed = static_cast<std::uint64_t>(a.seed);  // batches are a function of (seed, step): a resumed run
  o.clip = a.clip;                              // sees the batches it would have seen
  o.eval_every = o.save_every = a.eval_every;
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  std::vector<Point> curve;
  double val_loss = std::nan("");
  lm::TrainHooks hooks;
  hooks.after_step = [&](const lm::Progress& p) { show_progress(tty, p.step, a.steps, p.loss, p.tokens_per_s); };
  hooks.validate = [&](const lm::Progress& p) {
    val_loss = validate(model, corpus.val, a);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    curve.push_back({p.step, p.lr, p.running.mean(), val_loss, p.tokens_per_s, elapsed});
    if (tty) std::cerr << '\n';
    std::cerr << "step " << p.step << ": train " << std::fixed << std::setprecision(4) << p.running.mean()
              << ", val " << val_loss << " nats (" << val_loss / std::log(2.0) << " bpc), " << std::setprecision(0)
              << p.tokens_per_s << " tok/s\n"
              << std::defaultfloat;
    if (!a.log.empty()) write_log(a.log, curve, a.model.arch);
  };
  if (!a.save.empty())
    hooks.save = [&](const lm::Progress&) {
      mf::io::save_checkpoint(a.save + ".ckpt", model, optimizer, params, {}, {{"tokenizer", "bytes"}});
      mf::io::save_model(model, a.save, {{"tokenizer", "bytes"}});
    };
  if (checkpoint) std::cerr << "resuming " << a.load << " at step " << first_step << '\n';
  const lm::Progress end = lm::train(model, params, optimizer, corpus.train, schedule, o, hooks);
  if (curve.empty()) val_loss = validate(model, corpus.val, a);

  if (a.sample > 0) print_sample(model, a);
  const Point last = curve.empty() ? Point{0, 0, std::nan(""), val_loss, 0, 0} : curve.back();
  print_json(a, model.config(), ctx, params, last, val_loss, unigram, end.tokens_per_s, peak_lr);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  keep_freed_memory();  // each step allocates its activations again
  Args a;
  try {
    bool help = false;
    a = parse_args(argc, argv, help);
    if (help) return 0;
  } catch (const cli::UsageError& e) {
    std::cerr << "train_char_lm: " << e.what() << "\n(see train_char_lm --help)\n";
    return 2;
  }
  try {
    const mf::ModelConfig config = a.model.config(kVocab, static_cast<std::uint64_t>(a.seed));
    config.validate();  // before the corpus is read: a bad shape is reported at once
    return a.model.arch == "dense" ? train<mf::DenseModel<float>>(a, config)
                                   : train<mf::MemoryFormerModel<float>>(a, config);
  } catch (const std::exception& e) {
    std::cerr << "\ntrain_char_lm: " << e.what() << '\n';
    return 1;
  }
}
