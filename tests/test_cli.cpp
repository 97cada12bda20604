// The memoryformer command-line tool (tools/memoryformer_cli.cpp), run as a separate process: its
// logits, generated tokens and converted files equal what the library computes in this process, and
// every bad input ends with a message naming the argument, a non-zero status and no output file.
#include "test_support.hpp"

#include <memoryformer/io/model_file.hpp>

#include <sys/wait.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#ifndef MF_CLI_PATH
#error "MF_CLI_PATH must name the memoryformer executable"
#endif

namespace {

namespace fs = std::filesystem;

struct Result {
  int status;  // the exit status; -1000 - signal if the process was killed (a crash)
  std::string out, err;
};

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (const char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "mf_cli_" + name; }

Result run(const std::vector<std::string>& args) {
  static int calls = 0;
  const std::string err_file =
      temp_path("stderr_" + std::to_string(::getpid()) + "_" + std::to_string(calls++));
  std::string command = shell_quote(MF_CLI_PATH);
  for (const std::string& a : args) command += " " + shell_quote(a);
  command += " 2>" + shell_quote(err_file);
  Result r{-1, "", ""};
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "popen failed: " << command;
    return r;
  }
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) r.out.append(buf, n);
  const int status = ::pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? -1000 - WTERMSIG(status) : -1;
  r.err = read_bytes(err_file);
  fs::remove(err_file);
  return r;
}

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

TEST(Cli, EveryCommandHasHelp) {
  for (const char* command : {"logits", "generate", "inspect", "convert"}) {
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

}  // namespace
