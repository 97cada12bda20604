// The memoryformer command-line tool (tools/memoryformer/), run as a separate process: its
// logits, generated tokens and converted files equal what the library computes in this process, and
// every bad input ends with a message naming the argument, a non-zero status and no output file.
#include "cli_support.hpp"
#include "test_support.hpp"

#include <memoryformer/io/model_file.hpp>
#include <memoryformer/io/token_dataset.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace cli_test;

mf::ModelConfig tiny_config(int vocab = 13) {
  mf::ModelConfig c;
  c.vocab_size = vocab;
  c.d_model = 16;
  c.n_heads = 2;
  c.n_layers = 2;
  c.tau = 4;
  c.expand_bits = 1;
  c.seed = 11;
  return c;
}

mf::TokenMatrix row(const std::vector<std::int32_t>& ids) {
  return Eigen::Map<const mf::TokenMatrix>(ids.data(), 1, static_cast<Eigen::Index>(ids.size()));
}

std::string join(const std::vector<std::int32_t>& ids) {
  std::string s;
  for (const std::int32_t id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

// Kernel paths sum in different orders, and the tool picks its own: equal up to float rounding.
constexpr double kSamePrecision = 1e-5;

template <class Model>
void expect_logits_match(const std::string& tag) {
  Model model(tiny_config());
  const std::string weights = temp_path(tag + ".safetensors"), out = temp_path(tag + "_logits.safetensors");
  mf::io::save_model(model, weights);
  const std::vector<std::int32_t> ids{3, 1, 4, 1, 5, 9, 2, 6, 12, 0};
  const Result r = run({"logits", "--weights", weights, "--tokens", join(ids), "--out", out});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto file = mf::io::SafetensorsFile::open(out);
  EXPECT_TRUE(file.has_checksums());
  ASSERT_EQ(file.tensors().size(), 1u);
  EXPECT_EQ(file.info("logits").dtype, mf::io::DType::F32);
  EXPECT_EQ(file.info("logits").shape, (std::vector<std::int64_t>{10, 13}));
  EXPECT_EQ(file.metadata().at("tokens"), join(ids));
  const mf::RowMatrix<float> logits = file.matrix<float>("logits");
  EXPECT_LT(test::relative_error(logits, model.forward(row(ids))), kSamePrecision) << tag;
  auto state = model.start_decoding(static_cast<Eigen::Index>(ids.size()));
  EXPECT_LT(test::relative_error(logits, model.decode(row(ids), state)), kSamePrecision) << tag;
}

TEST(Cli, LogitsEqualTheLibrarysForwardAndDecode) {
  expect_logits_match<mf::MemoryFormerModel<float>>("logits_mf");
  expect_logits_match<mf::DenseModel<float>>("logits_dense");
}

// A file with compressed tables runs on them: the logits are those of the original model with
// compress_tables(type), not those of its fp32 tables.
TEST(Cli, LogitsOfACompressedFileUseTheCompressedTables) {
  for (const mf::TableType type : {mf::TableType::bf16, mf::TableType::int8}) {
    mf::MemoryFormerModel<float> model(tiny_config());
    const std::string tag = std::string("compressed_") + mf::to_string(type);
    const std::string weights = temp_path(tag + ".safetensors"), out = temp_path(tag + "_logits.safetensors");
    mf::io::save_model(model, weights, {}, type);
    const std::vector<std::int32_t> ids{3, 1, 4, 1, 5, 9, 2, 6};
    const Result r = run({"logits", "--weights", weights, "--tokens", join(ids), "--out", out});
    ASSERT_EQ(r.status, 0) << r.err;
    const mf::RowMatrix<float> logits = mf::io::SafetensorsFile::open(out).matrix<float>("logits");
    const mf::RowMatrix<float> exact = model.forward(row(ids));
    model.compress_tables(type);
    EXPECT_LT(test::relative_error(logits, model.forward(row(ids))), kSamePrecision) << tag;
    EXPECT_GT(test::relative_error(logits, exact), 1e-6) << tag;
  }
}

TEST(Cli, GenerateEqualsTheLibrarysGenerate) {
  mf::MemoryFormerModel<float> model(tiny_config());
  const std::string weights = temp_path("generate.safetensors");
  mf::io::save_model(model, weights);
  const std::vector<std::int32_t> prompt{7, 2, 9};
  struct Case {
    std::vector<std::string> flags;
    mf::SamplingOptions options;
  };
  const Case cases[] = {
      {{"--temperature", "0"}, {0.0, 0, 0}},                                   // greedy
      {{"--temperature", "1.5", "--top-k", "1", "--seed", "4"}, {1.5, 1, 4}},  // greedy by top-k
      {{"--temperature", "0.9", "--top-k", "5", "--seed", "7"}, {0.9, 5, 7}},  // sampled
  };
  for (const Case& c : cases) {
    std::vector<std::string> args{"generate",   "--weights", weights, "--tokens",
                                  join(prompt), "--max-new", "20"};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    const Result r = run(args);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, join(mf::generate(model, prompt, 20, c.options)) + "\n") << c.flags[1];
  }
}

TEST(Cli, GenerateTakesTextForAByteModel) {
  mf::MemoryFormerModel<float> model(tiny_config(256));
  const std::string weights = temp_path("generate_text.safetensors");
  mf::io::save_model(model, weights, {{"tokenizer", "bytes"}});
  const std::string prompt = "Hi, \xc3\xa9t\xc3\xa9";  // any bytes, UTF-8 here
  const Result r =
      run({"generate", "--weights", weights, "--prompt", prompt, "--max-new", "16", "--top-k", "1"});
  ASSERT_EQ(r.status, 0) << r.err;
  std::string expected;
  std::vector<std::int32_t> ids;
  for (const unsigned char c : prompt) ids.push_back(c);
  for (const std::int32_t t : mf::generate(model, ids, 16, {0.0, 0, 0})) expected += static_cast<char>(t);
  EXPECT_EQ(r.out, expected + "\n");
  EXPECT_EQ(r.out.substr(0, prompt.size()), prompt);
}

TEST(Cli, ConvertWritesWhatTheLibraryWrites) {
  mf::MemoryFormerModel<float> model(tiny_config());
  const std::string weights = temp_path("convert.safetensors");
  mf::io::save_model(model, weights, {{"tokenizer", "bytes"}});
  for (const mf::TableType type : {mf::TableType::bf16, mf::TableType::int8}) {
    const std::string out = temp_path(std::string("convert_") + mf::to_string(type) + ".safetensors"),
                      expected =
                          temp_path(std::string("convert_lib_") + mf::to_string(type) + ".safetensors");
    const Result r = run({"convert", "--tables", mf::to_string(type), "--weights", weights, "--out", out});
    ASSERT_EQ(r.status, 0) << r.err;
    mf::io::save_model(model, expected, {{"tokenizer", "bytes"}}, type);
    EXPECT_EQ(read_bytes(out), read_bytes(expected)) << type;
    EXPECT_LT(fs::file_size(out), fs::file_size(weights)) << type;
    // And back to float tables: the dequantised values, unchanged.
    const std::string back = temp_path(std::string("convert_back_") + mf::to_string(type) + ".safetensors");
    ASSERT_EQ(run({"convert", "--tables", "fp32", "--weights", out, "--out", back}).status, 0);
    auto a = mf::io::load_model<mf::MemoryFormerModel<float>>(out);
    a.compress_tables(mf::TableType::fp32);  // the rounded values as float tables, computed as b's
    const auto b = mf::io::load_model<mf::MemoryFormerModel<float>>(back);
    EXPECT_EQ(a.forward(row({1, 2, 3})), b.forward(row({1, 2, 3}))) << type;
    EXPECT_EQ(mf::io::SafetensorsFile::open(back).metadata().count("tables"), 0u);
  }
}

TEST(Cli, InitWritesWhatTheLibrarySavesAndInspectSaysItMaps) {
  mf::ModelConfig config = tiny_config();
  const std::string json = temp_path("init_config.json"), out = temp_path("init.safetensors"),
                    expected = temp_path("init_lib.safetensors");
  std::ofstream(json) << mf::io::config_to_json(config);
  const Result r = run({"init", "--config", json, "--tables", "int8", "--seed", "5", "--out", out});
  ASSERT_EQ(r.status, 0) << r.err;
  config.seed = 5;
  mf::MemoryFormerModel<float> model(config);
  mf::io::save_model(model, expected, {}, mf::TableType::int8);
  EXPECT_EQ(read_bytes(out), read_bytes(expected));
  const Result inspect = run({"inspect", out});
  EXPECT_NE(inspect.out.find("mapping    all 10 tables are read in place"), std::string::npos) << inspect.out;

  const Result dense = run({"init", "--config", json, "--arch", "dense", "--tables", "int8", "--out", out});
  EXPECT_EQ(dense.status, 2);
  EXPECT_NE(dense.err.find("--tables = \"int8\": expected fp32 for --arch dense"), std::string::npos) << dense.err;
  const Result missing = run({"init", "--config", temp_path("no_such.json"), "--out", out});
  EXPECT_EQ(missing.status, 3);
  EXPECT_NE(missing.err.find("expected tiny, small, base or a readable JSON file"), std::string::npos) << missing.err;
  const Result vocab = run({"init", "--config", json, "--vocab", "7", "--out", out});
  EXPECT_EQ(vocab.status, 2);
  EXPECT_NE(vocab.err.find("--vocab = 7: expected no --vocab with a config file"), std::string::npos) << vocab.err;
}

TEST(Cli, InspectListsTensorsAndChecksums) {
  mf::MemoryFormerModel<float> model(tiny_config());
  const std::string weights = temp_path("inspect.safetensors"),
                    packed = temp_path("inspect_int8.safetensors");
  mf::io::save_model(model, weights, {{"tokenizer", "bytes"}});
  Result r = run({"inspect", weights});
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* part :
       {"arch       memoryformer", "tables     fp32", "\"vocab_size\": 13", "tokenizer = \"bytes\"",
        "blocks.1.mlp.down.tables", "[4, 32, 16]", "8192", "checksums  verified (31 of 31 tensors)"})
    EXPECT_NE(r.out.find(part), std::string::npos) << part << " not in:\n" << r.out;
  const auto file = mf::io::SafetensorsFile::open(weights);
  for (const auto& t : file.tensors())
    EXPECT_NE(r.out.find("  " + t.name + " "), std::string::npos) << t.name;

  mf::io::save_model(model, packed, {}, mf::TableType::int8);
  r = run({"inspect", packed});
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* part : {"tables     int8", "blocks.0.attn.q.tables.scale", "I8 ", "(41 of 41 tensors)"})
    EXPECT_NE(r.out.find(part), std::string::npos) << part << " not in:\n" << r.out;

  // One byte of one tensor changed: inspect still prints everything, names it and fails.
  const std::string damaged = temp_path("inspect_damaged.safetensors");
  std::string bytes = read_bytes(weights);
  const auto& victim = file.info("final_norm.weight");
  bytes[bytes.size() - file.data_size() + victim.begin] ^= 0x01;
  std::ofstream(damaged, std::ios::binary) << bytes;
  r = run({"inspect", damaged});
  EXPECT_EQ(r.status, 4);
  EXPECT_NE(r.out.find("FAILED for 1 of 31 checksummed tensors"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("'final_norm.weight'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("lm_head.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("FILE"), std::string::npos) << r.err;

  const std::string bare = temp_path("inspect_bare.safetensors");
  const float v[3] = {1, 2, 3};
  mf::io::write_safetensors(bare, {mf::io::tensor("x", v, {3})}, {}, /*checksums=*/false);
  r = run({"inspect", bare});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("checksums  absent"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("not a memoryformer model file"), std::string::npos) << r.out;
}

// The status says the kind of error, whatever the message: 3 for a file the system refuses, 4 for
// one whose bytes are not a model file.
TEST(Cli, ExitStatusSaysWhichKindOfErrorItWas) {
  const std::string weights = temp_path("status.safetensors"),
                    missing = temp_path("status_missing.safetensors"),
                    corrupted = temp_path("status_corrupted.safetensors"),
                    truncated = temp_path("status_truncated.safetensors"),
                    out = temp_path("status_out.safetensors");
  fs::remove(missing);
  mf::MemoryFormerModel<float> model(tiny_config());
  mf::io::save_model(model, weights);
  const std::string bytes = read_bytes(weights);
  std::string flipped = bytes;
  flipped[bytes.size() - 1] ^= 0x01;  // the last byte of the last tensor: its checksum fails
  std::ofstream(corrupted, std::ios::binary) << flipped;
  std::ofstream(truncated, std::ios::binary) << bytes.substr(0, 100);  // inside the header

  for (const std::string command : {"logits", "generate"}) {
    const auto status = [&](const std::string& file) {
      std::vector<std::string> args{command, "--weights", file, "--tokens", "1"};
      if (command == "logits") args.insert(args.end(), {"--out", out});
      return run(args);
    };
    const Result gone = status(missing);
    EXPECT_EQ(gone.status, 3) << command << ": " << gone.err;
    EXPECT_NE(gone.err.find("'" + missing + "'"), std::string::npos) << gone.err;
    EXPECT_NE(gone.err.find(std::strerror(ENOENT)), std::string::npos) << gone.err;
    const Result bad = status(corrupted);
    EXPECT_EQ(bad.status, 4) << command << ": " << bad.err;
    EXPECT_NE(bad.err.find("checksum"), std::string::npos) << bad.err;
    EXPECT_EQ(status(truncated).status, 4) << command;
    EXPECT_EQ(status(weights).status, 0) << command;
  }
  EXPECT_EQ(run({"inspect", missing}).status, 3);
  EXPECT_EQ(run({"inspect", truncated}).status, 4);
  EXPECT_EQ(run({"convert", "--tables", "int8", "--weights", corrupted, "--out", out}).status, 4);
}

#ifdef MF_CLI_MPIEXEC
// --shard tables splits the tables over the ranks; rank 0 alone writes the logits and prints the
// tokens, which equal the single process's. Without mpiexec it runs as one rank.
TEST(Cli, ShardedLogitsAndGenerateEqualOneProcess) {
  mf::MemoryFormerModel<float> model(tiny_config(29));
  const std::string weights = temp_path("sharded.safetensors"), out = temp_path("sharded_logits.safetensors");
  mf::io::save_model(model, weights, {}, mf::TableType::int8);
  const std::vector<std::int32_t> ids{3, 1, 4, 1, 5, 9, 2, 6, 28, 0};
  const Result single = run({"logits", "--weights", weights, "--tokens", join(ids), "--out", out});
  ASSERT_EQ(single.status, 0) << single.err;
  const mf::RowMatrix<float> expected = mf::io::SafetensorsFile::open(out).matrix<float>("logits");
  const std::vector<std::string> generate{"generate", "--weights",     weights, "--tokens", "7,2,9", "--max-new",
                                          "12",       "--temperature", "0.8",   "--seed",   "3"};
  const Result generated = run(generate);
  ASSERT_EQ(generated.status, 0) << generated.err;
  for (const std::string& launcher : {std::string(), mpiexec(2), mpiexec(3)}) {
    fs::remove(out);
    const Result r = run({"logits", "--weights", weights, "--tokens", join(ids), "--out", out, "--shard", "tables"}, launcher);
    ASSERT_EQ(r.status, 0) << launcher << ": " << r.err;
    const auto file = mf::io::SafetensorsFile::open(out);
    EXPECT_EQ(file.metadata().at("tokens"), join(ids));
    EXPECT_LT(test::relative_error(file.matrix<float>("logits"), expected), kSamePrecision) << launcher;
    std::vector<std::string> args = generate;
    args.insert(args.end(), {"--shard", "tables"});
    const Result g = run(args, launcher);
    ASSERT_EQ(g.status, 0) << launcher << ": " << g.err;
    EXPECT_EQ(g.out, generated.out) << launcher;  // printed once, by rank 0
  }
}

// A bad file ends every rank: the status of its kind, the message once, no output file.
TEST(Cli, ShardedRunsEndEveryRankOnABadFile) {
  const std::string weights = temp_path("sharded_bad.safetensors"), missing = temp_path("sharded_missing.safetensors"),
                    out = temp_path("sharded_bad_logits.safetensors");
  fs::remove(missing);
  fs::remove(out);
  mf::MemoryFormerModel<float> model(tiny_config());
  mf::io::save_model(model, weights);
  std::string bytes = read_bytes(weights);
  bytes[bytes.size() - 1] ^= 0x01;  // the last tensor's checksum fails, whichever rank hashes it
  std::ofstream(weights, std::ios::binary) << bytes;
  const auto occurrences = [](const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  for (const int ranks : {2, 3}) {
    const Result gone =
        run({"logits", "--weights", missing, "--tokens", "1,2", "--out", out, "--shard", "tables"}, mpiexec(ranks));
    EXPECT_EQ(gone.status, 3) << gone.err;
    EXPECT_EQ(occurrences(gone.err, "'" + missing + "'"), 1u) << gone.err;
    const Result bad =
        run({"generate", "--weights", weights, "--tokens", "1,2", "--shard", "tables"}, mpiexec(ranks));
    EXPECT_EQ(bad.status, 4) << bad.err;
    EXPECT_EQ(occurrences(bad.err, "checksum: mismatch"), 1u) << bad.err;
    EXPECT_FALSE(fs::exists(out));
  }
  const Result unknown = run({"logits", "--weights", weights, "--tokens", "1", "--out", out, "--shard", "rows"});
  EXPECT_EQ(unknown.status, 2) << unknown.err;
  EXPECT_NE(unknown.err.find("--shard"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("\"rows\""), std::string::npos) << unknown.err;
}
#endif

TEST(Cli, EveryCommandHasHelp) {
  for (const char* command :
       {"logits", "generate", "inspect", "convert", "init", "tokenizer-train", "tokenize", "train", "eval"}) {
    const Result r = run({command, "--help"});
    EXPECT_EQ(r.status, 0) << command;
    EXPECT_NE(r.out.find(std::string("usage: memoryformer ") + command), std::string::npos) << r.out;
  }
  const Result r = run({"--help"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("convert"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("3 file-system error"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("4 malformed file"), std::string::npos) << r.out;
}

// Each bad input: the expected status, every listed part in stderr, and nothing written.
TEST(Cli, BadInputsAreNamedAndWriteNothing) {
  const std::string dir = temp_path("errors/");
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string m = temp_path("errors_model.safetensors"), d = temp_path("errors_dense.safetensors"),
                    missing = temp_path("no_such_file.safetensors"), text = temp_path("errors_text.txt"),
                    out = dir + "out.safetensors";
  mf::MemoryFormerModel<float> model(tiny_config());
  mf::io::save_model(model, m);
  mf::DenseModel<float> dense(tiny_config());
  mf::io::save_model(dense, d);
  std::ofstream(text) << "not a safetensors file\n";
  const std::string logits_file = temp_path("errors_logits.safetensors");
  ASSERT_EQ(run({"logits", "--weights", m, "--tokens", "1", "--out", logits_file}).status, 0);

  struct Case {
    std::vector<std::string> args;
    int status;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases{
      {{"frobnicate"}, 2, {"command", "\"frobnicate\"", "logits, generate, inspect, convert"}},
      {{}, 2, {"command", "\"\""}},
      {{"logits", "--weights", m, "--tokens", "1", "--out", out, "--bogus", "1"},
       2,
       {"\"--bogus\"", "--tokens"}},
      {{"logits", "--weights", missing, "--tokens", "1", "--out", out},
       3,
       {"--weights", missing, "cannot open"}},
      {{"logits", "--weights", text, "--tokens", "1", "--out", out}, 4, {"--weights", text}},
      {{"logits", "--weights", logits_file, "--tokens", "1", "--out", out},
       4,
       {"--weights", "format", "\"memoryformer-logits\"", "\"memoryformer\""}},
      {{"logits", "--weights", m, "--tokens", "1,x,3", "--out", out},
       2,
       {"--tokens", "\"1,x,3\"", "\"x\"", "integer"}},
      {{"logits", "--weights", m, "--tokens", "1,,3", "--out", out}, 2, {"--tokens", "\"1,,3\"", "integer"}},
      {{"logits", "--weights", m, "--tokens", "", "--out", out}, 2, {"--tokens", "\"\"", "at least one"}},
      {{"logits", "--weights", m, "--tokens", "1,13", "--out", out},
       2,
       {"--tokens", "\"1,13\"", "[0, 12]", "13 is not"}},
      {{"logits", "--weights", m, "--tokens", "-1", "--out", out}, 2, {"--tokens", "[0, 12]", "-1 is not"}},
      {{"logits", "--weights", m, "--tokens", "99999999999999999999", "--out", out},
       2,
       {"--tokens", "integer"}},
      {{"logits", "--weights", m, "--tokens", "1"}, 2, {"--out", "missing"}},
      {{"logits", "--weights", m, "--tokens", "1", "--out", dir + "no/such/dir.safetensors"},
       3,
       {"--out", "no/such/dir.safetensors", "creating the temporary file"}},
      {{"logits", "--weights", m, "--tokens", "1", "--out", out, "--threads", "many"},
       2,
       {"--threads", "\"many\""}},
      {{"generate", "--weights", m, "--tokens", "1", "--frob"}, 2, {"\"--frob\""}},
      {{"generate", "--weights", m}, 2, {"--prompt", "--tokens", "neither"}},
      {{"generate", "--weights", m, "--prompt", "a", "--tokens", "1"}, 2, {"--prompt", "--tokens", "both"}},
      {{"generate", "--weights", m, "--prompt", ""}, 2, {"--prompt", "at least one character"}},
      {{"generate", "--weights", m, "--prompt", "abc"},
       2,
       {"--prompt", "\"abc\"", "vocab_size 256", "vocab_size 13"}},
      {{"generate", "--weights", m, "--tokens", "0,13"}, 2, {"--tokens", "\"0,13\"", "[0, 12]"}},
      {{"generate", "--weights", m, "--tokens", "1", "--temperature", "-1"}, 2, {"--temperature", "\"-1\""}},
      {{"generate", "--weights", m, "--tokens", "1", "--max-new", "x"}, 2, {"--max-new", "\"x\"", "integer"}},
      {{"generate", "--weights", missing, "--tokens", "1"}, 3, {"--weights", missing}},
      {{"inspect"}, 2, {"FILE", "missing"}},
      {{"inspect", missing}, 3, {"FILE", missing, "cannot open"}},
      {{"inspect", text}, 4, {"FILE", text}},
      {{"inspect", m, "extra"}, 2, {"\"extra\"", "FILE"}},
      {{"inspect", "--weights", m}, 2, {"\"--weights\""}},
      {{"convert", "--tables", "int4", "--weights", m, "--out", out},
       2,
       {"--tables", "\"int4\"", "bf16, int8, fp32"}},
      {{"convert", "--tables", "int8", "--weights", d, "--out", out},
       2,
       {"--tables", "\"int8\"", "fp32", "dense"}},
      {{"convert", "--tables", "int8", "--weights", missing, "--out", out}, 3, {"--weights", missing}},
      {{"convert", "--weights", m, "--out", out}, 2, {"--tables", "missing"}},
  };
  for (const Case& c : cases) {
    std::string line;
    for (const std::string& a : c.args) line += " " + a;
    const Result r = run(c.args);
    EXPECT_EQ(r.status, c.status) << line << "\n" << r.err;
    for (const std::string& part : c.parts)
      EXPECT_NE(r.err.find(part), std::string::npos) << line << ": " << r.err;
    EXPECT_TRUE(fs::is_empty(dir)) << line << " left a file in " << dir;
  }
}

// ---- The real-text workflow: tokenizer-train, tokenize, train, eval, generate --tokenizer.

// eval's numbers against a brute-force pass: every window's logits from the library, the softmax
// of each predicted token by hand, and bits per byte from the dataset's byte count.
TEST(Cli, TrainThenEvalReportsTheLossABruteForcePassComputes) {
  const std::string data = pattern_dataset("train_eval");
  const std::string weights = temp_path("train_eval.safetensors");
  const Result t = run(train_flags(data, weights, 6));
  ASSERT_EQ(t.status, 0) << t.err;
  const mf::io::JsonValue tj = last_json_line(t.out);
  EXPECT_EQ(tj.at("steps").as_int64(), 6);
  EXPECT_NEAR(tj.at("val_ppl").as_number(), std::exp(tj.at("val_loss").as_number()), 1e-4);
  EXPECT_GT(tj.at("tokens_per_s").as_number(), 0);
  EXPECT_TRUE(fs::exists(weights + ".ckpt-6"));
  const std::string csv = read_bytes(weights + ".csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "step,lr,train_loss,val_loss,val_bpb,tokens_per_s,seconds");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3) << csv;  // header, steps 3 and 6

  const Result e = run({"eval", "--weights", weights, "--data", data});
  ASSERT_EQ(e.status, 0) << e.err;
  const mf::io::JsonValue ej = last_json_line(e.out);
  const auto model = mf::io::load_model<mf::MemoryFormerModel<float>>(weights);
  const auto dataset = mf::io::TokenDataset::open(data);
  const auto& val = dataset.val();
  double nats = 0;
  long long predicted = 0;
  for (std::size_t start = 0; start + 1 < val.size(); start += 16) {  // windows of the training seq
    const std::size_t len = std::min<std::size_t>(16, val.size() - 1 - start);
    std::vector<std::int32_t> ids;
    for (std::size_t i = 0; i < len; ++i) ids.push_back(val[start + i]);
    const mf::RowMatrix<float> logits = model.forward(row(ids));
    for (std::size_t i = 0; i < len; ++i) {
      const auto r = logits.row(static_cast<Eigen::Index>(i)).cast<double>();
      double z = 0;
      for (Eigen::Index c = 0; c < r.size(); ++c) z += std::exp(r(c));
      nats -= std::log(std::exp(r(val[start + i + 1])) / z);
      ++predicted;
    }
  }
  EXPECT_EQ(ej.at("tokens").as_int64(), predicted);
  EXPECT_NEAR(ej.at("loss").as_number(), nats / predicted, 1e-4);
  EXPECT_NEAR(ej.at("ppl").as_number(), std::exp(nats / predicted), 1e-3);
  EXPECT_NEAR(ej.at("bpb").as_number(), nats / std::log(2.0) / 1234, 1e-4);
}

// A run stopped after 5 of 8 steps and resumed ends where an uninterrupted one does, bit for bit.
TEST(Cli, ResumedTrainingEqualsUninterruptedTraining) {
  const std::string data = pattern_dataset("resume");
  const std::string straight = temp_path("resume_straight.safetensors"), split = temp_path("resume_split.safetensors");
  const Result a = run(train_flags(data, straight, 8));
  ASSERT_EQ(a.status, 0) << a.err;
  std::vector<std::string> first = train_flags(data, split, 8);
  first.insert(first.end(), {"--stop-after", "5"});
  ASSERT_EQ(run(first).status, 0);
  std::vector<std::string> resumed = train_flags(data, split, 8);
  resumed.insert(resumed.end(), {"--resume", split});
  const Result b = run(resumed);
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_NE(b.err.find("resuming at step 6"), std::string::npos) << b.err;
  EXPECT_EQ(last_json_line(a.out).at("val_loss").number_text(), last_json_line(b.out).at("val_loss").number_text());
  const auto fa = mf::io::SafetensorsFile::open(straight), fb = mf::io::SafetensorsFile::open(split);
  ASSERT_EQ(fa.tensors().size(), fb.tensors().size());
  for (const auto& t : fa.tensors())
    EXPECT_EQ(fa.matrix<float>(t.name), fb.matrix<float>(t.name)) << t.name << " differs after resuming";
  // The validation curve of the resumed run is the uninterrupted one.
  EXPECT_EQ(curve_columns(read_bytes(straight + ".csv")), curve_columns(read_bytes(split + ".csv")));
  EXPECT_EQ(curve_columns(read_bytes(split + ".csv")).size(), 4u) << "header, steps 3, 6 and 8";
}

// The model-variant flags (docs/method.md §6) reach the config the model file records, and a bad
// combination is refused naming its flag.
TEST(Cli, TrainFlagsSetTheModelVariants) {
  const std::string data = pattern_dataset("variants");
  const std::string weights = temp_path("variants.safetensors");
  std::vector<std::string> args = train_flags(data, weights, 2);
  args.insert(args.end(), {"--expand-bits", "1", "--score", "l1", "--temperature", "0.5", "--rms-form",
                           "eps_after_root", "--norm-eps", "1e-3", "--embedding-init", "small_init",
                           "--memory-block-activation", "gelu", "--output-projection", "memory"});
  const Result t = run(args);
  ASSERT_EQ(t.status, 0) << t.err;
  const mf::ModelConfig c = mf::io::load_config(mf::io::SafetensorsFile::open(weights));
  EXPECT_EQ(c.expand_bits, 1);
  EXPECT_EQ(c.score, mf::Score::l1);
  EXPECT_EQ(c.temperature, 0.5);
  EXPECT_EQ(c.rms_form, mf::RmsForm::eps_after_root);
  EXPECT_EQ(c.norm_eps, 1e-3);
  EXPECT_EQ(c.embedding_init, mf::EmbeddingInit::small_init);
  EXPECT_EQ(c.memory_block_activation, mf::Activation::gelu);
  EXPECT_TRUE(c.output_projection);
  std::vector<std::string> bad = train_flags(data, temp_path("variants_bad.safetensors"), 1);
  bad.insert(bad.end(), {"--expand-bits", "13"});  // tau 4 + 13 > 16
  const Result r = run(bad);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("--expand-bits = \"13\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tau + expand_bits <= 16"), std::string::npos) << r.err;
}

TEST(Cli, TrainAndEvalRefuseDataThatDoesNotFit) {
  const std::string data = pattern_dataset("refuse"), other = pattern_dataset("refuse_other", "00000000000000bb");
  const std::string weights = temp_path("refuse.safetensors");
  ASSERT_EQ(run(train_flags(data, weights, 1)).status, 0);
  const std::string dir = temp_path("refuse_out/");
  fs::remove_all(dir);
  fs::create_directories(dir);
  struct Case {
    std::vector<std::string> args;
    int status;
    std::vector<std::string> parts;
  };
  std::vector<std::string> long_seq = train_flags(data, dir + "m.safetensors", 1);
  long_seq[std::find(long_seq.begin(), long_seq.end(), "--seq") - long_seq.begin() + 1] = "400";
  std::vector<std::string> wrong_arch = train_flags(data, dir + "m.safetensors", 2);
  wrong_arch.insert(wrong_arch.end(), {"--arch", "dense", "--resume", weights});
  std::vector<std::string> other_tokenizer = train_flags(other, dir + "m.safetensors", 2);
  other_tokenizer.insert(other_tokenizer.end(), {"--resume", weights});
  const Case cases[] = {
      {long_seq, 2, {"--seq = 400", "399", "val split", "400 tokens"}},
      {wrong_arch, 2, {"--resume", "arch \"memoryformer\"", "--arch dense"}},
      {other_tokenizer, 2, {"--data", "00000000000000bb", "00000000000000aa"}},
      {{"eval", "--weights", weights, "--data", other}, 2, {"--data", "00000000000000bb", "00000000000000aa"}},
      {{"train", "--data", dir + "none", "--out", dir + "m.safetensors"}, 3, {"--data", "meta.json"}},
  };
  for (const Case& c : cases) {
    const Result r = run(c.args);
    EXPECT_EQ(r.status, c.status) << c.args[0] << ": " << r.err;
    for (const std::string& part : c.parts) EXPECT_NE(r.err.find(part), std::string::npos) << part << " not in " << r.err;
  }
  EXPECT_TRUE(fs::is_empty(dir));
  // A truncated train.bin is a malformed file: status 4, naming it.
  const std::string bin = data + "train.bin";
  const std::string bytes = read_bytes(bin);
  std::ofstream(bin, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() - 1);
  const Result r = run(train_flags(data, dir + "m.safetensors", 1));
  EXPECT_EQ(r.status, 4) << r.err;
  EXPECT_NE(r.err.find("train.bin"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::is_empty(dir));
}

#if MF_CLI_HAS_SENTENCEPIECE
// A small corpus of English-like paragraphs, deterministic: blank lines separate documents.
std::string small_corpus() {
  const char* words[] = {"the", "model", "reads", "a", "table", "of", "hash", "codes", "and", "sums",
                         "rows", "into", "its", "output", "for", "every", "token", "in", "text", "while"};
  mf::detail::Rng rng(17);
  std::string text;
  for (int paragraph = 0; paragraph < 60; ++paragraph) {
    for (int line = 0; line < 4; ++line) {
      for (int w = 0; w < 12; ++w) text += std::string(w ? " " : "") + words[static_cast<int>(rng.uniform() * 20)];
      text += ".\n";
    }
    text += "\n";
  }
  return text;
}

TEST(Cli, TextWorkflowFromACorpusToSampledText) {
  const std::string corpus = temp_path("corpus.txt"), tok = temp_path("tok.model"), data = temp_path("text_data/"),
                    weights = temp_path("text.safetensors");
  fs::remove_all(data);
  const std::string text = small_corpus();
  std::ofstream(corpus, std::ios::binary | std::ios::trunc) << text;
  const Result t = run({"tokenizer-train", "--input", corpus, "--vocab-size", "300", "--out", tok});
  ASSERT_EQ(t.status, 0) << t.err;
  const Result d = run({"tokenize", "--tokenizer", tok, "--input", corpus, "--out", data, "--val-fraction", "0.1"});
  ASSERT_EQ(d.status, 0) << d.err;
  const auto dataset = mf::io::TokenDataset::open(data);
  EXPECT_EQ(dataset.meta().vocab_size, 300);
  EXPECT_EQ(dataset.meta().train.text_bytes + dataset.meta().val.text_bytes, text.size());
  // Whole documents: the val text is the last paragraphs, at least 10% of the bytes.
  EXPECT_GE(dataset.meta().val.text_bytes, text.size() / 10);
  EXPECT_EQ(text[text.size() - dataset.meta().val.text_bytes - 1], '\n');
  EXPECT_EQ(text[text.size() - dataset.meta().val.text_bytes - 2], '\n');
  EXPECT_LT(dataset.train().size(), text.size() * 9 / 10) << "subwords: fewer tokens than bytes";

  std::vector<std::string> train = train_flags(data, weights, 3);
  ASSERT_EQ(run(train).status, 0);
  // The tokenizer round-trips any text, newlines and characters it never saw included: with
  // --max-new 0 generate prints decode(encode(prompt)).
  const std::string prompt = "the model\n\n  reads \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80\ttext";
  const Result g0 = run({"generate", "--weights", weights, "--tokenizer", tok, "--prompt", prompt, "--max-new", "0"});
  ASSERT_EQ(g0.status, 0) << g0.err;
  EXPECT_EQ(g0.out, prompt + "\n");
  const Result g = run({"generate", "--weights", weights, "--tokenizer", tok, "--prompt", "the", "--max-new", "20",
                        "--temperature", "0.8", "--top-p", "0.9", "--seed", "1"});
  ASSERT_EQ(g.status, 0) << g.err;
  EXPECT_EQ(g.out.rfind("the", 0), 0u) << g.out;
  EXPECT_GT(g.out.size(), 5u) << g.out;

  // Another tokenizer is refused, naming both checksums.
  const std::string tok2 = temp_path("tok2.model");
  ASSERT_EQ(run({"tokenizer-train", "--input", corpus, "--vocab-size", "290", "--out", tok2}).status, 0);
  const Result bad = run({"generate", "--weights", weights, "--tokenizer", tok2, "--prompt", "the"});
  EXPECT_EQ(bad.status, 2) << bad.err;
  EXPECT_NE(bad.err.find("290 pieces"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("vocab_size 300"), std::string::npos) << bad.err;
}

TEST(Cli, TokenizerTrainRefusesWhatIsNotACorpus) {
  const std::string dir = temp_path("tok_errors/");
  fs::remove_all(dir);
  fs::create_directories(dir + "in");
  const std::string empty = dir + "in/empty.txt", binary = dir + "in/binary.txt", small = dir + "in/small.txt";
  std::ofstream(empty, std::ios::binary);
  std::ofstream(binary, std::ios::binary) << std::string("text\0more", 9);
  std::ofstream(small, std::ios::binary) << "a few words of text\n";
  struct Case {
    std::string input, vocab;
    std::vector<std::string> parts;
  };
  const Case cases[] = {
      {empty, "300", {"--input", "empty"}},
      {binary, "300", {"--input", "NUL byte at offset 4"}},
      {small, "5000", {"--vocab-size = 5000", "Vocabulary size too high"}},
      {dir + "missing.txt", "300", {"--input", "does not exist"}},
  };
  for (const Case& c : cases) {
    const Result r = run({"tokenizer-train", "--input", c.input, "--vocab-size", c.vocab, "--out", dir + "t.model"});
    EXPECT_EQ(r.status, 2) << c.input << ": " << r.err;
    for (const std::string& part : c.parts) EXPECT_NE(r.err.find(part), std::string::npos) << part << " not in " << r.err;
    EXPECT_FALSE(fs::exists(dir + "t.model")) << c.input;
  }
}
#endif

#ifdef MF_CLI_MPIEXEC
// train --data-parallel under mpiexec: each rank takes its share of every batch of 4 and the
// gradients are summed, so the model rank 0 writes is the one one process trains on the whole
// batches (to rounding; tests/distributed checks the step itself bit for bit across ranks).
TEST(Cli, DataParallelTrainingEqualsOneProcess) {
  const std::string data = pattern_dataset("data_parallel");
  std::vector<std::string> flags = train_flags(data, temp_path("dp_single.safetensors"), 4);
  const Result single = run(flags);
  ASSERT_EQ(single.status, 0) << single.err;
  const double expected = last_json_line(single.out).at("val_loss").as_number();
  for (const int ranks : {2, 3}) {
    const std::string out = temp_path("dp_" + std::to_string(ranks) + ".safetensors");
    fs::remove(out);
    std::vector<std::string> args = train_flags(data, out, 4);
    args.insert(args.end(), {"--data-parallel", "--threads", "1"});
    const Result r = run(args, mpiexec(ranks));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << "rank 0 alone prints: " << r.out;
    EXPECT_NEAR(last_json_line(r.out).at("val_loss").as_number(), expected, 1e-4 * expected) << ranks << " ranks";
    EXPECT_TRUE(fs::exists(out) && fs::exists(out + ".ckpt-4")) << ranks << " ranks";
  }
  std::vector<std::string> args = flags;
  args.insert(args.end(), {"--data-parallel", "--batch", "1"});
  const Result small = run(args, mpiexec(2));
  EXPECT_EQ(small.status, 2) << small.err;
  EXPECT_NE(small.err.find("--batch = 1: expected at least the 2 ranks"), std::string::npos) << small.err;
  EXPECT_EQ(small.err.find("--batch = 1"), small.err.rfind("--batch = 1")) << "printed once: " << small.err;
}
#endif

}  // namespace
