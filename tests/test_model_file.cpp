// Model and optimizer files (docs/method.md §5): round trips that reproduce logits and training exactly,
// the names, shapes and metadata a PyTorch reader relies on, and the errors of files that do not fit.
#include "test_support.hpp"

#include <memoryformer/io/checkpoint.hpp>
#include <memoryformer/io/model_file.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

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
                     {"file 'in memory'", "__metadata__.arch: \"memoryformer\""});
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

// One checkpoint file resumes what a model and an optimizer file resume: the weights, the moments
// and the step, plus the trainer's own entries; a model reader refuses it, naming it a checkpoint.
TEST(ModelFile, CheckpointHoldsTheModelTheOptimizerAndTheState) {
  const std::string file = temp_path("checkpoint.safetensors");
  using Model = mf::MemoryFormerModel<float>;
  Model model(tiny_config());
  auto params = model.parameters();
  mf::AdamW<float> optimizer(params);
  for (int s = 0; s < 3; ++s) {
    model.zero_grad();
    Model::Saved saved;
    mf::RowMatrix<float> dlogits;
    mf::cross_entropy<float>(model.forward(tokens(), &saved), tokens(), &dlogits);
    model.backward(saved, dlogits);
    optimizer.step(params, 1e-2);
  }
  mf::io::save_checkpoint(file, model, optimizer, params, {{"curve", "step\n3\n"}}, {{"tokenizer", "bytes"}});

  const mf::io::Checkpoint checkpoint = mf::io::Checkpoint::open(file);
  EXPECT_EQ(checkpoint.step(), 3);
  EXPECT_EQ(checkpoint.state("curve"), "step\n3\n");
  EXPECT_EQ(checkpoint.file().metadata().at("tokenizer"), "bytes");
  test::expect_error([&] { checkpoint.state("seconds"); }, {"state.seconds", "missing"});
  Model restored = checkpoint.model<Model>();
  auto restored_params = restored.parameters();
  mf::AdamW<float> restored_optimizer(restored_params);
  checkpoint.restore(restored_optimizer, restored_params);
  EXPECT_EQ(restored_optimizer.step_count(), 3);
  for (std::size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(Eigen::Map<const Eigen::VectorXf>(restored_params[i].value, restored_params[i].size()),
              Eigen::Map<const Eigen::VectorXf>(params[i].value, params[i].size()))
        << params[i].name;
    EXPECT_EQ(restored_optimizer.first_moment(i), optimizer.first_moment(i)) << params[i].name;
    EXPECT_EQ(restored_optimizer.second_moment(i), optimizer.second_moment(i)) << params[i].name;
  }
  test::expect_error([&] { mf::io::load_model<Model>(file); },
                     {"checkpoint.safetensors", "__metadata__.format", "\"memoryformer-checkpoint\"",
                      "a training checkpoint"});
  EXPECT_EQ(mf::io::config_to_json(mf::io::load_config(mf::io::SafetensorsFile::open(file))),
            mf::io::config_to_json(model.config()));

  // A model file is not a checkpoint, and a checkpoint must hold every moment.
  const std::string model_file = temp_path("not_a_checkpoint.safetensors");
  mf::io::save_model(model, model_file);
  test::expect_error([&] { mf::io::Checkpoint::open(model_file); },
                     {"__metadata__.format", "\"memoryformer\"", "expected \"memoryformer-checkpoint\""});
  mf::AdamW<float> other(params);
  auto fewer = params;
  fewer.pop_back();
  test::expect_error([&] { mf::io::save_checkpoint(file, model, other, fewer); },
                     {"save_checkpoint", "params"});
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
  test::expect_error(load, {"tensor 'blocks.0.attn.q.bias': not in the file"});
  const float extra = 1;
  write([&](auto& t) { t.push_back(mf::io::tensor("blocks.9.attn.q.bias", &extra, {1})); }, good);
  test::expect_error(load, {"'blocks.9.attn.q.bias'", "unknown"});
  write([](auto& t) { t[0].shape = {16, 13}; }, good);
  test::expect_error(load, {"tensor 'embed.weight': shape: [16, 13], expected [13, 16]"});
  write([](auto&) {}, {});
  test::expect_error(load, {"__metadata__.format: missing"});
  auto bad_config = good;
  bad_config["config"] = R"({"vocab_size": 13})";
  write([](auto&) {}, bad_config);
  test::expect_error(load, {"d_model"});
  bad_config["config"] = mf::io::config_to_json(model.config()).insert(1, "\"colour\": 1, ");
  write([](auto&) {}, bad_config);
  test::expect_error(load, {"__metadata__.config.colour: unknown key"});
  bad_config["config"] = mf::io::config_to_json(model.config()).replace(15, 2, "0");
  write([](auto&) {}, bad_config);
  test::expect_error(
      load, {"memoryformer: file '", "bad.safetensors': __metadata__.config: ModelConfig: vocab_size = 0"});
  // A config far larger than the file is refused before the model is allocated (before, a
  // changed vocab_size made load_model allocate 4 GB for a file of a few KB).
  bad_config = good;
  bad_config["config"] = mf::io::config_to_json(model.config()).replace(15, 2, "1000000");
  write([](auto&) {}, bad_config);
  test::expect_error(load, {"__metadata__.config: {\"vocab_size\": 1000000",
                            "needs 32013128 parameter values", "the data section holds only 54176 bytes"});
  test::expect_error([&] { mf::io::load_model<mf::DenseModel<float>>(temp_path("missing.safetensors")); },
                     {"missing.safetensors"});
}

