// memoryformer: model files (docs/method.md §5 safetensors) from the command line.
//
//   memoryformer logits   --weights M --tokens 3,1,4 --out L.safetensors
//   memoryformer generate --weights M (--prompt TEXT | --tokens 3,1,4) [--max-new N] [--temperature T]
//                         [--top-k K] [--seed S]
//   memoryformer inspect  M
//   memoryformer convert  --tables bf16|int8|fp32 --weights IN --out OUT
//   memoryformer init     --config tiny|small|base|FILE.json --tables fp32|bf16|int8 --seed 1 --out M
//
// Every command is a thin layer over the library: io::load_model, Model::forward, generate,
// io::save_model and the safetensors reader and writer; `memoryformer COMMAND --help` lists flags.
// Text is tokenised as bytes (vocab 256), as examples/train_char_lm does; models of another vocab
// take and give token ids (--tokens).
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
#include "cli.hpp"

#include <memoryformer/io/model_file.hpp>
#include <memoryformer/memoryformer.hpp>

#include <charconv>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
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
  return kFailure;
}

// A failure at run time, its message already naming the argument it concerns, and its status.
class RunError : public std::runtime_error {
 public:
  RunError(const std::string& message, int status) : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

std::string in_quotes(const std::string& s) { return '"' + s + '"'; }

// Runs `step`; a library error becomes a RunError that names the argument and value it concerns
// and keeps the status of the error's kind.
template <class Step>
auto for_argument(const std::string& arg, const std::string& value, Step step) -> decltype(step()) {
  try {
    return step();
  } catch (const mf::Error& e) {
    throw RunError(arg + " = " + in_quotes(value) + ": " + e.what(), status_of(e));
  }
}

io::SafetensorsFile open_file(const std::string& arg, const std::string& path,
                              io::Checksums checksums = io::Checksums::verify) {
  return for_argument(arg, path, [&] { return io::SafetensorsFile::open(path, checksums); });
}

// Loads the model in `file` as the block type its "arch" names and returns f(model). Tables stay
// as the file stores them (fp32, bf16 or int8); inference maps them (io::Weights::map), so a
// model loads in the time it takes to check the file and shares its pages with the page cache.
template <class F>
int with_model(const std::string& arg, const io::SafetensorsFile& file, io::Weights how, F f) {
  const std::string arch = io::load_arch(file);
  if (arch == mf::DenseBlock<float>::kArch) {
    auto model = for_argument(arg, file.path(), [&] { return io::load_model<mf::DenseModel<float>>(file, how); });
    return f(model);
  }
  // Any other arch is reported by load_model, naming the ones it knows.
  auto model =
      for_argument(arg, file.path(), [&] { return io::load_model<mf::MemoryFormerModel<float>>(file, how); });
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
  std::string weights, tokens_text, out;
  int threads = 0;
  cli::Flags f("memoryformer logits --weights M.safetensors --tokens 3,1,4 --out L.safetensors");
  f.add("--weights", &weights, "model file (safetensors, docs/method.md §5)");
  f.add("--tokens", &tokens_text, "comma-separated token ids of one sequence");
  f.add("--out", &out,
        "output safetensors file: tensor \"logits\" [seq, vocab] F32, of the full-sequence forward");
  add_threads_flag(f, &threads);
  for (const char* name : {"--weights", "--tokens", "--out"}) f.require(name);
  if (!f.parse(argc, argv)) return 0;
  const std::vector<long long> ids = parse_token_list("--tokens", tokens_text);
  mf::set_num_threads(threads);
  const io::SafetensorsFile file = open_file("--weights", weights);
  return with_model("--weights", file, io::Weights::map, [&](const auto& model) {
    const mf::TokenMatrix tokens = check_vocab("--tokens", tokens_text, ids, model.config().vocab_size);
    const mf::RowMatrix<float> logits = model.forward(tokens);
    const std::vector<std::int32_t> list(tokens.data(), tokens.data() + tokens.size());
    for_argument("--out", out, [&] {
      io::write_safetensors(
          out, {io::tensor("logits", logits)},
          {{"format", "memoryformer-logits"}, {"tokens", join(list)}, {"weights", weights}});
    });
    std::cout << "logits [" << logits.rows() << ", " << logits.cols() << "] -> " << out << '\n';
    return 0;
  });
}

// ---- generate

int run_generate(int argc, char** argv) {
  std::string weights, prompt, tokens_text;
  int max_new = 100, top_k = 0, seed = 0, threads = 0;
  double temperature = 1.0;
  cli::Flags f(
      "memoryformer generate --weights M.safetensors (--prompt TEXT | --tokens 3,1,4) [--max-new N] "
      "[--temperature T] [--top-k K] [--seed S]\n"
      "Prints the prompt and its continuation: as text for --prompt (bytes, vocab 256), as token ids for "
      "--tokens.");
  f.add("--weights", &weights, "model file (safetensors, docs/method.md §5)");
  f.add("--prompt", &prompt, "text to continue, one token per byte (needs a model of vocab_size 256)");
  f.add("--tokens", &tokens_text, "or the prompt as comma-separated token ids (any vocab_size)");
  f.add("--max-new", &max_new, "tokens to generate", 0, 1 << 16);
  f.add("--temperature", &temperature, "sampling temperature (0: greedy)", 0, 1e6);
  f.add("--top-k", &top_k, "sample from the k most likely tokens (0: all)", 0,
        std::numeric_limits<int>::max());
  f.add("--seed", &seed, "seed of the sampling", 0, std::numeric_limits<int>::max());
  add_threads_flag(f, &threads);
  f.require("--weights");
  if (!f.parse(argc, argv)) return 0;
  const bool text = f.given("--prompt");
  if (text == f.given("--tokens"))
    throw UsageError(std::string("--prompt, --tokens: ") + (text ? "both given" : "neither given") +
                     ", expected exactly one of them");
  if (text && prompt.empty()) throw UsageError("--prompt = \"\": expected at least one character");
  const std::vector<long long> ids =
      text ? std::vector<long long>() : parse_token_list("--tokens", tokens_text);
  mf::set_num_threads(threads);
  const io::SafetensorsFile file = open_file("--weights", weights);
  return with_model("--weights", file, io::Weights::map, [&](const auto& model) {
    const int vocab = model.config().vocab_size;
    std::vector<std::int32_t> start;
    if (text) {
      const auto tokenizer = file.metadata().find("tokenizer");
      if (vocab != 256 || (tokenizer != file.metadata().end() && tokenizer->second != "bytes"))
        throw UsageError(
            "--prompt = " + in_quotes(prompt) + ": text is tokenised as bytes, expected a model of " +
            "vocab_size 256 with no other tokenizer (this one: vocab_size " + std::to_string(vocab) +
            (tokenizer != file.metadata().end() ? ", tokenizer " + in_quotes(tokenizer->second) : "") +
            "); give --tokens instead");
      for (const unsigned char c : prompt) start.push_back(c);
    } else {
      const mf::TokenMatrix tokens = check_vocab("--tokens", tokens_text, ids, vocab);
      start.assign(tokens.data(), tokens.data() + tokens.size());
    }
    mf::SamplingOptions sampling;
    sampling.temperature = temperature;
    sampling.top_k = top_k;
    sampling.seed = static_cast<std::uint64_t>(seed);
    const std::vector<std::int32_t> out = mf::generate(model, start, max_new, sampling);
    if (text) {
      std::string bytes;
      for (const std::int32_t t : out) bytes += static_cast<char>(t);
      std::cout << bytes << '\n';
    } else {
      std::cout << join(out) << '\n';
    }
    return 0;
  });
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
};

std::string usage() {
  std::string s = "usage: memoryformer COMMAND [flags]   (memoryformer COMMAND --help for its flags)\n";
  for (const Command& c : kCommands) {
    std::string name = std::string("  ") + c.name;
    name.resize(12, ' ');
    s += name + c.summary + "\n";
  }
  return s +
         "exit status: 0 success, 1 other failure, 2 bad command line, 3 file-system error (a file that "
         "cannot be opened, read or written), 4 malformed file (bad format, metadata or checksum)\n";
}

}  // namespace

int main(int argc, char** argv) {
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
              << ", expected one of logits, generate, inspect, convert, init\n"
              << usage();
    return kUsage;
  }
  const auto report = [&](const char* what, int status) {
    std::cerr << "memoryformer " << command << ": " << what << '\n';
    return status;
  };
  try {
    return found->run(argc - 1, argv + 1);
  } catch (const UsageError& e) {
    std::cerr << "memoryformer " << command << ": " << e.what() << "\n(see memoryformer " << command
              << " --help)\n";
    return kUsage;
  } catch (const RunError& e) {
    return report(e.what(), e.status());
  } catch (const mf::Error& e) {  // one no step wrapped with for_argument
    return report(e.what(), status_of(e));
  } catch (const std::exception& e) {
    return report(e.what(), kFailure);
  }
}
