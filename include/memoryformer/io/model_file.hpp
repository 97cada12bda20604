// Models and optimizer state in safetensors files, by the names and shapes of docs/method.md §5.
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
//    table_format.hpp, the rounding MemoryLayer::compress uses.
// A float model loads bf16 and int8 tables as they are stored (TableStore), never dequantised and
// quantised again; a double model holds fp32 alone and widens them. A table whose dtype does not
// match "tables" (or an int8 table without its scale) is an error naming the tensor.
//
// A file that does not hold a model as described here is a FormatError naming the file, the
// tensor and the field (a metadata entry is the field "__metadata__.<key>").
//
// Loading allocates what it fills and nothing else: no random initialisation, no gradients (they
// come with the first backward() or parameters()). With Weights::map the tables are not even
// copied: the writer starts every table on a 64-byte boundary, in the [rows, width] order the
// kernels read, so the model reads them in place from the file's mapping.
#pragma once

#include "../config.hpp"
#include "../context.hpp"
#include "../model.hpp"
#include "../model_config.hpp"
#include "../output_shard.hpp"
#include "../optim.hpp"
#include "../parameter.hpp"
#include "../table_format.hpp"
#include "json.hpp"
#include "safetensors.hpp"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
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
         ", \"norm_eps\": " + number(c.norm_eps) + ", \"layernorm_eps\": " + number(c.layernorm_eps) +
         ", \"rms_form\": " + json_quote(to_string(c.rms_form)) +
         ", \"embedding_init\": " + json_quote(to_string(c.embedding_init)) +
         ", \"memory_block_activation\": " + json_quote(to_string(c.memory_block_activation)) +
         ", \"output_projection\": " + (c.output_projection ? "true" : "false") + "}";
}


// Every field of docs/method.md §5 is required but the four variants (rms_form, embedding_init,
// memory_block_activation, output_projection: absent means the default); unknown fields are an error (a newer writer's config
// would otherwise be half understood). The text is `file`, or its `field` (parse_json); errors,
// a config that ModelConfig::validate rejects included, are a FormatError naming both.
inline ModelConfig config_from_json(const std::string& text, const std::string& file,
                                    const std::string& field = "") {
  const JsonValue root = parse_json(text, file, field);
  const memoryformer::detail::JsonSource source{file, field};
  const auto bad = [&](const std::string& path, const std::string& problem) {
    throw FormatError(file, "", source.field_at(path), problem);
  };
  ModelConfig c;
  const std::map<std::string, int*> ints{
      {"vocab_size", &c.vocab_size}, {"d_model", &c.d_model}, {"n_layers", &c.n_layers},
      {"n_heads", &c.n_heads},       {"tau", &c.tau},         {"expand_bits", &c.expand_bits}};
  const std::map<std::string, double*> reals{{"rotary_pct", &c.rotary_pct},
                                             {"rotary_base", &c.rotary_base},
                                             {"temperature", &c.temperature},
                                             {"norm_eps", &c.norm_eps},
                                             {"layernorm_eps", &c.layernorm_eps}};
  for (std::size_t i = 0; i < root.object_keys().size(); ++i) {
    const std::string& key = root.object_keys()[i];
    if (!ints.count(key) && !reals.count(key) && key != "score" && key != "rms_form" && key != "embedding_init" &&
        key != "memory_block_activation" && key != "output_projection")
      bad(root.object_values()[i].path(), "unknown key, expected one of the fields of docs/method.md §5");
  }
  for (const auto& [key, target] : ints) {
    const JsonValue& value = root.at(key);
    const std::int64_t v = value.as_int64();
    if (v < -(1 << 30) || v > (1 << 30))
      bad(value.path(), std::to_string(v) + ", expected a value in int range");
    *target = static_cast<int>(v);
  }
  for (const auto& [key, target] : reals) *target = root.at(key).as_number();
  // score is required, the variants optional (absent: the default); each is one of its enum's names.
  const auto read_choice = [&](const char* key, auto& target) {
    using Enum = std::remove_reference_t<decltype(target)>;
    const JsonValue* value = root.find(key);
    if (value == nullptr) return;
    if (const auto e = memoryformer::detail::enum_named<Enum>(value->as_string())) {
      target = *e;
      return;
    }
    bad(value->path(), json_quote(value->as_string()) + ", expected " +
                           memoryformer::detail::enum_name_list<Enum>(" or ", "\""));
  };
  root.at("score");  // required: its absence is an error naming it
  read_choice("score", c.score);
  read_choice("rms_form", c.rms_form);
  read_choice("embedding_init", c.embedding_init);
  read_choice("memory_block_activation", c.memory_block_activation);
  if (const JsonValue* v = root.find("output_projection")) c.output_projection = v->as_bool();
  try {
    c.validate();
  } catch (const ArgumentError& e) {  // a bad config in a file is a bad file, and says which
    const std::string message = e.what(), prefix = "memoryformer: ";
    throw FormatError(file, "", field, message.substr(message.rfind(prefix, 0) == 0 ? prefix.size() : 0));
  }
  return c;
}