// The variants of docs/method.md §6 are recorded in the config; a config without them (an older
// file, or another writer's) means the defaults; a bad value is named.
TEST(ModelFile, ConfigRecordsTheVariantsAndTheirAbsenceMeansTheDefaults) {
  mf::ModelConfig c = tiny_config();
  c.rms_form = mf::RmsForm::eps_after_root;
  c.embedding_init = mf::EmbeddingInit::small_init;
  c.memory_block_activation = mf::Activation::gelu;
  c.output_projection = true;
  const std::string file = temp_path("variants.safetensors");
  mf::MemoryFormerModel<float> model(c);
  mf::io::save_model(model, file);
  const auto loaded = mf::io::load_model<mf::MemoryFormerModel<float>>(file);
  EXPECT_EQ(mf::io::config_to_json(loaded.config()), mf::io::config_to_json(c));
  const mf::TokenMatrix tokens = test::random_tokens(1, 7, c.vocab_size, 4u);
  EXPECT_EQ(loaded.forward(tokens), model.forward(tokens));
  EXPECT_EQ(mf::io::SafetensorsFile::open(file).info("blocks.1.attn.o.tables").shape,
            (std::vector<std::int64_t>{4, 16, 16}));

  const std::string json = mf::io::config_to_json(tiny_config());
  const std::string without = json.substr(0, json.find(", \"rms_form\"")) + "}";
  ASSERT_EQ(without.find("output_projection"), std::string::npos);
  EXPECT_EQ(mf::io::config_to_json(mf::io::config_from_json(without, "old.safetensors")), json);

  std::string bad = json;
  bad.replace(bad.find("eps_in_root"), 11, "eps_outside");
  test::expect_error([&] { mf::io::config_from_json(bad, "bad.safetensors"); },
                     {"bad.safetensors", "rms_form", "\"eps_outside\"", "expected \"eps_in_root\" or \"eps_after_root\""});
  bad = json;
  bad.replace(bad.find("false"), 5, "\"yes\"");
  test::expect_error([&] { mf::io::config_from_json(bad, "bad.safetensors"); }, {"output_projection", "a boolean"});
}

}  // namespace

// ---- Compressed tables (io/model_file.hpp, table_format.hpp)

