// A tokenised corpus on disk (docs/training.md, "Subword text"): a folder holding
//   train.bin, val.bin  token ids, little-endian uint16 (vocab_size <= 65536) or uint32
//   meta.json           what they hold: vocab size, dtype, token counts, the UTF-8 bytes of each
//                       split's text (for bits per byte) and the tokenizer that made the ids
// TokenDataset::open maps both files and checks them against meta.json and the vocabulary once, so
// a reader can index ids without checks.
#pragma once

#include "../config.hpp"
#include "detail/mapped_file.hpp"
#include "atomic_file.hpp"
#include "json.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace memoryformer {
inline namespace v0 {
namespace io {

struct TokenSplitInfo {
  std::uint64_t tokens = 0;
  std::uint64_t text_bytes = 0;  // UTF-8 bytes of the text the ids encode
};

struct TokenDatasetMeta {
  int vocab_size = 0;
  TokenSplitInfo train, val;
  std::string tokenizer;           // what made the ids, e.g. "sentencepiece"
  std::string tokenizer_checksum;  // identifies the tokenizer's model file (hex)

  // "uint16" while every id fits in 16 bits, else "uint32".
  const char* dtype() const { return vocab_size <= 65536 ? "uint16" : "uint32"; }
  int id_bytes() const { return vocab_size <= 65536 ? 2 : 4; }
};

// One split's ids, read in place from the mapped file.
class TokenSplit {
 public:
  std::size_t size() const { return size_; }
  std::uint64_t text_bytes() const { return text_bytes_; }
  std::int32_t operator[](std::size_t i) const {
    if (id_bytes_ == 2) {
      std::uint16_t id;
      std::memcpy(&id, data_ + 2 * i, 2);
      return id;
    }
    std::uint32_t id;
    std::memcpy(&id, data_ + 4 * i, 4);
    return static_cast<std::int32_t>(id);
  }

 private:
  friend class TokenDataset;
  std::shared_ptr<const void> mapping_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  int id_bytes_ = 2;
  std::uint64_t text_bytes_ = 0;
};

class TokenDataset {
 public:
  static constexpr const char* kFormat = "memoryformer-tokens";

  // Maps folder/train.bin and folder/val.bin. Throws FileError when a file cannot be read and
  // FormatError, naming the file and field, when meta.json is malformed, a file's size disagrees
  // with meta.json (a truncated file) or an id lies outside the vocabulary.
  static TokenDataset open(const std::string& folder);

  const std::string& folder() const { return folder_; }
  const TokenDatasetMeta& meta() const { return meta_; }
  const TokenSplit& train() const { return train_; }
  const TokenSplit& val() const { return val_; }
  // "train" or "val".
  const TokenSplit& split(const std::string& name) const {
    if (name == "train") return train_;
    if (name == "val") return val_;
    detail::fail("TokenDataset::split", "name", '"' + name + '"', "\"train\" or \"val\"");
  }

 private:
  std::string folder_;
  TokenDatasetMeta meta_;
  TokenSplit train_, val_;
};

}  // namespace io

namespace detail {

inline std::string dataset_file(const std::string& folder, const char* name) {
  return (std::filesystem::path(folder) / name).string();
}

inline std::string dataset_meta_json(const io::TokenDatasetMeta& m) {
  auto split = [](const char* file, const io::TokenSplitInfo& s) {
    return std::string("{\"file\": \"") + file + "\", \"tokens\": " + std::to_string(s.tokens) +
           ", \"text_bytes\": " + std::to_string(s.text_bytes) + "}";
  };
  return std::string("{\n  \"format\": \"") + io::TokenDataset::kFormat + "\",\n  \"version\": 1,\n" +
         "  \"vocab_size\": " + std::to_string(m.vocab_size) + ",\n  \"dtype\": \"" + m.dtype() + "\",\n" +
         "  \"train\": " + split("train.bin", m.train) + ",\n  \"val\": " + split("val.bin", m.val) + ",\n" +
         "  \"tokenizer\": {\"kind\": " + io::json_quote(m.tokenizer) + ", \"checksum\": " +
         io::json_quote(m.tokenizer_checksum) + "}\n}\n";
}

inline void write_token_ids(const std::string& path, const std::vector<std::int32_t>& ids, int id_bytes) {
  std::vector<std::uint8_t> bytes(ids.size() * static_cast<std::size_t>(id_bytes));
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto id = static_cast<std::uint32_t>(ids[i]);
    for (int b = 0; b < id_bytes; ++b)
      bytes[i * static_cast<std::size_t>(id_bytes) + static_cast<std::size_t>(b)] =
          static_cast<std::uint8_t>(id >> (8 * b));  // little-endian on any host
  }
  io::AtomicFile file(path);
  file.write(bytes.data(), bytes.size());
  file.commit();
}

}  // namespace detail

