// memoryformer: model files (docs/method.md §5 safetensors) from the command line.
//
//   memoryformer logits   --weights M --tokens 3,1,4 --out L.safetensors
//   memoryformer generate --weights M (--prompt TEXT | --tokens 3,1,4) [--max-new N] [--temperature T]
//                         [--top-k K] [--seed S]
//   memoryformer inspect  M
//   memoryformer convert  --tables bf16|int8|fp32 --weights IN --out OUT
//   memoryformer init     --config tiny|small|base|FILE.json --tables fp32|bf16|int8 --seed 1 --out M
//
// Real text (docs/training.md, "Subword text"), SentencePiece needed for the first two:
//   memoryformer tokenizer-train --input corpus.txt --vocab-size 4000 --out tok.model
//   memoryformer tokenize --tokenizer tok.model --input corpus.txt --out data/ --val-fraction 0.1
//   memoryformer train    --data data/ --arch memoryformer --steps 1000 --out M [--resume M]
//   memoryformer eval     --weights M --data data/ [--split val]
//   memoryformer generate --weights M --tokenizer tok.model --prompt TEXT [--top-p P]
//
// Every command is a thin layer over the library: io::load_model, Model::forward, generate,
// io::save_model and the safetensors reader and writer; `memoryformer COMMAND --help` lists flags.
// Without --tokenizer, text is tokenised as bytes (vocab 256), as examples/train_char_lm does;
// models of another vocab take a --tokenizer or token ids (--tokens).
//
// Exit status, by the kind of the error (its type, never its message):
//   0  success
//   1  any other failure at run time
//   2  a bad command line (unknown flag, malformed value, token outside the model's vocabulary)
//   3  a file-system error (mf::FileError): a file that cannot be opened, read, mapped or written
//   4  a malformed file (mf::FormatError): not safetensors, a tensor or metadata entry that breaks
//      the format or docs/method.md §5, a checksum mismatch (inspect included)
// Messages go to stderr and name the argument, the value and what was expected. Output files are
// written atomically, and only once everything they hold has been computed.
#include "checkpoints.hpp"
#include "cli.hpp"
#include "corpus.hpp"
#include "freed_memory.hpp"
#include "lm_training.hpp"
#if MF_HAVE_SENTENCEPIECE
#include "tokenizer.hpp"
#endif

#include <memoryformer/io/checkpoint.hpp>
#include <memoryformer/io/model_file.hpp>
#include <memoryformer/memoryformer.hpp>
#if MF_HAVE_MPI
#include <memoryformer/distributed/gradient_sum.hpp>
#include <memoryformer/distributed/sharded_loading.hpp>
#endif

#include <unistd.h>

#include <chrono>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iomanip>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace mf = memoryformer;
namespace io = memoryformer::io;

namespace {

using cli::UsageError;

// Exit statuses (the top of this file).
enum Status : int { kFailure = 1, kUsage = 2, kFileSystem = 3, kMalformedFile = 4 };

// The status of a library error, by its kind.
int status_of(const mf::Error& e) {
  if (dynamic_cast<const mf::FileError*>(&e) != nullptr) return kFileSystem;
  if (dynamic_cast<const mf::FormatError*>(&e) != nullptr) return kMalformedFile;
#if MF_HAVE_MPI
  if (const auto* d = dynamic_cast<const mf::distributed::DistributedError*>(&e)) {
    switch (d->kind()) {
      case mf::distributed::ErrorKind::file:
        return kFileSystem;
      case mf::distributed::ErrorKind::format:
        return kMalformedFile;
      case mf::distributed::ErrorKind::argument:
      case mf::distributed::ErrorKind::other:
        break;
    }
  }
#endif
  return kFailure;
}

// Whether every rank of a sharded run threw `e` alike.
bool is_agreed(const mf::Error& e) {
#if MF_HAVE_MPI
  return dynamic_cast<const mf::distributed::DistributedError*>(&e) != nullptr;
#else
  (void)e;
  return false;
#endif
}

// A failure at run time, its message already naming the argument it concerns, and its status.
class RunError : public std::runtime_error {
 public:
  RunError(const std::string& message, int status, bool agreed = false)
      : std::runtime_error(message), status_(status), agreed_(agreed) {}
  int status() const { return status_; }
  // Whether every rank of a sharded run threw it alike (distributed::DistributedError).
  bool agreed() const { return agreed_; }