namespace compressed {

const mf::TableType kTypes[] = {mf::TableType::bf16, mf::TableType::int8};

// Every Memory Layer of the model, by the name of its tables.
template <class Model>
std::vector<std::pair<std::string, const mf::MemoryLayer<float>*>> memory_layers(Model& m) {
  std::vector<std::pair<std::string, const mf::MemoryLayer<float>*>> out;
  for (int i = 0; i < m.n_layers(); ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    auto& block = m.block(i);
    out.push_back({b + "attn.q.tables", &block.q()});
    out.push_back({b + "attn.k.tables", &block.k()});
    out.push_back({b + "attn.v.tables", &block.v()});
    out.push_back({b + "mlp.up.tables", &block.mlp().up()});
    out.push_back({b + "mlp.down.tables", &block.mlp().down()});
  }
  return out;
}

TEST(ModelFileCompressed, LoadsToExactlyThePackedLayersValues) {
  mf::MemoryFormerModel<float> model(tiny_config());
  for (const mf::TableType type : kTypes) {
    const std::string file = temp_path(std::string("exact_") + mf::to_string(type) + ".safetensors");
    mf::io::save_model(model, file, {{"tokenizer", "bytes"}}, type);
    const auto st = mf::io::SafetensorsFile::open(file);
    EXPECT_EQ(st.metadata().at("tables"), mf::to_string(type));
    EXPECT_EQ(st.metadata().at("tokenizer"), "bytes");
    auto loaded = mf::io::load_model<mf::MemoryFormerModel<float>>(file);
    EXPECT_EQ(loaded.table_type(), type) << "tables are kept as the file stores them";
    const auto original = memory_layers(model), reread = memory_layers(loaded);
    for (std::size_t i = 0; i < original.size(); ++i) {
      const auto& [name, layer] = original[i];
      EXPECT_EQ(reread[i].second->table_values(), layer->compressed(type).table_values()) << type << " " << name;
      EXPECT_NE(reread[i].second->table_values(), layer->tables()) << type << " " << name << " was not rounded";
      const auto& info = st.info(name);
      EXPECT_EQ(info.dtype, type == mf::TableType::bf16 ? mf::io::DType::BF16 : mf::io::DType::I8) << name;
      EXPECT_EQ(st.contains(name + ".scale"), type == mf::TableType::int8) << name;
      if (type == mf::TableType::int8) {
        EXPECT_EQ(st.info(name + ".scale").dtype, mf::io::DType::F32);
        EXPECT_EQ(st.info(name + ".scale").shape, (std::vector<std::int64_t>{info.shape[0], info.shape[1]}));
      }
    }
    // Everything but the tables is stored as it was.
    auto a = model.weights(), b = loaded.weights();
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].value_map(), b[i].value_map()) << a[i].name;
  }
}

TEST(ModelFileCompressed, FilesShrinkByTheBytesOfTheirTables) {
  mf::MemoryFormerModel<float> model(tiny_config());
  Eigen::Index table_values = 0, table_rows = 0, other_values = 0;
  for (const auto& p : model.parameters()) {
    if (mf::detail::is_table_name(p.name)) {
      table_values += p.size();
      table_rows += p.rows;
    } else {
      other_values += p.size();
    }
  }
  auto data_bytes = [&](mf::TableType type) {
    const std::string file = temp_path(std::string("size_") + mf::to_string(type) + ".safetensors");
    mf::io::save_model(model, file, {}, type);
    return static_cast<Eigen::Index>(mf::io::SafetensorsFile::open(file).data_size());
  };
  EXPECT_EQ(data_bytes(mf::TableType::fp32), 4 * (other_values + table_values));
  EXPECT_EQ(data_bytes(mf::TableType::bf16), 4 * other_values + 2 * table_values);
  EXPECT_EQ(data_bytes(mf::TableType::int8), 4 * other_values + table_values + 4 * table_rows);
  EXPECT_EQ(mf::io::SafetensorsFile::open(temp_path("size_fp32.safetensors")).metadata().count("tables"), 0u);
}