// The file shape of a parameter (docs/method.md §5): tables [K, rows / K, width]; one-row tensors
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

}  // namespace io

namespace detail {

inline const io::TensorInfo& checked_info(const io::SafetensorsFile& file, const std::string& name,
                                      const std::vector<std::int64_t>& want) {
  const io::TensorInfo& t = file.info(name);
  if (t.shape != want)
    throw FormatError(file.path(), name, "shape", shape_string(t.shape) + ", expected " + shape_string(want));
  return t;
}

inline void require_dtype(const io::SafetensorsFile& file, const io::TensorInfo& t, io::DType want,
                          const std::string& why) {
  if (t.dtype != want)
    throw FormatError(file.path(), t.name, "dtype",
                      std::string(to_string(t.dtype)) + ", expected " + to_string(want) + " " + why);
}

// Converts tensor `name` of `file` (any float or int dtype) into out, once its shape is `want`.
template <class Scalar>
void read_into(const io::SafetensorsFile& file, const std::string& name, const std::vector<std::int64_t>& want,
               Scalar* out) {
  checked_info(file, name, want);
  file.read(name, out);
}

// Fails if the file holds a tensor not in `expected`.
inline void reject_extra_tensors(const io::SafetensorsFile& file, const std::set<std::string>& expected) {
  for (const io::TensorInfo& t : file.tensors())
    if (!expected.count(t.name))
      throw FormatError(file.path(), t.name, "",
                        "unknown, expected only the tensors of the model (docs/method.md §5)");
}

inline const std::string& metadata_entry(const io::SafetensorsFile& file, const std::string& key) {
  const auto it = file.metadata().find(key);
  if (it == file.metadata().end())
    throw FormatError(file.path(), "", "__metadata__." + key,
                      "missing, expected a file written by save_model() or another docs/method.md §5 writer");
  return it->second;
}


// A table's values as float row-major, the type the roundings of table_format.hpp are defined on:
// the stored array where it is one, else a copy in `buffer`.
template <class Scalar>
const float* table_as_float(const MemoryLayer<Scalar>& layer, std::vector<float>& buffer) {
  const TableStore<Scalar>& store = layer.table_store();
  if constexpr (std::is_same_v<Scalar, float>)
    if (store.type() == TableType::fp32 && store.layout() == TableLayout::rows)
      return static_cast<const float*>(store.stored_values());
  const RowMatrix<Scalar> values = layer.table_values();
  buffer.assign(values.data(), values.data() + values.size());
  return buffer.data();
}

// The file tensors of one Memory Layer's tables stored as `type`: "<name>.tables" and, for int8,
// "<name>.tables.scale". Tables already stored so (in rows) are written as they are; others are
// converted from their float values. `keep` holds what the tensors point into until the write.
template <class Scalar>
void append_table_tensors(const std::string& name, const MemoryLayer<Scalar>& layer, TableType type,
                          const ModelConfig& config, std::vector<io::TensorData>& out,
                          std::list<std::vector<std::uint8_t>>& keep) {
  const TableStore<Scalar>& store = layer.table_store();
  const std::int64_t k = config.num_chunks();
  const std::vector<std::int64_t> shape{k, static_cast<std::int64_t>(store.rows()) / k,
                                        static_cast<std::int64_t>(store.width())};
  const std::string table = name + ".tables";
  const auto n = static_cast<std::size_t>(store.rows() * store.width());
  const auto bytes = [&](std::size_t size) -> std::uint8_t* { return keep.emplace_back(size).data(); };
  if (type == TableType::fp32) {
    if constexpr (!std::is_same_v<Scalar, float>) {
      const RowMatrix<Scalar> values = layer.table_values();
      auto* copy = bytes(n * sizeof(Scalar));
      std::memcpy(copy, values.data(), n * sizeof(Scalar));
      out.push_back({table, io::dtype_of<Scalar>(), shape, copy});
      return;
    }
  }
  const bool as_stored = store.type() == type && store.layout() == TableLayout::rows;
  if (as_stored) {
    out.push_back({table, type == TableType::fp32 ? io::DType::F32 : type == TableType::bf16 ? io::DType::BF16 : io::DType::I8,
                   shape, store.stored_values()});
    if (type == TableType::int8)
      out.push_back({table + ".scale", io::DType::F32, {shape[0], shape[1]}, store.stored_row_scales()});
    return;
  }
  std::vector<float> buffer;
  const float* values = table_as_float(layer, buffer);
  switch (type) {
    case TableType::fp32: {
      auto* copy = bytes(n * sizeof(float));
      std::memcpy(copy, values, n * sizeof(float));
      out.push_back({table, io::DType::F32, shape, copy});
      return;
    }
    case TableType::bf16: {
      auto* q = reinterpret_cast<std::uint16_t*>(bytes(n * sizeof(std::uint16_t)));
      for (std::size_t i = 0; i < n; ++i) q[i] = float_to_bf16(values[i]);
      out.push_back({table, io::DType::BF16, shape, q});
      return;
    }
    case TableType::int8:
      break;
  }
  auto* q = reinterpret_cast<std::int8_t*>(bytes(n));
  auto* scales = reinterpret_cast<float*>(bytes(static_cast<std::size_t>(store.rows()) * sizeof(float)));
  quantise_int8_rows(values, store.rows(), store.width(), q, scales);
  out.push_back({table, io::DType::I8, shape, q});
  out.push_back({table + ".scale", io::DType::F32, {shape[0], shape[1]}, scales});
}

// The metadata save_model writes: the caller's entries, then format, arch, config and tables.
template <class Model>
std::map<std::string, std::string> model_metadata(const ModelConfig& config, TableType tables,
                                                  std::map<std::string, std::string> extra) {
  extra["format"] = "memoryformer";
  extra["arch"] = Model::Block::kArch;
  extra["config"] = io::config_to_json(config);
  if (tables == TableType::fp32)
    extra.erase("tables");
  else
    extra["tables"] = to_string(tables);
  return extra;
}

// The file tensors of every weight of `model`, tables stored as `tables`; `keep` holds converted
// tables until the write.
template <class Model>
void append_model_tensors(Model& model, TableType tables, std::vector<io::TensorData>& tensors,
                          std::list<std::vector<std::uint8_t>>& keep) {
  for (const auto& p : model.weights()) tensors.push_back(io::tensor(p.name, p.value, io::file_shape(p, model.config())));
  for (const auto& [name, layer] : model.memory_layers())
    append_table_tensors(name, *layer, tables, model.config(), tensors, keep);
}

// AdamW's two moments of every parameter as 1-D tensors "<name>.exp_avg" and "<name>.exp_avg_sq".
template <class Scalar>
void append_optimizer_tensors(const char* where, const AdamW<Scalar>& optimizer, const ParameterList<Scalar>& params,
                              std::vector<io::TensorData>& tensors) {
  if (optimizer.parameter_names().size() != params.size())
    fail(where, "params", std::to_string(params.size()) + " parameters",
         "the " + std::to_string(optimizer.parameter_names().size()) + " of the optimizer");
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::vector<std::int64_t> shape{static_cast<std::int64_t>(params[i].size())};
    tensors.push_back(io::tensor(params[i].name + ".exp_avg", optimizer.first_moment(i).data(), shape));
    tensors.push_back(io::tensor(params[i].name + ".exp_avg_sq", optimizer.second_moment(i).data(), shape));
  }
}

