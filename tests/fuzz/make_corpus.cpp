// Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/{safetensors,json}/) with the
// library itself, so the seeds are real files of the current format rather than blobs:
//   cmake --build build/dev --target mf_make_corpus && build/dev/tests/fuzz/mf_make_corpus tests/fuzz/corpus
// Valid seeds: tiny MemoryFormer and dense models (with and without checksums, in BF16 and F16),
// a file of every dtype, an empty file. Hostile seeds: headers the reader must refuse, written as
// header text plus data bytes so each one shows what it breaks.
#include <memoryformer/io/model_file.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace mf = memoryformer;
namespace io = memoryformer::io;
namespace fs = std::filesystem;

namespace {

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::string le64(std::uint64_t n) {
  std::string s;
  for (int i = 0; i < 8; ++i) s += static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// Small enough that a seed stays a few KB: K = 2 chunks, tables of 4 and 8 rows.
mf::ModelConfig tiny_config() {
  mf::ModelConfig c;
  c.vocab_size = 5;
  c.d_model = 4;
  c.n_heads = 1;
  c.n_layers = 1;
  c.tau = 2;
  c.expand_bits = 1;
  c.rotary_pct = 0.5;  // head_dim 4 needs an even rotary width
  return c;
}

// The model's tensors in `dtype` (F32 as is; F16/BF16 converted into `storage`), as save_model
// lays them out, with its metadata.
template <class Model>
void write_model(Model& model, const fs::path& path, io::DType dtype, bool checksums) {
  std::vector<std::vector<std::uint16_t>> storage;
  std::vector<io::TensorData> tensors;
  for (const auto& p : model.parameters()) {
    io::TensorData t = io::tensor(p.name, p.value, io::file_shape(p, model.config()));
    if (dtype != io::DType::F32) {
      std::vector<std::uint16_t> half(static_cast<std::size_t>(p.size()));
      for (std::size_t i = 0; i < half.size(); ++i)
        half[i] = dtype == io::DType::F16 ? io::float_to_f16(p.value[i]) : io::float_to_bf16(p.value[i]);
      storage.push_back(std::move(half));
      t.dtype = dtype;
      t.data = storage.back().data();
    }
    tensors.push_back(t);
  }
  io::write_safetensors(path.string(), tensors,
                        {{"format", "memoryformer"},
                         {"arch", Model::Block::kArch},
                         {"config", io::config_to_json(model.config())}},
                        checksums);
}

void write_all_dtypes(const fs::path& path, bool checksums) {
  const double f64[] = {1.5, -2.25};
  const float f32[] = {0.5f, -1.0f, 3.0f, 1e-3f};
  const std::uint16_t f16[] = {0x3C00, 0xFC00, 0x7E00, 0x0001};  // 1, -inf, NaN, smallest subnormal
  const std::uint16_t bf16[] = {0x3F80, 0x7F80};
  const std::int64_t i64[] = {-(std::int64_t{1} << 40)};
  const std::int32_t i32[] = {1, -2, 3, -4, 5, -6};
  const std::int16_t i16[] = {-32768, 32767};
  const std::int8_t i8[] = {-128, 127, 0};
  const std::uint8_t u8[] = {0, 255};
  const bool flags[] = {true, false, true};
  io::write_safetensors(path.string(),
                        {io::tensor("f64", f64, {2}), io::tensor("f32", f32, {2, 2}),
                         io::TensorData{"f16", io::DType::F16, {2, 1, 2}, f16},
                         io::TensorData{"bf16", io::DType::BF16, {2}, bf16}, io::tensor("i64", i64, {}),
                         io::tensor("i32", i32, {3, 2}), io::tensor("i16", i16, {2}), io::tensor("i8", i8, {3}),
                         io::tensor("u8", u8, {2}), io::tensor("bool", flags, {3}),
                         io::tensor<float>("empty", nullptr, {0, 3})},
                        {{"note", "every dtype"}}, checksums);
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets +
         "}";
}

// Header text (length prefix added) followed by raw data bytes.
std::string by_hand(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR (writes OUTPUT_DIR/safetensors and OUTPUT_DIR/json)\n", argv[0]);
    return 2;
  }
  const fs::path st = fs::path(argv[1]) / "safetensors", js = fs::path(argv[1]) / "json";
  fs::create_directories(st);
  fs::create_directories(js);

  mf::MemoryFormerModel<float> memoryformer(tiny_config());
  mf::DenseModel<float> dense(tiny_config());
  io::save_model(memoryformer, (st / "model_memoryformer.safetensors").string());
  io::save_model(dense, (st / "model_dense.safetensors").string());
  write_model(memoryformer, st / "model_memoryformer_no_checksums.safetensors", io::DType::F32, false);
  write_model(memoryformer, st / "model_memoryformer_bf16.safetensors", io::DType::BF16, true);
  write_model(dense, st / "model_dense_f16_no_checksums.safetensors", io::DType::F16, false);
  write_all_dtypes(st / "dtypes.safetensors", true);
  write_all_dtypes(st / "dtypes_no_checksums.safetensors", false);
  io::write_safetensors((st / "empty.safetensors").string(), {}, {}, false);

  const std::string four(4, '\0'), eight(8, '\0');
  const std::map<std::string, std::string> hostile = {
      {"unaligned_f32", by_hand("{" + entry("u", "U8", "[1]", "[0,1]") + "," + entry("f", "F32", "[1]", "[1,5]") +
                                    "}",
                                std::string(5, '\x01'))},
      {"zero_dim_huge_shape", by_hand("{" + entry("z", "F64", "[0,9223372036854775807]", "[0,0]") + "}", "")},
      // Empty, but numel() of the other dims overflowed int64 (UBSan) before the reader refused it.
      {"zero_dim_overflow", by_hand("{" + entry("z", "F32", "[0,4611686018427387904,4]", "[0,0]") + "}", "")},
      {"overlap", by_hand("{" + entry("a", "F32", "[2]", "[0,8]") + "," + entry("b", "F32", "[1]", "[4,8]") + "}",
                          eight)},
      {"offsets_past_end", by_hand("{" + entry("a", "F32", "[2]", "[0,8]") + "}", four)},
      {"bad_checksum", by_hand("{\"__metadata__\":{\"checksums\":\"{\\\"a\\\":\\\"0000000000000000\\\"}\"}," +
                                   entry("a", "F32", "[1]", "[0,4]") + "}",
                               four)},
      {"header_length_past_end", le64(1000) + "{}"},
      {"deep_nesting", by_hand("{\"__metadata__\":" + std::string(70, '[') + std::string(70, ']') + "}", "")},
  };
  for (const auto& [name, bytes] : hostile) write_bytes(st / ("hostile_" + name + ".safetensors"), bytes);

  // A model file whose config cannot build a model (tau does not divide d_model).
  {
    std::string config = io::config_to_json(tiny_config());
    config.replace(config.find("\"tau\": 2"), 8, "\"tau\": 3");
    const float x[1] = {0};
    io::write_safetensors((st / "hostile_model_bad_config.safetensors").string(), {io::tensor("embed.weight", x, {1})},
                          {{"format", "memoryformer"}, {"arch", "memoryformer"}, {"config", config}});
  }

  // A config far bigger than the file (8 GB of embeddings): load_model used to allocate it before
  // looking at the tensors.
  {
    mf::ModelConfig huge = tiny_config();
    huge.vocab_size = 1 << 28;
    const float x[1] = {0};
    io::write_safetensors((st / "hostile_model_huge_config.safetensors").string(),
                          {io::tensor("embed.weight", x, {1})},
                          {{"format", "memoryformer"}, {"arch", "memoryformer"}, {"config", io::config_to_json(huge)}});
  }

  const std::map<std::string, std::string> json = {
      {"config", io::config_to_json(tiny_config())},
      {"header", "{\"__metadata__\":{\"format\":\"pt\"}," + entry("a", "F16", "[1,2]", "[0,4]") + "}"},
      {"strings", "[\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\", \"\\u00e9\\u20AC\\ud83d\\ude00\", \"\xC3\xA9\xF0\x9F\x98\x80\"]"},
      {"numbers", "[0, -0, 12, -3.5e-3, 1E+2, 18446744073709551615, 9223372036854775808, -9223372036854775808]"},
      {"literals", "{\"t\": true, \"f\": false, \"n\": null, \"o\": {}, \"a\": []}"},
      {"deep", std::string(64, '[') + std::string(64, ']')},
  };
  for (const auto& [name, text] : json) write_bytes(js / (name + ".json"), text);
  std::printf("wrote %s and %s\n", st.c_str(), js.c_str());
  return 0;
}