// The logits of a converted model stay within what its tables' rounding allows. Per Memory Layer,
// the packed tests prove |dy| <= eps sum_k |s_k| max|row_k| for a relative table error eps (bf16:
// 2^-8 of each value; int8: 1/254 of the row's largest), as long as no hash code changes. Through
// the network these first-order errors add over the 5 n_layers Memory Layers, and the norms rescale
// rather than amplify them: the bound is 5 n_layers eps (measured: about 1/4 of it for int8, 1/20
// for bf16). A rounding can flip a sign bit of a later hash, which selects another row, and no
// bound of this kind holds there: such a position and, through causal attention, the rest of its
// sequence are left out (at least a third of the positions must remain).
TEST(ModelFileCompressed, LogitsStayWithinTheQuantisationBound) {
  mf::MemoryFormerModel<float> model(tiny_config());
  const Eigen::Index batch = 12, seq = 8;
  mf::TokenMatrix tokens(batch, seq);
  for (Eigen::Index i = 0; i < tokens.size(); ++i)
    tokens.data()[i] = static_cast<std::int32_t>((i * 7 + i / 5) % 13);
  mf::MemoryFormerModel<float>::Saved saved;
  const mf::RowMatrix<float> logits = model.forward(tokens, &saved);
  const double gain = 5 * model.n_layers();
  for (const mf::TableType type : kTypes) {
    const std::string file = temp_path(std::string("bound_") + mf::to_string(type) + ".safetensors");
    mf::io::save_model(model, file, {}, type);
    auto loaded = mf::io::load_model<mf::MemoryFormerModel<float>>(file);
    loaded.compress_tables(mf::TableType::fp32);  // the rounded values in trainable tables, to save codes
    mf::MemoryFormerModel<float>::Saved saved_q;
    const mf::RowMatrix<float> logits_q = loaded.forward(tokens, &saved_q);
    // Per sequence, the first position where any hash code differs.
    std::vector<Eigen::Index> first_flip(static_cast<std::size_t>(batch), seq);
    auto note_flips = [&](const mf::CodeMatrix& a, const mf::CodeMatrix& b) {
      for (Eigen::Index r = 0; r < a.rows(); ++r)
        if (a.row(r) != b.row(r)) {
          Eigen::Index& f = first_flip[static_cast<std::size_t>(r / seq)];
          f = std::min(f, r % seq);
        }
    };
    for (std::size_t i = 0; i < saved.blocks.size(); ++i) {
      note_flips(saved.blocks[i].qkv_hash.codes, saved_q.blocks[i].qkv_hash.codes);
      note_flips(saved.blocks[i].mlp.up_hash.codes, saved_q.blocks[i].mlp.up_hash.codes);
      note_flips(saved.blocks[i].mlp.down_hash.codes, saved_q.blocks[i].mlp.down_hash.codes);
    }
    std::vector<Eigen::Index> rows;
    for (Eigen::Index b = 0; b < batch; ++b)
      for (Eigen::Index t = 0; t < first_flip[static_cast<std::size_t>(b)]; ++t) rows.push_back(b * seq + t);
    ASSERT_GE(rows.size() * 4, static_cast<std::size_t>(batch * seq)) << type << ": too many flipped codes";
    const double eps = type == mf::TableType::bf16 ? std::ldexp(1.0, -8) : 1.0 / 254.0;
    const double error = test::relative_error(logits_q(rows, Eigen::all), logits(rows, Eigen::all));
    EXPECT_GT(error, 0.0) << type;
    EXPECT_LE(error, gain * eps) << type << " on " << rows.size() << " positions";
  }
}