// Restores `steps` and the moments append_optimizer_tensors wrote into an optimizer built for
// `params`; `names` gains the tensors read.
template <class Scalar>
void read_optimizer(const io::SafetensorsFile& file, long steps, AdamW<Scalar>& optimizer,
                    const ParameterList<Scalar>& params, std::set<std::string>& names) {
  std::vector<std::vector<Scalar>> first, second;
  for (const auto& p : params) {
    for (auto* moments : {&first, &second}) {
      const std::string name = p.name + (moments == &first ? ".exp_avg" : ".exp_avg_sq");
      moments->emplace_back(static_cast<std::size_t>(p.size()));
      read_into(file, name, {static_cast<std::int64_t>(p.size())}, moments->back().data());
      names.insert(name);
    }
  }
  optimizer.restore(steps, std::move(first), std::move(second));
}

// Fails unless the file's "format" entry is `want`.
inline void require_format(const io::SafetensorsFile& file, const std::string& want, const std::string& why = "") {
  const std::string& format = metadata_entry(file, "format");
  if (format != want)
    throw FormatError(file.path(), "", "__metadata__.format",
                      io::json_quote(format) + ", expected " + io::json_quote(want) + why);
}

template <class Model>
void require_tables_for(const char* where, TableType tables) {
  if (tables != TableType::fp32 && std::string(Model::Block::kArch) != "memoryformer")
    memoryformer::detail::fail(
        where, "tables", to_string(tables),
        std::string("fp32: a model of arch \"") + Model::Block::kArch + "\" has no hash tables to compress");
}

}  // namespace detail

