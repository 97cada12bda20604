// Models and optimizer state in safetensors files, by the names and shapes of method.md §5.
//
// A model file holds every parameter (tables as [K, 2^bits, width], norms and biases as [width],
// embedding and LM head as [V, d]) and `__metadata__` {"format": "memoryformer", "arch":
// "memoryformer" | "dense", "config": the ModelConfig as JSON}, plus XXH3-64 checksums. Loading
// takes the config from the file, so a file is self-describing; every tensor must be present with
// its shape, and nothing else may be. An optimizer file holds "<name>.exp_avg" and
// "<name>.exp_avg_sq" per parameter and the step count: together they resume training exactly.
//
// Compressed tables (save_model(..., TableType), the `memoryformer convert` command). Metadata
// "tables" says how every "*.tables" tensor is stored; all other tensors are unchanged:
//  - no "tables" entry: float tables (F32 as written; F64, F16 and BF16 are read too);
//  - "tables": "bf16": each table BF16 [K, 2^bits, width], rounded to nearest even;
//  - "tables": "int8": each table I8 [K, 2^bits, width] plus an F32 tensor "<table name>.scale"
//    [K, 2^bits] of per-row symmetric scales (value = scale[k, row] * q); quantise_int8_rows() of
//    table_storage.hpp, the rounding PackedMemoryLayer uses.
// Loading dequantises into the model's Scalar with the same functions PackedMemoryLayer uses, so
// the loaded tables equal PackedMemoryLayer(layer, type).tables() exactly. A table whose dtype does
// not match "tables" (or an int8 table without its scale) is an error naming the tensor.
#pragma once

#include "../config.hpp"
#include "../model.hpp"
#include "../model_config.hpp"
#include "../optim.hpp"
#include "../parameter.hpp"
#include "../table_storage.hpp"
#include "json.hpp"
#include "safetensors.hpp"

#include <cstdint>
#include <cstdio>
#include <list>
#include <map>
#include <set>
#include <string>
#include <type_traits>
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
  if (memoryformer::detail::is_table_name(p.name)) {
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

inline const TensorInfo& checked_info(const SafetensorsFile& file, const std::string& name,
                                      const std::vector<std::int64_t>& want) {
  const TensorInfo& t = file.info(name);
  if (t.shape != want)
    memoryformer::detail::fail(("load " + file.path()).c_str(), ("tensor '" + name + "' shape").c_str(),
                               shape_string(t.shape), shape_string(want));
  return t;
}

inline void require_dtype(const SafetensorsFile& file, const TensorInfo& t, DType want,
                          const std::string& why) {
  if (t.dtype != want)
    memoryformer::detail::fail(("load " + file.path()).c_str(), ("tensor '" + t.name + "' dtype").c_str(),
                               to_string(t.dtype), std::string(to_string(want)) + " " + why);
}

// Converts tensor `name` of `file` (any float or int dtype) into out, once its shape is `want`.
template <class Scalar>
void read_into(const SafetensorsFile& file, const std::string& name, const std::vector<std::int64_t>& want,
               Scalar* out) {
  checked_info(file, name, want);
  file.read(name, out);
}

// Reads a table stored as `type` into out (float values, dequantised if need be); `names` gains the
// tensors it used.
template <class Scalar>
void read_table(const SafetensorsFile& file, const std::string& name, const std::vector<std::int64_t>& shape,
                TableType type, Scalar* out, std::set<std::string>& names) {
  const TensorInfo& t = checked_info(file, name, shape);
  names.insert(name);
  switch (type) {
    case TableType::fp32:
      if (t.dtype != DType::F32 && t.dtype != DType::F64 && t.dtype != DType::F16 && t.dtype != DType::BF16)
        memoryformer::detail::fail(("load " + file.path()).c_str(), ("tensor '" + name + "' dtype").c_str(),
                                   to_string(t.dtype),
                                   "a float dtype (F32, F64, F16, BF16); int8 tables need __metadata__ "
                                   "\"tables\": \"int8\" and a .scale tensor");
      file.read(name, out);
      return;
    case TableType::bf16:
      require_dtype(file, t, DType::BF16, "(__metadata__ \"tables\" is \"bf16\")");
      file.read(name, out);  // bf16_to_float, as PackedMemoryLayer widens
      return;
    case TableType::int8:
      break;
  }
  require_dtype(file, t, DType::I8, "(__metadata__ \"tables\" is \"int8\")");
  const std::string scale_name = name + ".scale";
  const TensorInfo& s = checked_info(file, scale_name, {shape[0], shape[1]});
  require_dtype(file, s, DType::F32, "(the per-row scales of an int8 table)");
  names.insert(scale_name);
  const auto rows = static_cast<std::size_t>(shape[0] * shape[1]), cols = static_cast<std::size_t>(shape[2]);
  std::vector<float> scale(rows);
  file.read(scale_name, scale.data());
  const auto* q = reinterpret_cast<const std::int8_t*>(file.data(name));
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c)
      out[r * cols + c] = static_cast<Scalar>(dequantise_int8(q[r * cols + c], scale[r]));
}

