// Models and optimizer state in safetensors files, by the names and shapes of method.md §5.
//
// A model file holds every parameter (tables as [K, 2^bits, width], norms and biases as [width],
// embedding and LM head as [V, d]) and `__metadata__` {"format": "memoryformer", "arch":
// "memoryformer" | "dense", "config": the ModelConfig as JSON}, plus XXH3-64 checksums. Loading
// takes the config from the file, so a file is self-describing; every tensor must be present with
// its shape, and nothing else may be. An optimizer file holds "<name>.exp_avg" and
// "<name>.exp_avg_sq" per parameter and the step count: together they resume training exactly.
#pragma once

#include "../config.hpp"
#include "../model.hpp"
#include "../model_config.hpp"
#include "../optim.hpp"
#include "../parameter.hpp"
#include "json.hpp"
#include "safetensors.hpp"

#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace memoryformer {
inline namespace v0 {
namespace io {

inline std::string config_to_json(const ModelConfig& c) {
  auto number = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return std::string(buf);
  };
  return "{\"vocab_size\": " + std::to_string(c.vocab_size) + ", \"d_model\": " + std::to_string(c.d_model) +
         ", \"n_layers\": " + std::to_string(c.n_layers) + ", \"n_heads\": " + std::to_string(c.n_heads) +
         ", \"tau\": " + std::to_string(c.tau) + ", \"expand_bits\": " + std::to_string(c.expand_bits) +
         ", \"rotary_pct\": " + number(c.rotary_pct) + ", \"rotary_base\": " + number(c.rotary_base) +
         ", \"score\": " + json_quote(to_string(c.score)) + ", \"temperature\": " + number(c.temperature) +
         ", \"norm_eps\": " + number(c.norm_eps) + ", \"layernorm_eps\": " + number(c.layernorm_eps) + "}";
}

// Every field of method.md §5 is required; unknown fields are an error (a newer writer's config
// would otherwise be half understood). `what` names the source in messages.
inline ModelConfig config_from_json(const std::string& text, const std::string& what) {
  const JsonValue root = parse_json(text, what);
  ModelConfig c;
  const std::map<std::string, int*> ints{
      {"vocab_size", &c.vocab_size}, {"d_model", &c.d_model}, {"n_layers", &c.n_layers},
      {"n_heads", &c.n_heads},       {"tau", &c.tau},         {"expand_bits", &c.expand_bits}};
  const std::map<std::string, double*> reals{{"rotary_pct", &c.rotary_pct},
                                             {"rotary_base", &c.rotary_base},
                                             {"temperature", &c.temperature},
                                             {"norm_eps", &c.norm_eps},
                                             {"layernorm_eps", &c.layernorm_eps}};
  for (const std::string& key : root.object_keys())
    if (!ints.count(key) && !reals.count(key) && key != "score")
      detail::fail(what.c_str(), "config key", json_quote(key), "one of the fields of method.md §5");
  for (const auto& [key, field] : ints) {
    const std::int64_t v = root.at(key).as_int64();
    if (v < -(1 << 30) || v > (1 << 30)) detail::fail(what.c_str(), key.c_str(), v, "a value in int range");
    *field = static_cast<int>(v);
  }
  for (const auto& [key, field] : reals) *field = root.at(key).as_number();
  const std::string& score = root.at("score").as_string();
  if (score == "paper")
    c.score = Score::paper;
  else if (score == "l1")
    c.score = Score::l1;
  else
    detail::fail(what.c_str(), "score", json_quote(score), "\"paper\" or \"l1\"");
  try {
    c.validate();
  } catch (const Error& e) {  // say which file the bad config came from
    const std::string message = e.what(), prefix = "memoryformer: ";
    throw Error(prefix + what + ": " + message.substr(message.rfind(prefix, 0) == 0 ? prefix.size() : 0));
  }
  return c;
}

// The file shape of a parameter (method.md §5): tables [K, rows / K, width]; one-row tensors
// (norm scales, biases) [width]; the rest as stored.
template <class Scalar>
std::vector<std::int64_t> file_shape(const Parameter<Scalar>& p, const ModelConfig& config) {
  const std::string suffix = ".tables";
  const bool is_table = p.name.size() > suffix.size() &&
                        p.name.compare(p.name.size() - suffix.size(), suffix.size(), suffix) == 0;
  if (is_table) {
    const std::int64_t k = config.num_chunks();
    return {k, static_cast<std::int64_t>(p.rows) / k, static_cast<std::int64_t>(p.cols)};
  }
  if (p.rows == 1) return {static_cast<std::int64_t>(p.cols)};
  return {static_cast<std::int64_t>(p.rows), static_cast<std::int64_t>(p.cols)};
}

namespace detail {

inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Converts tensor `name` of `file` (any float or int dtype) into out, once its shape is `want`.
template <class Scalar>
void read_into(const SafetensorsFile& file, const std::string& name, const std::vector<std::int64_t>& want,
               Scalar* out) {
  const TensorInfo& t = file.info(name);
  if (t.shape != want)
    memoryformer::detail::fail(("load " + file.path()).c_str(), ("tensor '" + name + "' shape").c_str(),
                               shape_string(t.shape), shape_string(want));
  file.read(name, out);
}

// Fails if the file holds a tensor not in `expected`.
inline void reject_extra_tensors(const SafetensorsFile& file, const std::set<std::string>& expected) {
  for (const TensorInfo& t : file.tensors())
    if (!expected.count(t.name))
      memoryformer::detail::fail(("load " + file.path()).c_str(), "tensor", "'" + t.name + "'",
                                 "only the tensors of the model (method.md §5); this one is unknown");
}

inline const std::string& metadata_entry(const SafetensorsFile& file, const std::string& key) {
  const auto it = file.metadata().find(key);
  if (it == file.metadata().end())
    memoryformer::detail::fail(("load " + file.path()).c_str(), "__metadata__", "no \"" + key + "\" entry",
                               "a file written by save_model() or another method.md §5 writer");
  return it->second;
}

}  // namespace detail

// Writes every parameter of `model` (dtype of its Scalar) to `path`, atomically; `extra` adds
// metadata entries of the caller's (e.g. the tokenizer).
template <class Model>
void save_model(Model& model, const std::string& path, std::map<std::string, std::string> extra = {}) {
  using Scalar = typename Model::Scalar;
  const ParameterList<Scalar> params = model.parameters();
  std::vector<TensorData> tensors;
  for (const auto& p : params) tensors.push_back(tensor(p.name, p.value, file_shape(p, model.config())));
  extra["format"] = "memoryformer";
  extra["arch"] = Model::Block::kArch;
  extra["config"] = config_to_json(model.config());
  write_safetensors(path, tensors, std::move(extra));
}

// The config stored in a model file.
inline ModelConfig load_config(const SafetensorsFile& file) {
  if (detail::metadata_entry(file, "format") != "memoryformer")
    memoryformer::detail::fail(("load " + file.path()).c_str(), "format",
                               json_quote(detail::metadata_entry(file, "format")), "\"memoryformer\"");
  return config_from_json(detail::metadata_entry(file, "config"), "load " + file.path() + ": config");
}

// A model of type Model (its block type must be the file's "arch") with the file's config and
// weights; `file` comes from SafetensorsFile::open or, for bytes in memory, from_memory.
template <class Model>
Model load_model(const SafetensorsFile& file) {
  const std::string& path = file.path();
  const ModelConfig config = load_config(file);
  const auto arch = file.metadata().find("arch");
  const std::string file_arch = arch == file.metadata().end() ? "memoryformer" : arch->second;
  if (file_arch != Model::Block::kArch)
    memoryformer::detail::fail(("load " + path).c_str(), "arch", json_quote(file_arch),
                               std::string("\"") + Model::Block::kArch + "\" for this model type");
  // A hostile config could ask for terabytes: the file must have a byte (the smallest dtype) for
  // every parameter value before the model is built. Missing tensors are named further down.
  const std::int64_t needed = Model::parameter_values(config);
  if (static_cast<std::uint64_t>(needed) > file.data_size())
    memoryformer::detail::fail(("load " + path).c_str(), "config", config_to_json(config),
                               "a model the file can hold: it needs " + std::to_string(needed) +
                                   " parameter values, but the data section holds only " +
                                   std::to_string(file.data_size()) + " bytes");
  Model model(config);
  std::set<std::string> names;
  for (const auto& p : model.parameters()) {
    detail::read_into(file, p.name, file_shape(p, config), p.value);
    names.insert(p.name);
  }
  detail::reject_extra_tensors(file, names);
  return model;
}

// The same from a path.
template <class Model>
Model load_model(const std::string& path) {
  return load_model<Model>(SafetensorsFile::open(path));
}

// Writes the optimizer's moments and step count for `params` (the list it was built with), atomically.
template <class Scalar>
void save_optimizer(const AdamW<Scalar>& optimizer, const ParameterList<Scalar>& params,
                    const std::string& path) {
  if (optimizer.parameter_names().size() != params.size())
    memoryformer::detail::fail(
        "save_optimizer", "params", std::to_string(params.size()) + " parameters",
        "the " + std::to_string(optimizer.parameter_names().size()) + " of the optimizer");
  std::vector<TensorData> tensors;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::vector<std::int64_t> shape{static_cast<std::int64_t>(params[i].size())};
    tensors.push_back(tensor(params[i].name + ".exp_avg", optimizer.first_moment(i).data(), shape));
    tensors.push_back(tensor(params[i].name + ".exp_avg_sq", optimizer.second_moment(i).data(), shape));
  }
  write_safetensors(path, tensors,
                    {{"format", "memoryformer-adamw"}, {"step", std::to_string(optimizer.step_count())}});
}

