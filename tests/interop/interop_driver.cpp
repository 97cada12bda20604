// The C++ side of the PyTorch cross-checks (tests/interop/check_interop.py): runs the library on a
// weight file and writes what it computed to a safetensors file the Python reference compares with.
//
//   interop_driver forward-backward --weights M --tokens 1,2,3/4,5,6 [--targets 2,3,4/5,6,7] --out R
//       loads M (io::load_model) and writes R with "logits" [B*S, V] and "codes.<site>" [B*S, K]
//       (the bucket codes of every hash: "blocks.{i}.attn", "blocks.{i}.mlp.up", "blocks.{i}.mlp.down",
//       so a flipped bucket is told apart from a wrong formula); with --targets also "loss" (F64,
//       shape []) and "grad.<name>" for every parameter, by its docs/method.md §5 name and shape.
//   interop_driver init --config JSON --seed S --out M [--tokens T --logits-out R]
//       writes a C++-initialised model (io::save_model); with --tokens, R as above (no targets)
//       from the model in memory, before any file round trip.
//
// Tokens: ',' between the tokens of a sequence, '/' between sequences of equal length.
#include "cli.hpp"

#include <memoryformer/io/model_file.hpp>
#include <memoryformer/loss.hpp>
#include <memoryformer/model.hpp>

#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

namespace mf = memoryformer;

namespace {

using Model = mf::MemoryFormerModel<float>;

mf::TokenMatrix parse_tokens(const std::string& flag, const std::string& text) {
  std::vector<std::vector<std::int32_t>> rows(1);
  std::string number;
  auto flush = [&] {
    long long value = 0;
    const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
    if (number.empty() || ec != std::errc() || end != number.data() + number.size() || value < 0 ||
        value > INT32_MAX)
      throw cli::UsageError(flag + " = \"" + text + "\": token \"" + number +
                            "\" is not an integer in [0, 2^31); expected e.g. 1,2,3/4,5,6");
    rows.back().push_back(static_cast<std::int32_t>(value));
    number.clear();
  };
  for (const char ch : text) {
    if (ch == ',' || ch == '/') {
      flush();
      if (ch == '/') rows.emplace_back();
    } else {
      number += ch;
    }
  }
  flush();
  mf::TokenMatrix tokens(static_cast<Eigen::Index>(rows.size()), static_cast<Eigen::Index>(rows[0].size()));
  for (std::size_t b = 0; b < rows.size(); ++b) {
    if (rows[b].size() != rows[0].size())
      throw cli::UsageError(flag + " = \"" + text + "\": sequence " + std::to_string(b) + " has " +
                            std::to_string(rows[b].size()) + " tokens, expected " +
                            std::to_string(rows[0].size()) + " like the first");
    for (std::size_t t = 0; t < rows[b].size(); ++t)
      tokens(static_cast<Eigen::Index>(b), static_cast<Eigen::Index>(t)) = rows[b][t];
  }
  return tokens;
}

// Logits, the codes of every hash site, and with targets the loss and every parameter gradient.
void run(Model& model, const mf::TokenMatrix& tokens, const mf::TokenMatrix* targets,
         const std::string& out) {
  if (targets != nullptr && (targets->rows() != tokens.rows() || targets->cols() != tokens.cols()))
    throw cli::UsageError("--targets: " + std::to_string(targets->rows()) + " x " +
                          std::to_string(targets->cols()) + " ids, expected the shape of --tokens (" +
                          std::to_string(tokens.rows()) + " x " + std::to_string(tokens.cols()) + ")");
  Model::Saved saved;
  const mf::RowMatrix<float> logits = model.forward(tokens, &saved);
  std::vector<mf::io::TensorData> tensors{mf::io::tensor("logits", logits)};
  for (int i = 0; i < model.n_layers(); ++i) {
    const auto& block = saved.blocks[static_cast<std::size_t>(i)];
    const std::string prefix = "codes.blocks." + std::to_string(i);
    tensors.push_back(mf::io::tensor(prefix + ".attn", block.qkv_hash.codes));
    tensors.push_back(mf::io::tensor(prefix + ".mlp.up", block.mlp.up_hash.codes));
    tensors.push_back(mf::io::tensor(prefix + ".mlp.down", block.mlp.down_hash.codes));
  }
  double loss = 0;
  if (targets != nullptr) {
    model.zero_grad();
    mf::RowMatrix<float> dlogits;
    loss = mf::cross_entropy<float>(logits, *targets, &dlogits);
    model.backward(saved, dlogits);
    tensors.push_back(mf::io::tensor("loss", &loss, {}));
  }
  const mf::ParameterList<float> params = model.parameters();
  if (targets != nullptr)
    for (const auto& p : params)
      tensors.push_back(mf::io::TensorData{"grad." + p.name, mf::io::DType::F32,
                                           mf::io::file_shape(p, model.config()), p.grad});
  mf::io::write_safetensors(out, tensors, {{"format", "memoryformer-interop"}});
}

int forward_backward(int argc, char** argv) {
  std::string weights, tokens, targets, out;
  cli::Flags f("interop_driver forward-backward --weights M --tokens T [--targets T] --out R");
  f.add("--weights", &weights, "model file (docs/method.md §5)");
  f.add("--tokens", &tokens, "input ids, e.g. 1,2,3/4,5,6");
  f.add("--targets", &targets, "target ids in the shape of --tokens: adds loss and gradients");
  f.add("--out", &out, "result file");
  if (!f.parse(argc, argv)) return 0;
  if (weights.empty() || tokens.empty() || out.empty())
    throw cli::UsageError("--weights, --tokens and --out are required");
  Model model = mf::io::load_model<Model>(weights);
  const mf::TokenMatrix target_ids = targets.empty() ? mf::TokenMatrix() : parse_tokens("--targets", targets);
  run(model, parse_tokens("--tokens", tokens), targets.empty() ? nullptr : &target_ids, out);
  return 0;
}

int init(int argc, char** argv) {
  std::string config_json, out, tokens, logits_out;
  int seed = 0;
  cli::Flags f("interop_driver init --config JSON --seed S --out M [--tokens T --logits-out R]");
  f.add("--config", &config_json, "the docs/method.md §5 config as JSON");
  f.add("--seed", &seed, "ModelConfig::seed", 0, INT32_MAX);
  f.add("--out", &out, "model file to write");
  f.add("--tokens", &tokens, "input ids for --logits-out, e.g. 1,2,3/4,5,6");
  f.add("--logits-out", &logits_out, "result file of the model in memory on --tokens");
  if (!f.parse(argc, argv)) return 0;
  if (config_json.empty() || out.empty()) throw cli::UsageError("--config and --out are required");
  if (tokens.empty() != logits_out.empty())
    throw cli::UsageError("--tokens and --logits-out go together; got only one of them");
  mf::ModelConfig config = mf::io::config_from_json(config_json, "--config");
  config.seed = static_cast<std::uint64_t>(seed);
  Model model(config);
  mf::io::save_model(model, out);
  if (!tokens.empty()) run(model, parse_tokens("--tokens", tokens), nullptr, logits_out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  try {
    // The subcommand takes argv[0]'s place, so the flag parser sees the rest.
    if (command == "forward-backward") return forward_backward(argc - 1, argv + 1);
    if (command == "init") return init(argc - 1, argv + 1);
    throw cli::UsageError("command = \"" + command + "\", expected forward-backward or init");
  } catch (const cli::UsageError& e) {
    std::cerr << "interop_driver: " << e.what() << "\n(see interop_driver forward-backward|init --help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "interop_driver " << command << ": " << e.what() << '\n';
    return 1;
  }
}