 private:
  int status_;
  bool agreed_;
};

std::string in_quotes(const std::string& s) { return '"' + s + '"'; }

// The whole of `text` as a decimal integer, or nothing.
std::optional<long long> parse_integer(const std::string& text) {
  long long value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Runs `step`; a library error becomes a RunError that names the argument and value it concerns
// and keeps the status of the error's kind.
template <class Step>
auto for_argument(const std::string& arg, const std::string& value, Step step) -> decltype(step()) {
  try {
    return step();
  } catch (const mf::Error& e) {
    throw RunError(arg + " = " + in_quotes(value) + ": " + e.what(), status_of(e), is_agreed(e));
  }
}

io::SafetensorsFile open_file(const std::string& arg, const std::string& path,
                              io::Checksums checksums = io::Checksums::verify) {
  return for_argument(arg, path, [&] { return io::SafetensorsFile::open(path, checksums); });
}

// ---- sharded runs (--shard tables, docs/distributed.md)

#if MF_HAVE_MPI
// MPI_COMM_WORLD, MPI started on first use and finalised at exit: under mpirun the ranks of the
// job, without it one process of rank 0.
const mf::distributed::Communicator& world() {
  static mf::distributed::MpiSession session;
  static const mf::distributed::Communicator comm;
  return comm;
}
bool mpi_started() {
  int started = 0;
  MPI_Initialized(&started);
  return started != 0;
}
#endif

// The model file of logits and generate. Sharded, every rank opens it together, so that an error is
// thrown on every rank and printed once, and each verifies its part of the checksums as it loads.
io::SafetensorsFile open_model_file(const std::string& arg, const std::string& path, bool sharded) {
#if MF_HAVE_MPI
  if (sharded) return for_argument(arg, path, [&] { return mf::distributed::open_sharded_file(path, world()); });
#else
  (void)sharded;
#endif
  return open_file(arg, path);
}

// Whether this process prints a sharded command's output: rank 0 alone, or any process unsharded.
bool prints_output(bool sharded) {
#if MF_HAVE_MPI
  return !sharded || world().rank() == 0;
#else
  (void)sharded;
  return true;
#endif
}

void add_shard_flag(cli::Flags& f, std::string* shard) {
  f.add("--shard", shard,
        "none, or tables: run under mpirun -np P with every Memory Layer's tables and the LM head split "
        "over the P ranks, each loading only its part (docs/distributed.md)");
}

// --shard's value: true for "tables", false for "none"; anything else, or "tables" in a build
// without MPI, is refused.
bool sharded(const std::string& shard) {
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
// (distributed::load_sharded_model): f's model then computes with all ranks.
template <class F>
int with_model(const std::string& arg, const io::SafetensorsFile& file, io::Weights how, F f,
               bool sharded = false) {
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
    return f(model);
  }
  // Any other arch is reported by load_model, naming the ones it knows.
  auto model =
      for_argument(arg, file.path(), [&] { return load(static_cast<mf::MemoryFormerModel<float>*>(nullptr)); });
  return f(model);
}

// "3,1,4" -> {3, 1, 4}. Syntax only; check_vocab() checks the range once the model is known.
std::vector<long long> parse_token_list(const std::string& arg, const std::string& text) {
  std::vector<long long> ids;
  std::size_t begin = 0;
  while (true) {
    const std::size_t end = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, end - begin);
    long long id = 0;
    const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
    if (item.empty() || ec != std::errc() || ptr != item.data() + item.size())
      throw UsageError(
          arg + " = " + in_quotes(text) + ": expected comma-separated integer token ids such as 3,1,4" +
          (text.empty() ? std::string(", at least one") : ", but " + in_quotes(item) + " is not one"));
    ids.push_back(id);
    if (end == text.size()) return ids;
    begin = end + 1;
  }
}

mf::TokenMatrix check_vocab(const std::string& arg, const std::string& text,
                            const std::vector<long long>& ids, int vocab) {
  mf::TokenMatrix tokens(1, static_cast<Eigen::Index>(ids.size()));
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab)
      throw UsageError(arg + " = " + in_quotes(text) + ": expected token ids in [0, " +
                       std::to_string(vocab - 1) + "] (the model's vocab_size is " + std::to_string(vocab) +
                       "), but " + std::to_string(ids[i]) + " is not");
    tokens(0, static_cast<Eigen::Index>(i)) = static_cast<std::int32_t>(ids[i]);
  }
  return tokens;
}