// Restores what save_optimizer() wrote into an optimizer built for the same parameter list.
template <class Scalar>
void load_optimizer(AdamW<Scalar>& optimizer, const ParameterList<Scalar>& params, const std::string& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  if (detail::metadata_entry(file, "format") != "memoryformer-adamw")
    memoryformer::detail::fail(("load " + path).c_str(), "format",
                               json_quote(detail::metadata_entry(file, "format")), "\"memoryformer-adamw\"");
  const std::string& step_text = detail::metadata_entry(file, "step");
  const long steps = static_cast<long>(parse_json(step_text, "load " + path + ": step").as_int64());
  std::vector<std::vector<Scalar>> first, second;
  std::set<std::string> names;
  for (const auto& p : params) {
    for (auto* moments : {&first, &second}) {
      const std::string name = p.name + (moments == &first ? ".exp_avg" : ".exp_avg_sq");
      moments->emplace_back(static_cast<std::size_t>(p.size()));
      detail::read_into(file, name, {static_cast<std::int64_t>(p.size())}, moments->back().data());
      names.insert(name);
    }
  }
  detail::reject_extra_tensors(file, names);
  optimizer.restore(steps, std::move(first), std::move(second));
}

}  // namespace io
}  // namespace v0
}  // namespace memoryformer