namespace io {

// Writes every weight of `model` to `path`, atomically: tables stored as `tables` (see the top of
// this file), everything else in the dtype of its Scalar. Tables the model already stores as
// `tables` are written unchanged (a loaded int8 model saves bit for bit); others are converted from
// the values forward() reads. `extra` adds metadata entries of the caller's (e.g. the tokenizer).
template <class Model>
void save_model(Model& model, const std::string& path, std::map<std::string, std::string> extra = {},
                TableType tables = TableType::fp32) {
  detail::require_tables_for<Model>("save_model", tables);
  std::vector<TensorData> tensors;
  std::list<std::vector<std::uint8_t>> keep;  // converted tables, alive until the write
  detail::append_model_tensors(model, tables, tensors, keep);
  write_safetensors(path, tensors, detail::model_metadata<Model>(model.config(), tables, std::move(extra)));
}

// Writes the model Model(config) would be, initialised from config.seed, to `path`, atomically, as
// save_model(Model(config), path, extra, tables) would, byte for byte, but without ever holding the
// tables: they are drawn `block_bytes` of rows at a time (MemoryLayer::draw_table_rows) and
// streamed to the file. Memory stays near one block plus the other tensors, for a model of any size.
// The rows are drawn on `ctx`'s threads; the values do not depend on it.
template <class Model>
void write_initial_model(const ModelConfig& config, const std::string& path, TableType tables = TableType::fp32,
                         std::map<std::string, std::string> extra = {}, const Context& ctx = default_context(),
                         std::size_t block_bytes = 8 << 20) {
  using Scalar = typename Model::Scalar;
  detail::require_tables_for<Model>("write_initial_model", tables);
  Model model(config, Init::except_tables);
  model.set_context(ctx);
  std::vector<StreamedTensor> tensors;
  for (const auto& p : model.weights()) tensors.push_back(streamed(tensor(p.name, p.value, file_shape(p, config))));
  const std::int64_t k = config.num_chunks();
  for (const auto& [name, layer] : model.memory_layers()) {
    const MemoryLayer<Scalar>* source = layer;
    const Eigen::Index rows = layer->table_store().rows(), width = layer->out_dim();
    const std::vector<std::int64_t> shape{k, static_cast<std::int64_t>(rows) / k, static_cast<std::int64_t>(width)};
    const Eigen::Index block =
        std::max<Eigen::Index>(1, static_cast<Eigen::Index>(block_bytes) / (width * Eigen::Index{sizeof(Scalar)}));
    // Rows [first, first + count) as the file stores them (save_model's conversions), handed to
    // `use` with their int8 scales.
    const auto draw = [source, width, tables](Eigen::Index first, Eigen::Index count, const auto& use) {
      std::vector<Scalar> values(static_cast<std::size_t>(count * width));
      source->draw_table_rows(first, count, values.data());
      const auto n = values.size();
      if (tables == TableType::fp32) return use(values.data(), n * sizeof(Scalar), nullptr);
      const std::vector<float> as_float(values.begin(), values.end());
      if (tables == TableType::bf16) {
        std::vector<std::uint16_t> q(n);
        for (std::size_t i = 0; i < n; ++i) q[i] = float_to_bf16(as_float[i]);
        return use(q.data(), n * sizeof(std::uint16_t), nullptr);
      }
      std::vector<std::int8_t> q(n);
      std::vector<float> scales(static_cast<std::size_t>(count));
      quantise_int8_rows(as_float.data(), count, width, q.data(), scales.data());
      return use(q.data(), n, scales.data());
    };
    const DType dtype = tables == TableType::int8 ? DType::I8 : tables == TableType::bf16 ? DType::BF16 : dtype_of<Scalar>();
    // int8 scales come with the table's rows: kept when the table is written first, drawn again
    // otherwise (the writer's order follows tensor sizes).
    auto scales = std::make_shared<std::vector<float>>();
    tensors.push_back({name + ".tables", dtype, shape, [=](const ByteSink& sink) {
                         for (Eigen::Index first = 0; first < rows; first += block)
                           draw(first, std::min(block, rows - first), [&](const void* bytes, std::size_t n, const float* s) {
                             sink(bytes, n);
                             if (s != nullptr) scales->insert(scales->end(), s, s + std::min(block, rows - first));
                           });
                       }});
    if (tables == TableType::int8)
      tensors.push_back({name + ".tables.scale", DType::F32, {shape[0], shape[1]}, [=](const ByteSink& sink) {
                           if (scales->size() == static_cast<std::size_t>(rows))
                             return sink(scales->data(), scales->size() * sizeof(float));
                           for (Eigen::Index first = 0; first < rows; first += block) {
                             const Eigen::Index count = std::min(block, rows - first);
                             draw(first, count, [&](const void*, std::size_t, const float* s) {
                               sink(s, static_cast<std::size_t>(count) * sizeof(float));
                             });
                           }
                         }});
  }
  write_safetensors_streamed(path, tensors, detail::model_metadata<Model>(config, tables, std::move(extra)));
}

// The format entry of a training checkpoint (checkpoint.hpp), which records its model as a model file does.
inline constexpr const char* kCheckpointFormat = "memoryformer-checkpoint";

// The config stored in a model file or a training checkpoint.
inline ModelConfig load_config(const SafetensorsFile& file) {
  if (detail::metadata_entry(file, "format") != kCheckpointFormat) detail::require_format(file, "memoryformer");
  return config_from_json(detail::metadata_entry(file, "config"), file.path(), "__metadata__.config");
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
  const auto type = memoryformer::detail::enum_named<TableType>(it->second);
  if (type && *type != TableType::fp32) return *type;
  throw FormatError(
      file.path(), "", "__metadata__.tables",
      json_quote(it->second) + ", expected \"bf16\" or \"int8\" (or no entry, for float tables)");
}

// How load_model holds a file's hash tables.
enum class Weights {
  // In memory of the model's own: fp32 tables are trainable, and the file may change or go.
  copy,
  // Float models: tables read in place from the file's mapping wherever the file stores them as the
  // kernels read them (table_is_mappable(): what save_model writes). Nothing is copied, pages are
  // read on first use and shared with every process that maps the file. For inference: such
  // tables cannot be trained or changed. Other tables are copied (mapped_tables() counts the
  // others); so are the other tensors, which are small.
  map,
};

}  // namespace io

