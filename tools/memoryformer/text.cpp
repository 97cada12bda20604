// memoryformer tokenizer-train and tokenize: a SentencePiece subword vocabulary learnt from text,
// and text turned into a token dataset folder (docs/training.md, "Subword text"). Both need
// SentencePiece (MF_HAVE_SENTENCEPIECE); without it they say how to get it.
#include "commands.hpp"
#include "common/cli.hpp"
#include "common/corpus.hpp"
#include "common/errors.hpp"
#include "common/tokenizer.hpp"

#include <memoryformer/io/token_dataset.hpp>
#include <memoryformer/memoryformer.hpp>

#include <chrono>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

namespace tool {

namespace io = memoryformer::io;

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

}  // namespace tool