TEST(ModelFileCompressed, FilesThatDoNotFitAreNamed) {
  const std::string file = temp_path("bad_int8.safetensors");
  mf::MemoryFormerModel<float> model(tiny_config());
  auto params = model.parameters();
  // A float table, an int8 one with its scale, and every other tensor as saved.
  const mf::RowMatrix<std::int8_t> q = mf::RowMatrix<std::int8_t>::Zero(64, 16);
  const mf::RowMatrix<float> scale = mf::RowMatrix<float>::Ones(4, 16);
  const std::string name = "blocks.0.attn.q.tables";
  auto write = [&](const std::string& tables, auto edit) {
    std::vector<mf::io::TensorData> tensors;
    for (const auto& p : params)
      if (p.name != name)
        tensors.push_back(mf::io::tensor(p.name, p.value, mf::io::file_shape(p, model.config())));
    tensors.push_back({name, mf::io::DType::I8, {4, 16, 16}, q.data()});
    tensors.push_back({name + ".scale", mf::io::DType::F32, {4, 16}, scale.data()});
    edit(tensors);
    std::map<std::string, std::string> metadata{{"format", "memoryformer"},
                                                {"arch", "memoryformer"},
                                                {"config", mf::io::config_to_json(model.config())}};
    if (!tables.empty()) metadata["tables"] = tables;
    mf::io::write_safetensors(file, tensors, metadata);
  };
  auto load = [&] { mf::io::load_model<mf::MemoryFormerModel<float>>(file); };
  auto none = [](auto&) {};
  // Every other table is F32, so "int8" fails at the first of them that is not I8.
  write("int8", none);
  test::expect_error(load, {"tensor 'blocks.0.attn.k.tables': dtype", "F32", "I8", "\"int8\""});
  write("", none);
  test::expect_error(load, {"tensor 'blocks.0.attn.q.tables': dtype", "I8", "int8"});
  write("int4", none);
  test::expect_error(load, {"tables", "\"int4\"", "\"bf16\" or \"int8\""});
  write("bf16", none);
  test::expect_error(load, {"tensor 'blocks.0.attn.q.tables': dtype", "I8", "BF16", "\"bf16\""});

  // A whole int8 file, then one edit at a time.
  const std::string good = temp_path("good_int8.safetensors");
  mf::io::save_model(model, good, {}, mf::TableType::int8);
  const auto st = mf::io::SafetensorsFile::open(good);
  auto rewrite = [&](auto edit) {
    std::vector<mf::io::TensorData> tensors;
    for (const auto& t : st.tensors()) tensors.push_back({t.name, t.dtype, t.shape, st.data(t.name)});
    edit(tensors);
    auto metadata = st.metadata();
    metadata.erase("checksums");
    mf::io::write_safetensors(file, tensors, metadata);
  };
  auto find = [](std::vector<mf::io::TensorData>& t, const std::string& n) {
    return std::find_if(t.begin(), t.end(), [&](const auto& x) { return x.name == n; });
  };
  rewrite(none);
  EXPECT_NO_THROW(load());
  rewrite([&](auto& t) { t.erase(find(t, name + ".scale")); });
  test::expect_error(load, {"tensor 'blocks.0.attn.q.tables.scale': not in the file"});
  rewrite([&](auto& t) { find(t, name + ".scale")->shape = {16, 4}; });
  test::expect_error(load, {"tensor 'blocks.0.attn.q.tables.scale': shape", "[16, 4]", "[4, 16]"});
  rewrite([&](auto& t) { find(t, name)->shape = {4, 16, 8, 2}; });
  test::expect_error(load, {"tensor 'blocks.0.attn.q.tables': shape", "[4, 16, 8, 2]", "[4, 16, 16]"});
  rewrite([&](auto& t) { find(t, name + ".scale")->dtype = mf::io::DType::I32; });
  test::expect_error(load, {"tensor 'blocks.0.attn.q.tables.scale': dtype", "I32", "F32"});
  const float extra = 1;
  rewrite([&](auto& t) { t.push_back(mf::io::tensor("blocks.0.attn.q.bias.scale", &extra, {1})); });
  test::expect_error(load, {"'blocks.0.attn.q.bias.scale'", "unknown"});

  mf::DenseModel<float> dense(tiny_config());
  test::expect_error([&] { mf::io::save_model(dense, file, {}, mf::TableType::int8); },
                     {"tables", "int8", "no hash tables"});
}

}  // namespace compressed
