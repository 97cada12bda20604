// The memoryformer tool's subword tokenizer: SentencePiece (its C++ API), trained with byte
// fallback and no normalisation, so that decode(encode(text)) == text for any UTF-8 text. A
// tokenizer is identified by the xxHash64 of its model file, which datasets and model files record.
// SentencePiece is optional (MF_HAVE_SENTENCEPIECE, where CMake found it): without it,
// tool::Tokenizer refuses every tokenizer file, saying how to get it.
#pragma once

#include "cli.hpp"
#include "corpus.hpp"
#include "errors.hpp"

#include <cstdint>
#include <string>
#include <vector>

#if MF_HAVE_SENTENCEPIECE
#include <memoryformer/io/atomic_file.hpp>
#include <memoryformer/io/safetensors.hpp>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <xxhash.h>

#include <fstream>
#include <iterator>
#include <stdexcept>
#include <thread>
#include <unordered_map>

namespace tokenizer {

constexpr const char* kKind = "sentencepiece";

inline std::string checksum_of(const std::string& model_bytes) {
  return memoryformer::detail::hex64(XXH64(model_bytes.data(), model_bytes.size(), 0));
}

// The corpus's non-empty lines, what SentencePiece learns pieces from (it never sees the newlines;
// byte fallback encodes them).
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const corpus::Corpus& c) : corpus_(c) { advance(); }
  bool done() const override { return doc_ >= corpus_.documents.size(); }
  void Next() override { advance(); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void advance() {
    while (doc_ < corpus_.documents.size()) {
      const std::string& d = corpus_.documents[doc_];
      if (pos_ >= d.size()) {
        ++doc_;
        pos_ = 0;
        continue;
      }
      const std::size_t end = std::min(d.find('\n', pos_), d.size());
      line_ = d.substr(pos_, end - pos_);
      pos_ = end + 1;
      if (!line_.empty()) return;
    }
  }

  const corpus::Corpus& corpus_;
  std::size_t doc_ = 0, pos_ = 0;
  std::string line_;
};

// Trains a vocabulary of `vocab_size` pieces on the corpus and writes its model file atomically.
// Returns the model's bytes. A vocabulary the corpus cannot fill is a std::runtime_error whose
// message carries SentencePiece's limit.
inline std::string train(const corpus::Corpus& c, int vocab_size, const std::string& model_type,
                         const std::string& out) {
  LineIterator lines(c);
  std::string model;
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  const sentencepiece::util::Status status = sentencepiece::SentencePieceTrainer::Train(
      std::unordered_map<std::string, std::string>{
          {"vocab_size", std::to_string(vocab_size)},
          {"model_type", model_type},
          {"byte_fallback", "true"},                // any byte round-trips
          {"normalization_rule_name", "identity"},  // the text is encoded as it is
          {"remove_extra_whitespaces", "false"},
          {"character_coverage", "0.9995"},
          {"input_sentence_size", "2000000"},  // lines sampled from a larger corpus
          {"shuffle_input_sentence", "true"},
          {"num_threads", std::to_string(threads)},
          {"minloglevel", "1"},  // SentencePiece's progress log off
          {"model_prefix", ""}},
      &lines, &model);
  if (!status.ok())
    throw std::runtime_error(std::string("SentencePiece could not train the vocabulary: ") + status.message());
  memoryformer::io::write_file_atomically(out, model);
  return model;
}

class Tokenizer {
 public:
  // Loads a SentencePiece model file; `arg` names the flag in errors.
  Tokenizer(const std::string& arg, const std::string& path) : path_(path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw cli::UsageError(arg + " = \"" + path + "\": cannot open the tokenizer model file");
    bytes_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    const sentencepiece::util::Status status = processor_.LoadFromSerializedProto(bytes_);
    if (!status.ok())
      throw cli::UsageError(arg + " = \"" + path + "\": expected a SentencePiece model file (memoryformer " +
                            "tokenizer-train writes one), but " + status.message());
    checksum_ = checksum_of(bytes_);
  }

  int vocab_size() const { return processor_.GetPieceSize(); }
  const std::string& checksum() const { return checksum_; }
  const std::string& path() const { return path_; }

  std::vector<std::int32_t> encode(const std::string& text) const {
    std::vector<int> ids;
    const sentencepiece::util::Status status = processor_.Encode(text, &ids);
    if (!status.ok()) throw std::runtime_error(path_ + ": cannot encode text: " + status.message());
    return std::vector<std::int32_t>(ids.begin(), ids.end());
  }

  std::string decode(const std::vector<std::int32_t>& ids) const {
    std::string text;
    const sentencepiece::util::Status status = processor_.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
    if (!status.ok()) throw std::runtime_error(path_ + ": cannot decode ids: " + status.message());
    return text;
  }

 private:
  std::string path_, bytes_, checksum_;
  sentencepiece::SentencePieceProcessor processor_;
};

}  // namespace tokenizer

namespace tool {
using Tokenizer = tokenizer::Tokenizer;
}  // namespace tool

#else  // !MF_HAVE_SENTENCEPIECE

namespace tool {
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
}  // namespace tool

#endif  // MF_HAVE_SENTENCEPIECE
