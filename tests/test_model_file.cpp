// Model and optimizer files (method.md §5): round trips that reproduce logits and training exactly,
// the names, shapes and metadata a PyTorch reader relies on, and the errors of files that do not fit.
#include "test_support.hpp"

#include <memoryformer/io/model_file.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

namespace {

mf::ModelConfig tiny_config() {
  mf::ModelConfig c;
  c.vocab_size = 13;
  c.d_model = 16;
  c.n_heads = 2;
  c.n_layers = 2;
  c.tau = 4;
  c.expand_bits = 1;
  c.score = mf::Score::l1;
  c.temperature = 0.75;
  c.seed = 9;
  return c;
}

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "mf_model_file_" + name; }

mf::TokenMatrix tokens() {
  mf::TokenMatrix t(2, 5);
  t << 1, 4, 12, 0, 7, 3, 3, 9, 2, 11;
  return t;
}

template <class Model>
void expect_round_trip(const std::string& file) {
  Model model(tiny_config());
  mf::io::save_model(model, file);
  const Model loaded = mf::io::load_model<Model>(file);
  EXPECT_EQ(loaded.forward(tokens()), model.forward(tokens()));
  const mf::ModelConfig& c = loaded.config();
  EXPECT_EQ(mf::io::config_to_json(c), mf::io::config_to_json(model.config()));
  EXPECT_EQ(c.score, mf::Score::l1);
  EXPECT_EQ(c.temperature, 0.75);
}

TEST(ModelFile, RoundTripReproducesLogits) {
  expect_round_trip<mf::MemoryFormerModel<float>>(temp_path("mf.safetensors"));
  expect_round_trip<mf::DenseModel<float>>(temp_path("dense.safetensors"));
  expect_round_trip<mf::MemoryFormerModel<double>>(temp_path("mf64.safetensors"));
}

TEST(ModelFile, LoadsFromAnOpenOrInMemoryFile) {
  const std::string file = temp_path("open.safetensors");
  mf::MemoryFormerModel<float> model(tiny_config());
  mf::io::save_model(model, file);
  const auto open = mf::io::SafetensorsFile::open(file);
  EXPECT_EQ(mf::io::load_model<mf::MemoryFormerModel<float>>(open).forward(tokens()), model.forward(tokens()));
  std::ifstream in(file, std::ios::binary);
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const auto memory = mf::io::SafetensorsFile::from_memory(bytes.data(), bytes.size(), "in memory");
  EXPECT_EQ(mf::io::load_model<mf::MemoryFormerModel<float>>(memory).forward(tokens()),
            model.forward(tokens()));
  test::expect_error([&] { mf::io::load_model<mf::DenseModel<float>>(memory); },
                     {"load in memory", "arch = \"memoryformer\""});
}

// Loaders compare it with the file before building a model, so it must match parameters().
TEST(ModelFile, ParameterValuesMatchTheModel) {
  auto count = [](auto&& model) {
    std::int64_t n = 0;
    for (const auto& p : model.parameters()) n += p.size();
    return n;
  };
  mf::ModelConfig c = tiny_config();
  for (const int expand_bits : {0, 1, 3}) {
    c.expand_bits = expand_bits;
    EXPECT_EQ(mf::MemoryFormerModel<float>::parameter_values(c), count(mf::MemoryFormerModel<float>(c)));
    EXPECT_EQ(mf::DenseModel<double>::parameter_values(c), count(mf::DenseModel<double>(c)));
  }
  c.n_layers = 0;
  EXPECT_EQ(mf::MemoryFormerModel<float>::parameter_values(c), 2 * 13 * 16 + 16);
  c.n_layers = 1 << 30;
  c.d_model = 1 << 20;
  c.tau = 16;
  c.expand_bits = 0;
  c.n_heads = 1;
  test::expect_error([&] { mf::MemoryFormerModel<float>::parameter_values(c); }, {"parameter_values", "2^63"});
}

TEST(ModelFile, NamesShapesAndMetadataFollowMethodSection5) {
  const std::string file = temp_path("names.safetensors");
  mf::MemoryFormerModel<float> model(tiny_config());
  mf::io::save_model(model, file);
  const auto st = mf::io::SafetensorsFile::open(file);
  EXPECT_TRUE(st.has_checksums());
  EXPECT_EQ(st.metadata().at("format"), "memoryformer");
  EXPECT_EQ(st.metadata().at("arch"), "memoryformer");
  using Shape = std::vector<std::int64_t>;
  // d 16, tau 4 -> K 4; e 1 -> Memory Block width (4 + 1) 4 = 20, down tables 2^5 rows.
  const std::vector<std::pair<std::string, Shape>> expected{{"embed.weight", {13, 16}},
                                                            {"blocks.0.attn_norm.weight", {16}},
                                                            {"blocks.0.attn.q.tables", {4, 16, 16}},
                                                            {"blocks.0.attn.k.bias", {16}},
                                                            {"blocks.1.mlp_norm.weight", {16}},
                                                            {"blocks.1.mlp.up.tables", {4, 16, 20}},
                                                            {"blocks.1.mlp.up.bias", {20}},
                                                            {"blocks.1.mlp.norm.weight", {20}},
                                                            {"blocks.1.mlp.norm.bias", {20}},
                                                            {"blocks.1.mlp.down.tables", {4, 32, 16}},
                                                            {"blocks.1.mlp.down.bias", {16}},
                                                            {"final_norm.weight", {16}},
                                                            {"lm_head.weight", {13, 16}}};
  for (const auto& [name, shape] : expected) {
    EXPECT_EQ(st.info(name).shape, shape) << name;
    EXPECT_EQ(st.info(name).dtype, mf::io::DType::F32) << name;
  }
  EXPECT_EQ(st.tensors().size(), 1u + 2 * 14u + 2u);  // embed, 14 per block, final norm, head
  // The stored values are the parameters, row-major (table row k 2^tau + code is [k, code, :]).
  const auto q = st.matrix<float>("blocks.0.attn.q.tables");
  EXPECT_EQ(Eigen::Map<const mf::RowMatrix<float>>(q.data(), 64, 16), model.block(0).q().tables());
}

