// memoryformer logits and generate: a model's forward over a token list, and a prompt continued
// with the KV cache (as text, bytes or token ids), alone or sharded over mpirun's ranks.
#include "commands.hpp"
#include "common/cli.hpp"
#include "common/errors.hpp"
#include "common/model_files.hpp"
#include "common/tokenizer.hpp"

#include <memoryformer/io/model_file.hpp>
#include <memoryformer/memoryformer.hpp>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace tool {
namespace {

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

}  // namespace

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
  const mf::Context ctx(threads);
  const io::SafetensorsFile file = open_model_file("--weights", weights, split);
  return with_model("--weights", file, io::Weights::map, ctx, [&](const auto& model) {
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
  const mf::Context ctx(threads);
  const io::SafetensorsFile file = open_model_file("--weights", weights, split);
  return with_model("--weights", file, io::Weights::map, ctx, [&](const auto& model) {
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

}  // namespace tool