std::string join(const std::vector<std::int32_t>& ids) {
  std::string s;
  for (const std::int32_t id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

void add_threads_flag(cli::Flags& f, int* threads) {
  f.add("--threads", threads, "threads (0: all cores)", 0, 1024);
}

// ---- logits

int run_logits(int argc, char** argv) {
  std::string weights, tokens_text, out, shard = "none";
  int threads = 0;
  cli::Flags f("memoryformer logits --weights M.safetensors --tokens 3,1,4 --out L.safetensors [--shard tables]");
  f.add("--weights", &weights, "model file (safetensors, docs/method.md §5)");
  f.add("--tokens", &tokens_text, "comma-separated token ids of one sequence");
  f.add("--out", &out,
        "output safetensors file: tensor \"logits\" [seq, vocab] F32, of the full-sequence forward");
  add_threads_flag(f, &threads);
  add_shard_flag(f, &shard);
  for (const char* name : {"--weights", "--tokens", "--out"}) f.require(name);
  if (!f.parse(argc, argv)) return 0;
  const std::vector<long long> ids = parse_token_list("--tokens", tokens_text);
  const bool split = sharded(shard);
  mf::set_num_threads(threads);
  const io::SafetensorsFile file = open_model_file("--weights", weights, split);
  return with_model("--weights", file, io::Weights::map, [&](const auto& model) {
    const mf::TokenMatrix tokens = check_vocab("--tokens", tokens_text, ids, model.config().vocab_size);
    const mf::RowMatrix<float> logits = model.forward(tokens);
    if (!prints_output(split)) return 0;
    const std::vector<std::int32_t> list(tokens.data(), tokens.data() + tokens.size());
    for_argument("--out", out, [&] {
      io::write_safetensors(
          out, {io::tensor("logits", logits)},
          {{"format", "memoryformer-logits"}, {"tokens", join(list)}, {"weights", weights}});
    });
    std::cout << "logits [" << logits.rows() << ", " << logits.cols() << "] -> " << out << '\n';
    return 0;
  }, split);
}

// ---- generate

// The tokenizer entries train writes into a model file's metadata; "" where the file has none.
std::string metadata_or_empty(const io::SafetensorsFile& file, const std::string& key) {
  const auto it = file.metadata().find(key);
  return it == file.metadata().end() ? std::string() : it->second;
}

#if MF_HAVE_SENTENCEPIECE
using Tokenizer = tokenizer::Tokenizer;
#else
// Built without SentencePiece: a --tokenizer flag is refused with the way to get it.
struct Tokenizer {
  Tokenizer(const std::string& arg, const std::string& path) {
    throw RunError(arg + " = " + in_quotes(path) +
                       ": this memoryformer was built without SentencePiece; install it "
                       "(scripts/install-deps.sh, Debian's libsentencepiece-dev) and rebuild",
                   kFailure);
  }
  int vocab_size() const { return 0; }
  std::string checksum() const { return ""; }
  std::vector<std::int32_t> encode(const std::string&) const { return {}; }
  std::string decode(const std::vector<std::int32_t>&) const { return ""; }
};
#endif

// The tokenizer must be the one the model was trained with: same checksum and vocabulary size.
void check_tokenizer_matches(const std::string& arg, const std::string& tokenizer_path, const Tokenizer& tok,
                             const io::SafetensorsFile& file, int vocab) {
  const std::string recorded = metadata_or_empty(file, "tokenizer_checksum");
  if (recorded != tok.checksum() || vocab != tok.vocab_size())
    throw UsageError(arg + " = " + in_quotes(tokenizer_path) + ": tokenizer checksum " + tok.checksum() +
                     " with " + std::to_string(tok.vocab_size()) + " pieces, but " + in_quotes(file.path()) +
                     " was trained with tokenizer checksum " +
                     (recorded.empty() ? std::string("(none recorded)") : recorded) + " and vocab_size " +
                     std::to_string(vocab));
}

int run_generate(int argc, char** argv) {
  std::string weights, prompt, tokens_text, tokenizer_path, shard = "none";
  int max_new = 100, top_k = 0, seed = 0, threads = 0;
  double temperature = 1.0, top_p = 1.0;
  cli::Flags f(
      "memoryformer generate --weights M.safetensors (--prompt TEXT [--tokenizer T.model] | --tokens 3,1,4) "
      "[--max-new N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--shard tables]\n"
      "Prints the prompt and its continuation: as text for --prompt, as token ids for --tokens.");
  f.add("--weights", &weights, "model file (safetensors, docs/method.md §5)");
  f.add("--prompt", &prompt, "text to continue: bytes for a vocab_size 256 model, else needs --tokenizer");
  f.add("--tokenizer", &tokenizer_path, "SentencePiece model the weights were trained with (tokenizer-train)");
  f.add("--tokens", &tokens_text, "or the prompt as comma-separated token ids (any vocab_size)");
  f.add("--max-new", &max_new, "tokens to generate", 0, 1 << 16);
  f.add("--temperature", &temperature, "sampling temperature (0: greedy)", 0, 1e6);
  f.add("--top-k", &top_k, "sample from the k most likely tokens (0: all)", 0,
        std::numeric_limits<int>::max());
  f.add("--top-p", &top_p, "sample from the nucleus of probability mass p (1: all)", 1e-9, 1);
  f.add("--seed", &seed, "seed of the sampling", 0, std::numeric_limits<int>::max());
  add_threads_flag(f, &threads);
  add_shard_flag(f, &shard);
  f.require("--weights");
  if (!f.parse(argc, argv)) return 0;
  const bool split = sharded(shard);
  const bool text = f.given("--prompt");
  if (text == f.given("--tokens"))
    throw UsageError(std::string("--prompt, --tokens: ") + (text ? "both given" : "neither given") +
                     ", expected exactly one of them");
  if (text && prompt.empty()) throw UsageError("--prompt = \"\": expected at least one character");
  if (!text && f.given("--tokenizer"))
    throw UsageError("--tokenizer = " + in_quotes(tokenizer_path) + ": expected only with --prompt");
  const std::vector<long long> ids =
      text ? std::vector<long long>() : parse_token_list("--tokens", tokens_text);
  mf::set_num_threads(threads);
  const io::SafetensorsFile file = open_model_file("--weights", weights, split);
  return with_model("--weights", file, io::Weights::map, [&](const auto& model) {
    const int vocab = model.config().vocab_size;
    std::unique_ptr<Tokenizer> tok;
    std::vector<std::int32_t> start;
    if (text && f.given("--tokenizer")) {
      tok = std::make_unique<Tokenizer>("--tokenizer", tokenizer_path);
      check_tokenizer_matches("--tokenizer", tokenizer_path, *tok, file, vocab);
      start = tok->encode(prompt);
    } else if (text) {
      const std::string kind = metadata_or_empty(file, "tokenizer");
      if (vocab != 256 || (!kind.empty() && kind != "bytes"))
        throw UsageError(
            "--prompt = " + in_quotes(prompt) + ": text is tokenised as bytes without --tokenizer, expected a " +
            "model of vocab_size 256 with no other tokenizer (this one: vocab_size " + std::to_string(vocab) +
            (kind.empty() ? std::string() : ", tokenizer " + in_quotes(kind)) +
            "); give --tokenizer or --tokens instead");
      for (const unsigned char c : prompt) start.push_back(c);
    } else {
      const mf::TokenMatrix tokens = check_vocab("--tokens", tokens_text, ids, vocab);
      start.assign(tokens.data(), tokens.data() + tokens.size());
    }
    mf::SamplingOptions sampling;
    sampling.temperature = temperature;
    sampling.top_k = top_k;
    sampling.top_p = top_p;
    sampling.seed = static_cast<std::uint64_t>(seed);
    const std::vector<std::int32_t> out = mf::generate(model, start, max_new, sampling);
    if (!prints_output(split)) return 0;
    if (tok) {
      std::cout << tok->decode(out) << '\n';
    } else if (text) {
      std::string bytes;
      for (const std::int32_t t : out) bytes += static_cast<char>(t);
      std::cout << bytes << '\n';
    } else {
      std::cout << join(out) << '\n';
    }
    return 0;
  }, split);
}

// ---- inspect

// Whether inference reads the file's tables in place (io::Weights::map) or copies them, and which.
std::string mapping_summary(const io::SafetensorsFile& file) {
  mf::TableType type = mf::TableType::fp32;
  try {
    type = io::load_table_type(file);
  } catch (const mf::Error&) {
    return "unknown (invalid \"tables\" entry)";
  }
  std::vector<std::string> tables, copied;
  for (const io::TensorInfo& t : file.tensors())
    if (mf::detail::is_table_name(t.name)) {
      tables.push_back(t.name);
      if (!mf::detail::table_is_mappable(file, t.name, type)) copied.push_back(t.name);
    }
  if (tables.empty()) return "no hash tables";
  if (copied.empty()) return "all " + std::to_string(tables.size()) + " tables are read in place (mapped)";
  std::string s = std::to_string(copied.size()) + " of " + std::to_string(tables.size()) +
                  " tables are copied on load (not 64-byte aligned, or stored as another dtype), first '" +
                  copied.front() + "'";
  return s;
}

int run_inspect(int argc, char** argv) {
  std::string path;
  cli::Flags f(
      "memoryformer inspect FILE\n"
      "Prints the config, arch, table storage, every tensor and whether the checksums hold; exit "
      "status 4 if one does not, or the model metadata is invalid.");
  f.add_positional("FILE", &path, "a safetensors file (a model, or any other)");
  f.require("FILE");
  if (!f.parse(argc, argv)) return 0;
  const io::SafetensorsFile file = open_file("FILE", path, io::Checksums::report);
  std::error_code ec;
  const auto file_bytes = std::filesystem::file_size(path, ec);

  auto row = [](const std::string& key, const std::string& value) {
    std::string k = key;
    k.resize(std::max<std::size_t>(k.size() + 1, 11), ' ');
    std::cout << k << value << '\n';
  };
  row("file", path + (ec ? std::string() : ", " + std::to_string(file_bytes) + " bytes"));
  const auto& meta = file.metadata();
  const auto format = meta.find("format");
  bool ok = true;  // false: the file is malformed, though readable enough to print
  if (format == meta.end() || format->second != "memoryformer") {
    row("format", format == meta.end() ? "(none: not a memoryformer model file)" : in_quotes(format->second));
  } else {
    row("format", "memoryformer");
    row("arch", io::load_arch(file));
    try {
      row("tables", mf::to_string(io::load_table_type(file)));
    } catch (const mf::Error& e) {
      row("tables", std::string("invalid: ") + e.what());
      ok = false;
    }
    try {
      row("config", io::config_to_json(io::load_config(file)));
    } catch (const mf::Error& e) {
      row("config", std::string("invalid: ") + e.what());
      ok = false;
    }
    row("mapping", mapping_summary(file));
  }
  for (const auto& [key, value] : meta)
    if (key != "format" && key != "arch" && key != "tables" && key != "config" && key != "checksums")
      row("metadata", key + " = " + io::json_quote(value));

  std::size_t name_width = 4, shape_width = 5;
  for (const io::TensorInfo& t : file.tensors()) {
    name_width = std::max(name_width, t.name.size());
    shape_width = std::max(shape_width, mf::detail::shape_string(t.shape).size());
  }
  auto pad = [](std::string s, std::size_t width) {
    s.resize(std::max(width, s.size()), ' ');
    return s;
  };
  row("tensors", std::to_string(file.tensors().size()));
  std::cout << "  " << pad("name", name_width) << "  " << pad("dtype", 5) << "  " << pad("shape", shape_width)
            << "  bytes\n";
  long long values = 0;
  for (const io::TensorInfo& t : file.tensors()) {
    std::cout << "  " << pad(t.name, name_width) << "  " << pad(io::to_string(t.dtype), 5) << "  "
              << pad(mf::detail::shape_string(t.shape), shape_width) << "  " << t.end - t.begin << '\n';
    values += t.numel();
  }
  row("total",
      std::to_string(values) + " values, " + std::to_string(file.data_size()) + " bytes of tensor data");

  if (!file.has_checksums()) {
    row("checksums", "absent");
  } else {
    const std::vector<io::ChecksumMismatch> bad = file.checksum_mismatches();
    const std::string counted =
        std::to_string(file.checksum_count()) + " of " + std::to_string(file.tensors().size()) + " tensors";
    if (bad.empty()) {
      row("checksums", "verified (" + counted + ")");
    } else {
      row("checksums", "FAILED for " + std::to_string(bad.size()) + " of " +
                           std::to_string(file.checksum_count()) + " checksummed tensors");
      for (const io::ChecksumMismatch& m : bad)
        row("  mismatch", "'" + m.tensor + "': header says " + m.stored + ", data hashes to " + m.actual);
      std::cerr << "memoryformer inspect: FILE = " << in_quotes(path) << ": checksum mismatch in "
                << bad.size() << " tensor(s), first '" << bad.front().tensor << "'\n";
      ok = false;
    }
  }
  return ok ? 0 : kMalformedFile;
}

// ---- convert

int run_convert(int argc, char** argv) {
  std::string tables, weights, out;
  cli::Flags f(
      "memoryformer convert --tables bf16|int8|fp32 --weights IN.safetensors --out OUT.safetensors\n"
      "Rewrites a model with its hash tables stored as bf16, or int8 with per-row scales (fp32: "
      "back to float); io/model_file.hpp describes the format.");
  f.add("--tables", &tables, "how to store the tables", {"bf16", "int8", "fp32"});
  f.add("--weights", &weights, "model file to read (any table storage)");
  f.add("--out", &out, "model file to write, atomically (may be --weights itself)");
  for (const char* name : {"--tables", "--weights", "--out"}) f.require(name);
  if (!f.parse(argc, argv)) return 0;
  const mf::TableType type = tables == "bf16"   ? mf::TableType::bf16
                             : tables == "int8" ? mf::TableType::int8
                                                : mf::TableType::fp32;
  const io::SafetensorsFile file = open_file("--weights", weights);
  const std::string arch = io::load_arch(file);
  if (arch == mf::DenseBlock<float>::kArch && type != mf::TableType::fp32)
    throw UsageError("--tables = " + in_quotes(tables) + ": expected fp32 for " + in_quotes(weights) +
                     ", a dense model (it has no hash tables)");
  // The caller's metadata (e.g. the tokenizer) carries over; save_model writes its own entries.
  std::map<std::string, std::string> extra;
  for (const auto& [key, value] : file.metadata())
    if (key != "format" && key != "arch" && key != "config" && key != "tables" && key != "checksums")
      extra[key] = value;
  const std::string from =
      mf::to_string(for_argument("--weights", weights, [&] { return io::load_table_type(file); }));
  return with_model("--weights", file, io::Weights::copy, [&](auto& model) {
    for_argument("--out", out, [&] { io::save_model(model, out, extra, type); });
    std::error_code e1, e2;
    std::cout << weights << " (tables " << from << ", " << std::filesystem::file_size(weights, e1)
              << " bytes) -> " << out << " (tables " << tables << ", " << std::filesystem::file_size(out, e2)
              << " bytes)\n";
    return 0;
  });
}

// ---- init

int run_init(int argc, char** argv) {
  std::string config_name = "tiny", tables = "fp32", arch = "memoryformer", out;
  int seed = 1, vocab = 50304, threads = 0;
  cli::Flags f(
      "memoryformer init --config tiny|small|base|FILE.json --tables fp32|bf16|int8 --seed 1 --out M.safetensors\n"
      "Writes a randomly initialised model of any size, streaming its tables to disk a block of rows at "
      "a time: the file equals what the library saves for a model built with the same config and seed.\n"
      "tiny, small and base are the paper's sizes (6 x 512, 12 x 768, 24 x 1024; tau 8, e 2), the shapes "
      "of Pythia-70M, -160M and -410M for --arch dense.");
  f.add("--config", &config_name, "a size, or a JSON file of a model config (io/model_file.hpp's fields)");
  f.add("--tables", &tables, "how to store the hash tables", {"fp32", "bf16", "int8"});
  f.add("--arch", &arch, "block type", {"memoryformer", "dense"});
  f.add("--vocab", &vocab, "vocabulary size of a named size (Pythia's padded 50304)", 1, 1 << 30);
  f.add("--seed", &seed, "seed of the initialisation", 0, std::numeric_limits<int>::max());
  f.add("--out", &out, "model file to write, atomically");
  add_threads_flag(f, &threads);
  f.require("--out");
  if (!f.parse(argc, argv)) return 0;
  mf::ModelConfig config;
  if (config_name == "tiny" || config_name == "small" || config_name == "base") {
    config = config_name == "tiny" ? mf::ModelConfig::tiny(vocab)
             : config_name == "small" ? mf::ModelConfig::small(vocab)
                                      : mf::ModelConfig::base(vocab);
  } else {
    if (f.given("--vocab"))
      throw UsageError("--vocab = " + std::to_string(vocab) + ": expected no --vocab with a config file (" +
                       in_quotes(config_name) + " sets vocab_size)");
    std::ifstream in(config_name, std::ios::binary);
    if (!in)
      throw RunError("--config = " + in_quotes(config_name) +
                         ": expected tiny, small, base or a readable JSON file, but it cannot be opened",
                     kFileSystem);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    config = for_argument("--config", config_name, [&] { return io::config_from_json(text, config_name); });
  }
  config.seed = static_cast<std::uint64_t>(seed);
  const mf::TableType type = tables == "bf16" ? mf::TableType::bf16 : tables == "int8" ? mf::TableType::int8
                                                                                      : mf::TableType::fp32;
  if (arch == "dense" && type != mf::TableType::fp32)
    throw UsageError("--tables = " + in_quotes(tables) + ": expected fp32 for --arch dense (it has no hash tables)");
  mf::set_num_threads(threads);
  for_argument("--out", out, [&] {
    if (arch == "dense")
      io::write_initial_model<mf::DenseModel<float>>(config, out, type);
    else
      io::write_initial_model<mf::MemoryFormerModel<float>>(config, out, type);
  });
  std::error_code ec;
  std::cout << arch << " " << config.n_layers << " x " << config.d_model << " (vocab " << config.vocab_size
            << "), tables " << tables << ", seed " << seed << " -> " << out << " ("
            << std::filesystem::file_size(out, ec) << " bytes)\n";
  return 0;
}

// ---- tokenizer-train, tokenize

int run_tokenizer_train(int argc, char** argv) {
  std::string input, out, model_type = "unigram";
  int vocab_size = 4000;
  cli::Flags f(
      "memoryformer tokenizer-train --input corpus.txt --vocab-size 4000 --out tok.model\n"
      "Learns a SentencePiece subword vocabulary with byte fallback (any text round-trips) and writes its "
      "model file atomically.");
  f.add("--input", &input, "a UTF-8 text file, or a folder (every regular file below it, sorted)");
  f.add("--vocab-size", &vocab_size, "pieces in the vocabulary, the 256 byte pieces included", 260, 1 << 20);
  f.add("--model-type", &model_type, "SentencePiece's algorithm", {"unigram", "bpe"});
  f.add("--out", &out, "the tokenizer model file to write");
  for (const char* name : {"--input", "--vocab-size", "--out"}) f.require(name);
  if (!f.parse(argc, argv)) return 0;
#if MF_HAVE_SENTENCEPIECE
  const corpus::Corpus c = corpus::read("--input", input);
  const auto t0 = std::chrono::steady_clock::now();
  std::string model;
  try {
    model = tokenizer::train(c, vocab_size, model_type, out);
  } catch (const mf::FileError& e) {
    throw RunError("--out = " + in_quotes(out) + ": " + e.what(), kFileSystem);
  } catch (const std::runtime_error& e) {
    throw RunError("--vocab-size = " + std::to_string(vocab_size) + " on --input " + in_quotes(input) + " (" +
                       std::to_string(c.bytes) + " bytes): " + e.what(),
                   kUsage);
  }
  std::cout << "tokenizer " << out << ": " << vocab_size << " pieces (" << model_type << ", byte fallback), checksum "
            << tokenizer::checksum_of(model) << ", from " << c.bytes << " bytes in " << c.files << " file(s), "
            << std::fixed << std::setprecision(1)
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s\n";
  return 0;
#else
  Tokenizer("--out", out);  // refuses, saying how to get SentencePiece
  return kFailure;
#endif
}

int run_tokenize(int argc, char** argv) {
  std::string tokenizer_path, input, out;
  double val_fraction = 0.1;
  cli::Flags f(
      "memoryformer tokenize --tokenizer tok.model --input corpus.txt --out data/ --val-fraction 0.1\n"
      "Writes a token dataset folder: train.bin and val.bin (little-endian uint16 or uint32 ids) and meta.json. "
      "Documents (separated by blank lines, or files) go whole to one split: the last ones, about "
      "--val-fraction of the bytes, to val.");
  f.add("--tokenizer", &tokenizer_path, "SentencePiece model file (tokenizer-train)");
  f.add("--input", &input, "a UTF-8 text file, or a folder (every regular file below it, sorted)");
  f.add("--out", &out, "the dataset folder to write (created if missing)");
  f.add("--val-fraction", &val_fraction, "share of the bytes held out for validation", 1e-6, 0.9);
  for (const char* name : {"--tokenizer", "--input", "--out"}) f.require(name);
  if (!f.parse(argc, argv)) return 0;
  const Tokenizer tok("--tokenizer", tokenizer_path);
  const corpus::Corpus c = corpus::read("--input", input);
  if (c.documents.size() < 2)
    throw UsageError("--input = " + in_quotes(input) +
                     ": expected at least 2 documents (separated by a blank line, or in separate files) to "
                     "split into train and val, but found 1");
  // The last documents, from the end until they hold val_fraction of the bytes; train keeps one at least.
  std::size_t first_val = c.documents.size();
  std::uint64_t val_bytes = 0;
  while (first_val > 1 && static_cast<double>(val_bytes) < val_fraction * static_cast<double>(c.bytes))
    val_bytes += c.documents[--first_val].size();
  std::vector<std::int32_t> train, val;
  for (std::size_t d = 0; d < c.documents.size(); ++d) {
    const std::vector<std::int32_t> ids = tok.encode(c.documents[d]);
    std::vector<std::int32_t>& split = d < first_val ? train : val;
    split.insert(split.end(), ids.begin(), ids.end());
  }
  io::TokenDatasetMeta meta;
  meta.vocab_size = tok.vocab_size();
  meta.train.text_bytes = c.bytes - val_bytes;
  meta.val.text_bytes = val_bytes;
  meta.tokenizer = "sentencepiece";
  meta.tokenizer_checksum = tok.checksum();
  for_argument("--out", out, [&] { io::write_token_dataset(out, train, val, meta); });
  std::cout << "dataset " << out << ": train " << train.size() << " tokens (" << meta.train.text_bytes
            << " bytes, " << first_val << " documents), val " << val.size() << " tokens (" << val_bytes << " bytes, "
            << c.documents.size() - first_val << " documents); " << std::fixed << std::setprecision(2)
            << static_cast<double>(c.bytes) / static_cast<double>(train.size() + val.size())
            << " bytes per token, " << meta.dtype() << " ids\n";
  return 0;
}

// ---- train, eval

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
  std::string data, arch = "memoryformer", out, resume, log;
  int layers = 2, d_model = 128, heads = 4, tau = 8, seq = 128, batch = 16, steps = 1000, seed = 1;
  int eval_every = 100, save_every = 0, eval_tokens = 65536, threads = 0, warmup = -1, stop_after = 0;
  int keep_checkpoints = 2;
  double lr = 0, min_lr_ratio = 0.1, weight_decay = 0.1, clip = 1.0;
  bool data_parallel = false;
  // The model variants of docs/method.md §6 (ModelConfig's defaults unless given).
  int expand_bits = 2;
  double temperature = 1.0, norm_eps = 1e-8;
  std::string score = "paper", rms_form = "eps_in_root", embedding_init = "normal_0.02",
              memory_block_activation = "none", output_projection = "none";
};

// The enum value whose to_string is `name` (a Flags choice, so one always is).
template <class Enum>
Enum enum_named(const std::string& name, std::initializer_list<Enum> values) {
  if (const auto e = mf::detail::enum_named(name, values)) return *e;
  throw std::logic_error("enum_named: no value named " + name);
}

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
                       ", expected --arch " + a.arch);
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
  const double peak_lr = a.lr > 0 ? a.lr : (a.arch == "dense" ? 1e-3 : 3e-3);
  const int warmup = a.warmup >= 0 ? std::min(a.warmup, a.steps) : std::max(1, a.steps / 100);
  const mf::CosineSchedule schedule(peak_lr, std::min(warmup, std::max(a.steps, 1)), std::max(a.steps, 1),
                                    peak_lr * a.min_lr_ratio);
  const std::map<std::string, std::string> metadata = {{"tokenizer", data.meta().tokenizer},
                                                       {"tokenizer_checksum", data.meta().tokenizer_checksum},
                                                       {"train_seq", std::to_string(a.seq)}};
  if (lead)
    std::cerr << "train: " << a.arch << ", " << config.n_layers << " x " << config.d_model << ", vocab "
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
            << ", \"steps\": " << std::max(last_step, first_step - 1) << ", \"arch\": \"" << a.arch << "\", \"lr\": " << peak_lr
            << ", \"seed\": " << a.seed << ", \"val_tokens\": " << last.tokens << "}" << std::endl;
  return 0;
}

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
  f.add("--data", &a.data, "dataset folder (memoryformer tokenize)");
  f.add("--arch", &a.arch, "block type", {"memoryformer", "dense"});
  f.add("--layers", &a.layers, "number of blocks", 0, 64);
  f.add("--d-model", &a.d_model, "model width", 1, 8192);
  f.add("--heads", &a.heads, "attention heads (divide d-model)", 1, 1024);
  f.add("--tau", &a.tau, "bits per hash chunk (divides d-model)", 1, 16);
  f.add("--expand-bits", &a.expand_bits, "extra bits of the Memory Block's down layer (tau + e <= 16)", 0, 15);
  f.add("--score", &a.score, "weight of a selected row", {"paper", "l1"});
  f.add("--temperature", &a.temperature, "softmax temperature of the score", 1e-6, 1e6);
  f.add("--rms-form", &a.rms_form, "where RMSNorm adds eps (eps_after_root: the released code's)",
        {"eps_in_root", "eps_after_root"});
  f.add("--norm-eps", &a.norm_eps, "RMSNorm eps", 1e-30, 1);
  f.add("--embedding-init", &a.embedding_init, "init of the embedding and LM head (small_init: the released code's)",
        {"normal_0.02", "small_init"});
  f.add("--memory-block-activation", &a.memory_block_activation,
        "function between the Memory Block's LayerNorm and down layer", {"none", "gelu"});
  f.add("--output-projection", &a.output_projection, "W_O after attention (memory: a Memory Layer)",
        {"none", "memory"});
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
  mf::ModelConfig config;
  config.vocab_size = data.meta().vocab_size;
  config.n_layers = a.layers;
  config.d_model = a.d_model;
  config.n_heads = a.heads;
  config.tau = a.tau;
  config.expand_bits = a.expand_bits;
  config.score = enum_named(a.score, {mf::Score::paper, mf::Score::l1});
  config.temperature = a.temperature;
  config.norm_eps = a.norm_eps;
  config.rms_form = enum_named(a.rms_form, {mf::RmsForm::eps_in_root, mf::RmsForm::eps_after_root});
  config.embedding_init =
      enum_named(a.embedding_init, {mf::EmbeddingInit::normal_0_02, mf::EmbeddingInit::small_init});
  config.memory_block_activation =
      enum_named(a.memory_block_activation, {mf::Activation::none, mf::Activation::gelu});
  config.output_projection = a.output_projection == "memory";
  config.seed = static_cast<std::uint64_t>(a.seed);
  if (a.tau + a.expand_bits > mf::kMaxTau)
    throw UsageError("--expand-bits = \"" + std::to_string(a.expand_bits) + "\": expected tau + expand_bits <= " +
                     std::to_string(mf::kMaxTau) + " (--tau " + std::to_string(a.tau) + ")");
  for_argument("--d-model", std::to_string(a.d_model), [&] { config.validate(); });
  return a.arch == "dense" ? train_model<mf::DenseModel<float>>(a, data, config)
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

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"logits", run_logits, "full-sequence logits of a token list, to a safetensors file"},
    {"generate", run_generate, "continue a prompt (text or token ids) with the KV cache"},
    {"inspect", run_inspect, "config, tensors, sizes and checksum status of a file"},
    {"convert", run_convert, "store a model's tables as bf16 or int8"},
    {"init", run_init, "write a randomly initialised model of any size, streamed to disk"},
    {"tokenizer-train", run_tokenizer_train, "learn a SentencePiece subword vocabulary from text"},
    {"tokenize", run_tokenize, "turn text into a token dataset folder (train.bin, val.bin, meta.json)"},
    {"train", run_train, "train a language model on a token dataset, with checkpoints"},
    {"eval", run_eval, "loss, perplexity and bits per byte of a model on a dataset split"},
};