// A table's values as float, the type the roundings of table_storage.hpp are defined on (a copy
// only when Scalar is not float).
template <class Scalar>
const float* table_as_float(const Parameter<Scalar>& p, std::vector<float>& buffer) {
  if constexpr (std::is_same_v<Scalar, float>) {
    return p.value;
  } else {
    buffer.assign(p.value, p.value + p.size());
    return buffer.data();
  }
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

// Writes every parameter of `model` to `path`, atomically: tables stored as `tables` (see the top of
// this file), everything else in the dtype of its Scalar. `extra` adds metadata entries of the
// caller's (e.g. the tokenizer).
template <class Model>
void save_model(Model& model, const std::string& path, std::map<std::string, std::string> extra = {},
                TableType tables = TableType::fp32) {
  using Scalar = typename Model::Scalar;
  const ParameterList<Scalar> params = model.parameters();
  std::vector<TensorData> tensors;
  // Compressed copies, alive until the write; lists, so that adding one moves no other.
  std::list<std::vector<std::uint16_t>> bf16;
  std::list<std::vector<std::int8_t>> int8;
  std::list<std::vector<float>> scales;
  std::vector<float> buffer;
  bool has_tables = false;
  for (const auto& p : params) {
    const std::vector<std::int64_t> shape = file_shape(p, model.config());
    if (tables == TableType::fp32 || !memoryformer::detail::is_table_name(p.name)) {
      tensors.push_back(tensor(p.name, p.value, shape));
      continue;
    }
    has_tables = true;
    const float* values = detail::table_as_float(p, buffer);
    const auto n = static_cast<std::size_t>(p.size());
    if (tables == TableType::bf16) {
      auto& out = bf16.emplace_back(n);
      for (std::size_t i = 0; i < n; ++i) out[i] = float_to_bf16(values[i]);
      tensors.push_back({p.name, DType::BF16, shape, out.data()});
    } else {
      auto& q = int8.emplace_back(n);
      auto& s = scales.emplace_back(static_cast<std::size_t>(p.rows));
      quantise_int8_rows(values, p.rows, p.cols, q.data(), s.data());
      tensors.push_back({p.name, DType::I8, shape, q.data()});
      tensors.push_back({p.name + ".scale", DType::F32, {shape[0], shape[1]}, s.data()});
    }
  }
  if (tables != TableType::fp32 && !has_tables)
    memoryformer::detail::fail(
        "save_model", "tables", to_string(tables),
        std::string("fp32: a model of arch \"") + Model::Block::kArch + "\" has no hash tables to compress");
  extra["format"] = "memoryformer";
  extra["arch"] = Model::Block::kArch;
  extra["config"] = config_to_json(model.config());
  if (tables == TableType::fp32)
    extra.erase("tables");
  else
    extra["tables"] = to_string(tables);
  write_safetensors(path, tensors, std::move(extra));
}

// The config stored in a model file.
inline ModelConfig load_config(const SafetensorsFile& file) {
  if (detail::metadata_entry(file, "format") != "memoryformer")
    memoryformer::detail::fail(("load " + file.path()).c_str(), "format",
                               json_quote(detail::metadata_entry(file, "format")), "\"memoryformer\"");
  return config_from_json(detail::metadata_entry(file, "config"), "load " + file.path() + ": config");
}

// The block type of a model file: its "arch" entry, "memoryformer" when there is none.
inline std::string load_arch(const SafetensorsFile& file) {
  const auto arch = file.metadata().find("arch");
  return arch == file.metadata().end() ? "memoryformer" : arch->second;
}

// How the file stores its tables: its "tables" entry, fp32 (float tables) when there is none.
inline TableType load_table_type(const SafetensorsFile& file) {
  const auto it = file.metadata().find("tables");
  if (it == file.metadata().end()) return TableType::fp32;
  for (const TableType type : {TableType::bf16, TableType::int8})
    if (it->second == to_string(type)) return type;
  memoryformer::detail::fail(("load " + file.path()).c_str(), "tables", json_quote(it->second),
                             "\"bf16\" or \"int8\" (or no entry, for float tables)");
}

// A model of type Model (its block type must be the file's "arch") with the file's config and
// weights; compressed tables are dequantised into Scalar.
template <class Model>
Model load_model(const SafetensorsFile& file) {
  const ModelConfig config = load_config(file);
  const std::string file_arch = load_arch(file);
  if (file_arch != Model::Block::kArch)
    memoryformer::detail::fail(("load " + file.path()).c_str(), "arch", json_quote(file_arch),
                               std::string("\"") + Model::Block::kArch + "\" for this model type");
  const TableType tables = load_table_type(file);
  // A hostile config could ask for terabytes: the file must have a byte (the smallest dtype) for
  // every parameter value before the model is built. Missing tensors are named further down.
  const std::int64_t needed = Model::parameter_values(config);
  if (static_cast<std::uint64_t>(needed) > file.data_size())
    memoryformer::detail::fail(("load " + file.path()).c_str(), "config", config_to_json(config),
                               "a model the file can hold: it needs " + std::to_string(needed) +
                                   " parameter values, but the data section holds only " +
                                   std::to_string(file.data_size()) + " bytes");
  Model model(config);
  std::set<std::string> names;
  for (const auto& p : model.parameters()) {
    const std::vector<std::int64_t> shape = file_shape(p, config);
    if (memoryformer::detail::is_table_name(p.name)) {
      detail::read_table(file, p.name, shape, tables, p.value, names);
    } else {
      detail::read_into(file, p.name, shape, p.value);
      names.insert(p.name);
    }
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