namespace io {

// Writes the dataset folder (created if missing). meta.train/val.tokens are set from the ids.
// meta.json is removed first and written last, each file atomically: a failure part way leaves a
// folder that open() refuses, never a meta.json that describes other files.
inline void write_token_dataset(const std::string& folder, const std::vector<std::int32_t>& train,
                                const std::vector<std::int32_t>& val, TokenDatasetMeta meta) {
  const char* where = "write_token_dataset";
  if (meta.vocab_size < 1) detail::fail(where, "meta.vocab_size", meta.vocab_size, "an integer >= 1");
  for (const auto* split : {&train, &val})
    for (std::size_t i = 0; i < split->size(); ++i)
      if ((*split)[i] < 0 || (*split)[i] >= meta.vocab_size)
        detail::fail(where, (std::string(split == &train ? "train" : "val") + "[" + std::to_string(i) + "]").c_str(),
                     (*split)[i], "an id in [0, " + std::to_string(meta.vocab_size) + ")");
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec) throw FileError(ec.value(), folder, "cannot create the dataset folder");
  const std::string meta_path = detail::dataset_file(folder, "meta.json");
  if (std::remove(meta_path.c_str()) != 0 && errno != ENOENT) throw FileError(errno, meta_path, "cannot remove");
  meta.train.tokens = train.size();
  meta.val.tokens = val.size();
  detail::write_token_ids(detail::dataset_file(folder, "train.bin"), train, meta.id_bytes());
  detail::write_token_ids(detail::dataset_file(folder, "val.bin"), val, meta.id_bytes());
  write_file_atomically(meta_path, detail::dataset_meta_json(meta));
}

inline TokenDataset TokenDataset::open(const std::string& folder) {
  TokenDataset d;
  d.folder_ = folder;
  const std::string meta_path = detail::dataset_file(folder, "meta.json");
  const detail::MappedFile meta_file = detail::map_file(meta_path);
  const std::string text(reinterpret_cast<const char*>(meta_file.data()), meta_file.size);
  const JsonValue json = parse_json(text, meta_path);
  auto bad = [&](const JsonValue& v, const std::string& problem) {
    throw FormatError(meta_path, "", v.path().rfind("$.", 0) == 0 ? v.path().substr(2) : v.path(), problem);
  };
  if (!json.is_object()) bad(json, "expected a JSON object");
  if (json.at("format").as_string() != kFormat)
    bad(json.at("format"), json_quote(json.at("format").as_string()) + ", expected \"" + kFormat + "\"");
  if (json.at("version").as_int64() != 1)
    bad(json.at("version"), json.at("version").number_text() + ", expected 1");
  const std::int64_t vocab = json.at("vocab_size").as_int64();
  if (vocab < 1 || vocab > (std::int64_t(1) << 31) - 1)
    bad(json.at("vocab_size"), std::to_string(vocab) + ", expected an integer in [1, 2^31)");
  d.meta_.vocab_size = static_cast<int>(vocab);
  if (json.at("dtype").as_string() != d.meta_.dtype())
    bad(json.at("dtype"), json_quote(json.at("dtype").as_string()) + ", expected \"" + d.meta_.dtype() +
                              "\" for vocab_size " + std::to_string(vocab));
  const JsonValue& tokenizer = json.at("tokenizer");
  d.meta_.tokenizer = tokenizer.at("kind").as_string();
  d.meta_.tokenizer_checksum = tokenizer.at("checksum").as_string();

  const int id_bytes = d.meta_.id_bytes();
  for (const char* name : {"train", "val"}) {
    const bool is_train = std::string(name) == "train";
    const JsonValue& entry = json.at(name);
    TokenSplitInfo& info = is_train ? d.meta_.train : d.meta_.val;
    info.tokens = entry.at("tokens").as_uint64();
    info.text_bytes = entry.at("text_bytes").as_uint64();
    const std::string file = entry.at("file").as_string();
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
      bad(entry.at("file"), json_quote(file) + ", expected a file name inside the dataset folder");
    const std::string bin_path = detail::dataset_file(folder, file.c_str());
    detail::MappedFile bin = detail::map_file(bin_path);
    if (info.tokens > bin.size / static_cast<std::size_t>(id_bytes) ||
        bin.size != info.tokens * static_cast<std::uint64_t>(id_bytes))
      throw FormatError(bin_path, "", "size",
                        std::to_string(bin.size) + " bytes, expected " + std::to_string(info.tokens) + " " +
                            d.meta_.dtype() + " ids = " +
                            std::to_string(info.tokens * static_cast<std::uint64_t>(id_bytes)) +
                            " bytes, as " + meta_path + " says (a truncated or foreign file)");
    TokenSplit& split = is_train ? d.train_ : d.val_;
    split.data_ = bin.data();
    split.mapping_ = std::move(bin.bytes);
    split.size_ = static_cast<std::size_t>(info.tokens);
    split.id_bytes_ = id_bytes;
    split.text_bytes_ = info.text_bytes;
    for (std::size_t i = 0; i < split.size_; ++i)
      if (split[i] < 0 || split[i] >= d.meta_.vocab_size)
        throw FormatError(bin_path, "", "id " + std::to_string(i),
                          std::to_string(static_cast<std::uint32_t>(split[i])) + ", expected an id below vocab_size " +
                              std::to_string(vocab) + " (" + meta_path + ")");
  }
  return d;
}

}  // namespace io
}  // namespace v0
}  // namespace memoryformer