std::string usage() {
  std::string s = "usage: memoryformer COMMAND [flags]   (memoryformer COMMAND --help for its flags)\n";
  for (const Command& c : kCommands) {
    std::string name = std::string("  ") + c.name;
    name.resize(19, ' ');
    s += name + c.summary + "\n";
  }
  if (!MF_HAVE_SENTENCEPIECE)
    s += "tokenizer-train, tokenize and generate --tokenizer need SentencePiece, which this build lacks\n";
  return s +
         "exit status: 0 success, 1 other failure, 2 bad command line, 3 file-system error (a file that "
         "cannot be opened, read or written), 4 malformed file (bad format, metadata or checksum)\n";
}

}  // namespace

int main(int argc, char** argv) {
  keep_freed_memory();  // training and prefill allocate step-sized activations again and again
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "--help" || command == "-h" || command == "help") {
    std::cout << usage();
    return 0;
  }
  const Command* found = nullptr;
  for (const Command& c : kCommands)
    if (command == c.name) found = &c;
  if (found == nullptr) {
    std::cerr << "memoryformer: command = " << in_quotes(command)
              << ", expected one of logits, generate, inspect, convert, init, tokenizer-train, tokenize, train, eval\n"
              << usage();
    return kUsage;
  }
  // Under mpirun (--shard), an error every rank threw alike (distributed::DistributedError) is
  // printed by rank 0 and each rank exits with its status; any other error may have left the other
  // ranks waiting in a collective, so this rank prints it and ends the whole job.
  const auto report = [&](const char* what, int status, bool agreed = false) {
#if MF_HAVE_MPI
    if (mpi_started() && world().size() > 1) {
      if (agreed) {
        if (world().rank() == 0) std::cerr << "memoryformer " << command << ": " << what << '\n';
        return status;
      }
      std::cerr << "memoryformer " << command << " (rank " << world().rank() << " of " << world().size()
                << "): " << what << std::endl;
      world().abort(status);
    }
#else
    (void)agreed;
#endif
    std::cerr << "memoryformer " << command << ": " << what << '\n';
    return status;
  };
  try {
    return found->run(argc - 1, argv + 1);
  } catch (const UsageError& e) {  // the same on every rank of an MPI job: printed by rank 0
#if MF_HAVE_MPI
    if (mpi_started() && world().rank() != 0) return kUsage;
#endif
    std::cerr << "memoryformer " << command << ": " << e.what() << "\n(see memoryformer " << command
              << " --help)\n";
    return kUsage;
  } catch (const RunError& e) {
    return report(e.what(), e.status(), e.agreed());
  } catch (const mf::Error& e) {  // one no step wrapped with for_argument
    return report(e.what(), status_of(e));
  } catch (const std::exception& e) {
    return report(e.what(), kFailure);
  }
}
