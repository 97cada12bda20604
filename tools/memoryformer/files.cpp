// memoryformer inspect, convert and init: what a safetensors file holds, a model's tables stored
// another way, and a new randomly initialised model of any size streamed to disk.
#include "commands.hpp"
#include "common/cli.hpp"
#include "common/errors.hpp"
#include "common/model_files.hpp"

#include <memoryformer/io/model_file.hpp>
#include <memoryformer/memoryformer.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <system_error>
#include <vector>

namespace tool {
namespace {

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

// One "key  value" line of inspect's report.
void row(const std::string& key, const std::string& value) {
  std::string k = key;
  k.resize(std::max<std::size_t>(k.size() + 1, 11), ' ');
  std::cout << k << value << '\n';
}

// The model entries of the metadata (format, arch, tables, config, mapping) and the others.
// Returns false where one is invalid, though readable enough to print.
bool print_metadata(const io::SafetensorsFile& file) {
  const auto& meta = file.metadata();
  const auto format = meta.find("format");
  bool ok = true;
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
  return ok;
}

// Every tensor: name, dtype, shape and bytes, and the totals.
void print_tensors(const io::SafetensorsFile& file) {
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
}

// Whether the checksums hold; each mismatch is a row, and the first goes to stderr too.
bool print_checksums(const io::SafetensorsFile& file, const std::string& path) {
  if (!file.has_checksums()) {
    row("checksums", "absent");
    return true;
  }
  const std::vector<io::ChecksumMismatch> bad = file.checksum_mismatches();
  const std::string counted =
      std::to_string(file.checksum_count()) + " of " + std::to_string(file.tensors().size()) + " tensors";
  if (bad.empty()) {
    row("checksums", "verified (" + counted + ")");
    return true;
  }
  row("checksums", "FAILED for " + std::to_string(bad.size()) + " of " + std::to_string(file.checksum_count()) +
                       " checksummed tensors");
  for (const io::ChecksumMismatch& m : bad)
    row("  mismatch", "'" + m.tensor + "': header says " + m.stored + ", data hashes to " + m.actual);
  std::cerr << "memoryformer inspect: FILE = " << in_quotes(path) << ": checksum mismatch in " << bad.size()
            << " tensor(s), first '" << bad.front().tensor << "'\n";
  return false;
}

// --tables' value (a Flags choice).
mf::TableType table_type(const std::string& tables) { return *mf::detail::enum_named<mf::TableType>(tables); }

}  // namespace

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
  row("file", path + (ec ? std::string() : ", " + std::to_string(file_bytes) + " bytes"));
  const bool metadata_ok = print_metadata(file);
  print_tensors(file);
  const bool checksums_ok = print_checksums(file, path);
  return metadata_ok && checksums_ok ? 0 : kMalformedFile;
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
  const mf::TableType type = table_type(tables);
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
  return with_model("--weights", file, io::Weights::copy, mf::Context(1), [&](auto& model) {
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
  const mf::TableType type = table_type(tables);
  if (arch == "dense" && type != mf::TableType::fp32)
    throw UsageError("--tables = " + in_quotes(tables) + ": expected fp32 for --arch dense (it has no hash tables)");
  const mf::Context ctx(threads);
  for_argument("--out", out, [&] {
    if (arch == "dense")
      io::write_initial_model<mf::DenseModel<float>>(config, out, type, {}, ctx);
    else
      io::write_initial_model<mf::MemoryFormerModel<float>>(config, out, type, {}, ctx);
  });
  std::error_code ec;
  std::cout << arch << " " << config.n_layers << " x " << config.d_model << " (vocab " << config.vocab_size
            << "), tables " << tables << ", seed " << seed << " -> " << out << " ("
            << std::filesystem::file_size(out, ec) << " bytes)\n";
  return 0;
}

}  // namespace tool