namespace detail {

// A float dtype a table may be stored as without a "tables" entry.
inline bool is_float_dtype(io::DType d) {
  return d == io::DType::F32 || d == io::DType::F64 || d == io::DType::F16 || d == io::DType::BF16;
}

// Whether a float model loaded with io::Weights::map reads table tensor `name`, stored as `type`, in
// place: the file stores it as the kernels read it (F32, BF16, or I8 with F32 scales), on a 64-byte
// boundary (and its scales on a float's).
inline bool table_is_mappable(const io::SafetensorsFile& file, const std::string& name, TableType type) {
  const io::DType want = type == TableType::int8 ? io::DType::I8 : type == TableType::bf16 ? io::DType::BF16 : io::DType::F32;
  if (!file.mapping() || !file.contains(name) || file.info(name).dtype != want) return false;
  const std::string scale_name = name + ".scale";
  if (type == TableType::int8 && !file.contains(scale_name)) return false;
  const auto* scales = type == TableType::int8 ? reinterpret_cast<const float*>(file.data(scale_name)) : nullptr;
  return TableStore<float>::can_view(file.data(name), scales);
}

// The tables of `name` as the file stores them (see the top of this file), or their columns
// `columns` of the file's width (a shard, copied: only those bytes are read); `names` gains the
// tensors read. Viewed in place when `how` is map, all columns are read and the file's bytes allow
// it, else copied.
template <class Scalar>
TableStore<Scalar> read_tables(const io::SafetensorsFile& file, const std::string& name,
                               const std::vector<std::int64_t>& shape, TableType type, io::Weights how,
                               std::set<std::string>& names, std::optional<Range> columns = std::nullopt) {
  const io::TensorInfo& t = checked_info(file, name, shape);
  names.insert(name);
  const Eigen::Index rows = static_cast<Eigen::Index>(shape[0] * shape[1]),
                     stride = static_cast<Eigen::Index>(shape[2]);
  const Range cols = columns.value_or(Range{0, stride});
  if (cols.begin < 0 || cols.end > stride || cols.size() < 1)
    fail("read_tables", "columns", "[" + std::to_string(cols.begin) + ", " + std::to_string(cols.end) + ")",
         "a non-empty range within the " + std::to_string(stride) + " columns of '" + name + "'");
  const Eigen::Index width = cols.size();
  switch (type) {
    case TableType::fp32:
      if (!is_float_dtype(t.dtype))
        throw FormatError(file.path(), name, "dtype",
                          std::string(to_string(t.dtype)) +
                              ", expected a float dtype (F32, F64, F16, BF16); int8 tables need __metadata__ "
                              "\"tables\": \"int8\" and a .scale tensor");
      break;
    case TableType::bf16:
      require_dtype(file, t, io::DType::BF16, "(__metadata__ \"tables\" is \"bf16\")");
      break;
    case TableType::int8:
      require_dtype(file, t, io::DType::I8, "(__metadata__ \"tables\" is \"int8\")");
      break;
  }
  const float* scales = nullptr;
  std::vector<float> scale_copy;
  if (type == TableType::int8) {
    const std::string scale_name = name + ".scale";
    require_dtype(file, checked_info(file, scale_name, {shape[0], shape[1]}), io::DType::F32,
                  "(the per-row scales of an int8 table)");
    names.insert(scale_name);
    scales = reinterpret_cast<const float*>(file.data(scale_name));
    if (!TableStore<Scalar>::can_view(nullptr, scales)) {  // unaligned in the file: read them out
      scale_copy.resize(static_cast<std::size_t>(rows));
      file.read(scale_name, scale_copy.data());
      scales = scale_copy.data();
    }
  }
  const void* values = file.data(name);
  if constexpr (std::is_same_v<Scalar, float>)
    if (how == io::Weights::map && width == stride && table_is_mappable(file, name, type))
      return TableStore<Scalar>::viewing(type, rows, width, values, scales, file.mapping());
  // A double model holds fp32 alone; other dtypes are converted.
  const bool stored_as_scalar =
      type == TableType::fp32 ? t.dtype == io::dtype_of<Scalar>() : std::is_same_v<Scalar, float>;
  if (!stored_as_scalar) {
    TableStore<Scalar> store(rows, width);
    Scalar* out = store.data("load_model");
    const auto* q = static_cast<const std::int8_t*>(values);
    for (Eigen::Index r = 0; r < rows; ++r) {
      const Eigen::Index first = r * stride + cols.begin;
      if (type == TableType::int8) {
        for (Eigen::Index c = 0; c < width; ++c)
          out[r * width + c] = static_cast<Scalar>(dequantise_int8(q[first + c], scales[r]));
      } else {
        file.read_elements(name, first, width, out + r * width);  // widened, as the kernels widen
      }
    }
    return store;
  }
  const std::size_t element = io::dtype_size(t.dtype);
  return TableStore<Scalar>::copying(
      type, rows, width, static_cast<const std::uint8_t*>(values) + static_cast<std::size_t>(cols.begin) * element,
      scales, stride);
}

// Where a weight of a sharded model lies in its file tensor: the whole tensor's shape, and this
// process's elements of it (a Memory Layer's bias columns, or the LM head's rows: contiguous).
struct FileSlice {
  std::vector<std::int64_t> shape;
  std::int64_t first = 0, count = 0;
};

// The weights (not tables) that Model::shard_outputs() split, by name.
template <class Model>
std::map<std::string, FileSlice> sharded_weight_slices(Model& model) {
  std::map<std::string, FileSlice> out;
  for (const auto& [name, layer] : model.memory_layers())
    if (const auto* shard = layer->output_shard(); shard != nullptr && layer->has_bias()) {
      const Range c = shard->columns(layer->out_dim());
      out[name + ".bias"] = {{layer->out_dim()}, c.begin, c.size()};
    }
  const auto& head = model.lm_head();
  if (const auto* shard = head.output_shard()) {
    const Range r = shard->columns(head.out_dim());
    out["lm_head.weight"] = {{head.out_dim(), head.in_dim()}, r.begin * head.in_dim(), r.size() * head.in_dim()};
    if (head.has_bias()) out["lm_head.bias"] = {{head.out_dim()}, r.begin, r.size()};
  }
  return out;
}

// load_model, for the whole model or, given `shard`, for one process's part of it, from a model
// file or a checkpoint; `names` gains the tensors read.
template <class Model>
Model load_model_part(const io::SafetensorsFile& file, io::Weights how,
                      const OutputShard<typename Model::Scalar>* shard, std::set<std::string>& names) {
  using namespace io;
  const ModelConfig config = load_config(file);
  const std::string file_arch = load_arch(file);
  if (file_arch != Model::Block::kArch)
    throw FormatError(
        file.path(), "", "__metadata__.arch",
        json_quote(file_arch) + ", expected \"" + Model::Block::kArch + "\" for this model type");
  const TableType tables = load_table_type(file);
  // A hostile config could ask for terabytes: the file must have a byte (the smallest dtype) for
  // every parameter value before the model is built. Missing tensors are named further down.
  const std::int64_t needed = Model::parameter_values(config);
  if (static_cast<std::uint64_t>(needed) > file.data_size())
    throw FormatError(file.path(), "", "__metadata__.config",
                      config_to_json(config) + ", expected a model the file can hold: it needs " +
                          std::to_string(needed) + " parameter values, but the data section holds only " +
                          std::to_string(file.data_size()) + " bytes");
  Model model(config, Init::none);
  if (shard != nullptr) model.shard_outputs(*shard);
  const std::map<std::string, FileSlice> slices = sharded_weight_slices(model);
  for (const auto& p : model.weights()) {
    const auto slice = slices.find(p.name);
    if (slice == slices.end()) {
      read_into(file, p.name, file_shape(p, config), p.value);
    } else {
      checked_info(file, p.name, slice->second.shape);
      file.read_elements(p.name, slice->second.first, slice->second.count, p.value);
    }
    names.insert(p.name);
  }
  for (const auto& [name, layer] : model.memory_layers()) {
    const std::int64_t k = config.num_chunks();
    const std::vector<std::int64_t> shape{k, layer->table_store().rows() / k, layer->out_dim()};
    std::optional<Range> columns;
    if (const auto* s = layer->output_shard()) columns = s->columns(layer->out_dim());
    layer->set_tables(read_tables<typename Model::Scalar>(file, name + ".tables", shape, tables, how, names, columns));
  }
  return model;
}

// load_model_part of a model file: nothing but the model's tensors.
template <class Model>
Model load_model_file(const io::SafetensorsFile& file, io::Weights how,
                      const OutputShard<typename Model::Scalar>* shard) {
  require_format(file, "memoryformer",
                 metadata_entry(file, "format") == io::kCheckpointFormat
                     ? " (this is a training checkpoint: resume it with memoryformer train --resume, or read its "
                       "model with io::Checkpoint)"
                     : "");
  std::set<std::string> names;
  Model model = load_model_part<Model>(file, how, shard, names);
  reject_extra_tensors(file, names);
  return model;
}

}  // namespace detail