TEST(ModelFile, OptimizerStateResumesTrainingExactly) {
  const std::string model_file = temp_path("resume.safetensors"),
                    optim_file = temp_path("resume.optim.safetensors");
  auto train_steps = [&](mf::MemoryFormerModel<float>& model, mf::AdamW<float>& optimizer,
                         const mf::ParameterList<float>& params, int steps) {
    for (int s = 0; s < steps; ++s) {
      model.zero_grad();
      mf::MemoryFormerModel<float>::Saved saved;
      mf::RowMatrix<float> dlogits;
      mf::cross_entropy<float>(model.forward(tokens(), &saved), tokens(), &dlogits);
      model.backward(saved, dlogits);
      optimizer.step(params, 1e-2);
    }
  };
  mf::MemoryFormerModel<float> straight(tiny_config());
  auto straight_params = straight.parameters();
  mf::AdamW<float> straight_opt(straight_params);
  train_steps(straight, straight_opt, straight_params, 2);
  mf::io::save_model(straight, model_file);
  mf::io::save_optimizer(straight_opt, straight_params, optim_file);
  train_steps(straight, straight_opt, straight_params, 2);

  auto resumed = mf::io::load_model<mf::MemoryFormerModel<float>>(model_file);
  auto resumed_params = resumed.parameters();
  mf::AdamW<float> resumed_opt(resumed_params);
  mf::io::load_optimizer(resumed_opt, resumed_params, optim_file);
  EXPECT_EQ(resumed_opt.step_count(), 2);
  train_steps(resumed, resumed_opt, resumed_params, 2);
  EXPECT_EQ(resumed.forward(tokens()), straight.forward(tokens()));
}

TEST(ModelFile, FilesThatDoNotFitAreNamed) {
  const std::string file = temp_path("bad.safetensors");
  mf::MemoryFormerModel<float> model(tiny_config());
  mf::io::save_model(model, file);
  test::expect_error([&] { mf::io::load_model<mf::DenseModel<float>>(file); },
                     {"arch", "\"memoryformer\"", "\"dense\""});

  // Rewrite the file with one tensor missing, one extra, one reshaped, or without metadata.
  auto params = model.parameters();
  auto write = [&](auto edit, std::map<std::string, std::string> metadata) {
    std::vector<mf::io::TensorData> tensors;
    for (const auto& p : params)
      tensors.push_back(mf::io::tensor(p.name, p.value, mf::io::file_shape(p, model.config())));
    edit(tensors);
    mf::io::write_safetensors(file, tensors, metadata);
  };
  const std::map<std::string, std::string> good{{"format", "memoryformer"},
                                                {"arch", "memoryformer"},
                                                {"config", mf::io::config_to_json(model.config())}};
  auto load = [&] { mf::io::load_model<mf::MemoryFormerModel<float>>(file); };
  write([](auto& t) { t.erase(t.begin() + 3); }, good);
  test::expect_error(load, {"no tensor named 'blocks.0.attn.q.bias'"});
  const float extra = 1;
  write([&](auto& t) { t.push_back(mf::io::tensor("blocks.9.attn.q.bias", &extra, {1})); }, good);
  test::expect_error(load, {"'blocks.9.attn.q.bias'", "unknown"});
  write([](auto& t) { t[0].shape = {16, 13}; }, good);
  test::expect_error(load, {"tensor 'embed.weight' shape", "[16, 13]", "[13, 16]"});
  write([](auto&) {}, {});
  test::expect_error(load, {"__metadata__", "\"format\""});
  auto bad_config = good;
  bad_config["config"] = R"({"vocab_size": 13})";
  write([](auto&) {}, bad_config);
  test::expect_error(load, {"d_model"});
  bad_config["config"] = mf::io::config_to_json(model.config()).insert(1, "\"colour\": 1, ");
  write([](auto&) {}, bad_config);
  test::expect_error(load, {"config key", "colour"});
  bad_config["config"] = mf::io::config_to_json(model.config()).replace(15, 2, "0");
  write([](auto&) {}, bad_config);
  test::expect_error(load, {"memoryformer: load ", "bad.safetensors: config: ModelConfig: vocab_size = 0"});
  // A config far larger than the file is refused before the model is allocated (before, a
  // changed vocab_size made load_model allocate 4 GB for a file of a few KB).
  bad_config = good;
  bad_config["config"] = mf::io::config_to_json(model.config()).replace(15, 2, "1000000");
  write([](auto&) {}, bad_config);
  test::expect_error(load, {"load ", "config = {\"vocab_size\": 1000000", "needs 32013128 parameter values",
                            "the data section holds only 54176 bytes"});
  test::expect_error([&] { mf::io::load_model<mf::DenseModel<float>>(temp_path("missing.safetensors")); },
                     {"missing.safetensors"});
}

}  // namespace