namespace io {

// A model of type Model (its block type must be the file's "arch") with the file's config and
// weights; tables as `how` says.
template <class Model>
Model load_model(const SafetensorsFile& file, Weights how = Weights::copy) {
  return detail::load_model_file<Model>(file, how, nullptr);
}

// Part shard.part of the model split over shard.parts processes by outputs (Model::shard_outputs,
// docs/distributed.md), for inference: only that part's columns of every table and Memory Layer
// bias and its rows of the LM head are read (copied), and the small rest whole. Every process
// calls it with its own part and one gather.
template <class Model>
Model load_model(const SafetensorsFile& file, const OutputShard<typename Model::Scalar>& shard) {
  return detail::load_model_file<Model>(file, Weights::copy, &shard);
}

// The same from a path. With Weights::map the model keeps the file mapped for as long as it lives.
template <class Model>
Model load_model(const std::string& path, Weights how = Weights::copy) {
  return load_model<Model>(SafetensorsFile::open(path), how);
}

// How many of the model's Memory Layers read their tables in place from a file (Weights::map).
template <class Model>
int mapped_tables(Model& model) {
  int n = 0;
  for (const auto& named : model.memory_layers()) n += named.second->table_store().is_view() ? 1 : 0;
  return n;
}

// Writes the optimizer's moments and step count for `params` (the list it was built with), atomically.
template <class Scalar>
void save_optimizer(const AdamW<Scalar>& optimizer, const ParameterList<Scalar>& params,
                    const std::string& path) {
  std::vector<TensorData> tensors;
  detail::append_optimizer_tensors("save_optimizer", optimizer, params, tensors);
  write_safetensors(path, tensors,
                    {{"format", "memoryformer-adamw"}, {"step", std::to_string(optimizer.step_count())}});
}

// The "step" entry of an optimizer file or a checkpoint: the optimizer steps taken.
inline long load_step(const SafetensorsFile& file) {
  return static_cast<long>(
      parse_json(detail::metadata_entry(file, "step"), file.path(), "__metadata__.step").as_int64());
}

// Restores what save_optimizer() wrote into an optimizer built for the same parameter list.
template <class Scalar>
void load_optimizer(AdamW<Scalar>& optimizer, const ParameterList<Scalar>& params, const std::string& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  detail::require_format(file, "memoryformer-adamw");
  std::set<std::string> names;
  detail::read_optimizer(file, load_step(file), optimizer, params, names);
  detail::reject_extra_tensors(file, names);
}

}  // namespace io
}  // namespace v0
}  // namespace memoryformer
