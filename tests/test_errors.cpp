// Every bad argument throws memoryformer::ArgumentError naming the argument, the value and the
// expectation; a file the system refuses is a FileError, a malformed one a FormatError; all three
// are caught as memoryformer::Error and as std::exception.
#include "test_support.hpp"

#include <memoryformer/io/model_file.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <system_error>
#include <type_traits>

namespace {

mf::MemoryLayerOptions valid() {
  mf::MemoryLayerOptions o;
  o.in_dim = 16;
  o.out_dim = 8;
  o.tau = 4;
  return o;
}

TEST(Errors, InDimNotDivisibleByTau) {
  auto o = valid();
  o.in_dim = 18;
  test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"in_dim", "18", "multiple of tau = 4"});
}

TEST(Errors, TauOutOfRange) {
  for (int tau : {0, -3, 17, 40}) {
    auto o = valid();
    o.tau = tau;
    test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"tau", std::to_string(tau).c_str(), "1..16"});
  }
}

TEST(Errors, NonPositiveDimensions) {
  auto o = valid();
  o.in_dim = 0;
  test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"in_dim", "0", "positive"});
  o = valid();
  o.out_dim = -2;
  test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"out_dim", "-2", "positive"});
}

TEST(Errors, BadTemperature) {
  for (float t :
       {0.0f, -1.0f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    auto o = valid();
    o.temperature = t;
    test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"temperature", "finite value > 0"});
  }
  test::expect_error([] { mf::SignHash<double> h(8, 4, mf::Score::paper, -0.5); },
                     {"SignHash", "temperature", "-0.5"});
}

TEST(Errors, BadScoreAndInitStd) {
  auto o = valid();
  o.score = static_cast<mf::Score>(7);
  test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"score", "7", "Score::paper or Score::l1"});
  o = valid();
  o.init_std = -0.1f;
  test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"init_std", "-0.1"});
}

TEST(Errors, TablesTooLargeForMemory) {
  auto o = valid();
  o.in_dim = 1 << 20;
  o.tau = 16;
  o.out_dim = 1 << 20;
  test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"tables", "bytes", "lower tau"});
}

TEST(Errors, ForwardWithWrongInputColumns) {
  const mf::MemoryLayer<float> layer(valid());
  test::expect_error([&] { layer.forward(mf::RowMatrix<float>::Zero(3, 15)); }, {"x", "3 x 15", "3 x 16"});
}

TEST(Errors, BackwardWithMismatchedDy) {
  mf::MemoryLayer<float> layer(valid());
  const mf::RowMatrix<float> x = mf::RowMatrix<float>::Ones(3, 16);
  test::expect_error([&] { layer.backward(x, mf::RowMatrix<float>::Zero(3, 7)); }, {"dy", "3 x 7", "3 x 8"});
  test::expect_error([&] { layer.backward(x, mf::RowMatrix<float>::Zero(2, 8)); }, {"dy", "2 x 8", "3 x 8"});
  test::expect_error([&] { layer.hash().backward(x, mf::RowMatrix<float>::Zero(3, 5)); },
                     {"dscores", "3 x 5", "3 x 4"});
}

TEST(Errors, BucketsOutOfRangeOrMisshapen) {
  const mf::MemoryLayer<float> layer(valid());
  auto b = layer.hash()(mf::RowMatrix<float>::Ones(2, 16));
  b.codes(1, 3) = 16;
  test::expect_error([&] { layer.forward(b); }, {"buckets.codes", "16", "[0, 16)"});
  b.codes(1, 3) = -1;
  test::expect_error([&] { layer.forward(b); }, {"buckets.codes", "-1"});
  b = layer.hash()(mf::RowMatrix<float>::Ones(2, 16));
  b.scores.resize(2, 3);
  test::expect_error([&] { layer.forward(b); }, {"buckets.scores", "2 x 3", "2 x 4"});
}

TEST(Errors, GradientsBeforeBackward) {
  const mf::MemoryLayer<float> layer(valid());
  test::expect_error([&] { layer.table_grad(); }, {"table_grad", "backward()"});
  test::expect_error([&] { layer.bias_grad(); }, {"bias_grad", "backward()"});
}

TEST(Errors, BadThreadCountAndPathName) {
  test::expect_error([] { mf::set_num_threads(-1); }, {"threads", "-1"});
  test::expect_error([] { mf::parse_kernel_path("sse"); }, {"\"sse\"", "scalar, avx2, avx512"});
}

// ---- Kinds (errors.hpp)

namespace io = memoryformer::io;

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "mf_errors_" + name; }

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// A safetensors file: the 8-byte little-endian header length, the header, the data.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string bytes;
  for (int i = 0; i < 8; ++i) bytes += static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  return bytes + header + data;
}

// What `call` throws, caught as Kind; fails the test if it throws nothing or something else.
template <class Kind, class Call>
Kind thrown(Call call) {
  try {
    call();
  } catch (const Kind& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw another kind: " << e.what();
  }
  ADD_FAILURE() << "threw nothing";
  throw std::logic_error("no error to inspect");
}

// `call` throws something that both `catch (const mf::Error&)` and `catch (const std::exception&)`
// catch, with the same message, which has every part.
template <class Call>
void expect_caught_both_ways(Call call, std::initializer_list<std::string> parts) {
  std::string as_error, as_std;
  try {
    call();
  } catch (const mf::Error& e) {
    as_error = e.what();
  }
  try {
    call();
  } catch (const std::exception& e) {
    as_std = e.what();
  }
  EXPECT_FALSE(as_error.empty());
  EXPECT_EQ(as_error, as_std);
  for (const std::string& part : parts)
    EXPECT_NE(as_error.find(part), std::string::npos) << part << " not in: " << as_error;
}

TEST(Errors, EachKindIsAnErrorAndOneStandardException) {
  static_assert(std::is_abstract_v<mf::Error>);
  static_assert(std::is_base_of_v<mf::Error, mf::ArgumentError> &&
                std::is_base_of_v<std::invalid_argument, mf::ArgumentError>);
  static_assert(std::is_base_of_v<mf::Error, mf::FileError> &&
                std::is_base_of_v<std::system_error, mf::FileError>);
  static_assert(std::is_base_of_v<mf::Error, mf::FormatError> &&
                std::is_base_of_v<std::runtime_error, mf::FormatError>);
  // One std::exception base each: a second would make catch (const std::exception&) miss them.
  static_assert(!std::is_base_of_v<std::exception, mf::Error>);
  static_assert(!std::is_base_of_v<std::logic_error, mf::FormatError>);

  const mf::ArgumentError e("memoryformer: x");
  const std::invalid_argument& as_std = e;
  const mf::Error& as_error = e;
  EXPECT_STREQ(as_std.what(), "memoryformer: x");
  EXPECT_STREQ(as_error.what(), "memoryformer: x");
}

TEST(Errors, EveryKindIsCaughtAsErrorAndAsStdException) {
  const std::string missing = temp_path("missing.safetensors"),
                    truncated = temp_path("truncated.safetensors");
  std::filesystem::remove(missing);
  write_bytes(truncated, "abc");
  expect_caught_both_ways([] { mf::set_num_threads(-1); }, {"threads", "-1"});
  expect_caught_both_ways([&] { io::SafetensorsFile::open(missing); }, {missing});
  expect_caught_both_ways([&] { io::SafetensorsFile::open(truncated); }, {truncated, "header length"});
  expect_caught_both_ways([] { io::parse_json("{", "doc"); }, {"doc", "invalid JSON"});
  // And each as its standard kind, not another's.
  thrown<std::invalid_argument>([] { mf::set_num_threads(-1); });
  thrown<std::system_error>([&] { io::SafetensorsFile::open(missing); });
  thrown<std::runtime_error>([&] { io::SafetensorsFile::open(truncated); });
  EXPECT_EQ(dynamic_cast<const std::invalid_argument*>(&static_cast<const std::exception&>(
                thrown<mf::FormatError>([&] { io::SafetensorsFile::open(truncated); }))),
            nullptr);
}

TEST(Errors, MissingFileIsAFileErrorWithErrnoAndPath) {
  const std::string path = temp_path("no_such_file.safetensors");
  std::filesystem::remove(path);
  for (const auto& load : std::vector<std::function<void()>>{
           [&] { io::SafetensorsFile::open(path); },
           [&] { io::load_model<mf::MemoryFormerModel<float>>(path); },
       }) {
    const auto e = thrown<mf::FileError>(load);
    EXPECT_EQ(e.code().value(), ENOENT);
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
    EXPECT_EQ(e.path(), path);
    const std::string what = e.what();
    EXPECT_NE(what.find("'" + path + "'"), std::string::npos) << what;
    EXPECT_NE(what.find(std::strerror(ENOENT)), std::string::npos) << what;
  }
  const auto dir = thrown<mf::FileError>([] { io::SafetensorsFile::open(::testing::TempDir()); });
  EXPECT_EQ(dir.code().value(), EISDIR);
  EXPECT_EQ(dir.path(), ::testing::TempDir());
}

TEST(Errors, UnwritableOutputIsAFileError) {
  const std::string path = temp_path("no_such_dir") + "/out.safetensors";
  std::filesystem::remove_all(temp_path("no_such_dir"));
  const float x[2] = {1, 2};
  const auto e = thrown<mf::FileError>([&] { io::write_safetensors(path, {io::tensor("x", x, {2})}); });
  EXPECT_EQ(e.code().value(), ENOENT);
  EXPECT_EQ(e.path(), path);
  EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  // An empty path is the caller's mistake, not the file system's.
  thrown<mf::ArgumentError>([&] { io::write_safetensors("", {io::tensor("x", x, {2})}); });
}

// Each malformed file names the file, the tensor and the field, by accessor and in what().
TEST(Errors, MalformedFilesAreFormatErrorsNamingFileTensorAndField) {
  struct Case {
    const char* name;
    std::string bytes, tensor, field, detail;
  };
  const std::string entry = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::vector<Case> cases = {
      // The length field says 60 bytes of header, but the file ends after 20.
      {"truncated header", safetensors_bytes(std::string(60, ' '), "").substr(0, 20), "", "header length",
       "60"},
      {"offsets past the data", safetensors_bytes(entry, std::string(4, '\0')), "w", "data_offsets",
       "[0, 8]"},
      {"unknown dtype",
       safetensors_bytes(R"({"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
       "w", "dtype", "\"F33\""},
      {"shape not an array",
       safetensors_bytes(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", std::string(8, '\0')),
       "w", "shape", "a number"},
      {"header not JSON", safetensors_bytes("{\"w\":", ""), "", "header", "invalid JSON at byte 5"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = temp_path(std::string("malformed_") + c.name);
    write_bytes(path, c.bytes);
    const auto e = thrown<mf::FormatError>([&] { io::SafetensorsFile::open(path); });
    EXPECT_EQ(e.file(), path);
    EXPECT_EQ(e.tensor(), c.tensor);
    EXPECT_EQ(e.field(), c.field);
    const std::string what = e.what();
    for (const std::string& part : {"file '" + path + "'", c.field + ": ", c.detail})
      EXPECT_NE(what.find(part), std::string::npos) << part << " not in: " << what;
    if (!c.tensor.empty()) {
      EXPECT_NE(what.find("tensor '" + c.tensor + "'"), std::string::npos) << what;
    }
  }
}

TEST(Errors, MalformedModelFilesAreFormatErrors) {
  mf::ModelConfig config;
  config.vocab_size = 13;
  config.d_model = 16;
  config.n_heads = 2;
  config.n_layers = 1;
  config.tau = 4;
  const std::string path = temp_path("model.safetensors");
  mf::MemoryFormerModel<float> model(config);
  const auto save = [&](const std::string& config_json) {
    io::save_model(model, path);
    const auto file = io::SafetensorsFile::open(path);
    std::vector<io::TensorData> tensors;
    for (const auto& t : file.tensors()) tensors.push_back({t.name, t.dtype, t.shape, file.data(t.name)});
    auto metadata = file.metadata();
    metadata.erase("checksums");
    metadata["config"] = config_json;
    io::write_safetensors(path + ".edited", tensors, metadata);
  };
  const auto load = [&] { io::load_model<mf::MemoryFormerModel<float>>(path + ".edited"); };

  std::string json = io::config_to_json(config);
  save(json.replace(json.find("\"tau\": 4"), 8, "\"tau\": 2.5"));
  auto e = thrown<mf::FormatError>(load);
  EXPECT_EQ(e.file(), path + ".edited");
  EXPECT_EQ(e.tensor(), "");
  EXPECT_EQ(e.field(), "__metadata__.config.tau");
  EXPECT_NE(std::string(e.what()).find("2.5, expected an integer"), std::string::npos) << e.what();

  // A config that parses but that ModelConfig rejects is still the file's fault.
  json = io::config_to_json(config);
  save(json.replace(json.find("\"n_heads\": 2"), 12, "\"n_heads\": 3"));
  e = thrown<mf::FormatError>(load);
  EXPECT_EQ(e.field(), "__metadata__.config");
  EXPECT_NE(std::string(e.what()).find("n_heads = 3"), std::string::npos) << e.what();

  // A tensor of the wrong shape: the writer checks nothing about models, the loader does.
  io::save_model(model, path);
  std::vector<io::TensorData> tensors;
  const auto file = io::SafetensorsFile::open(path);
  for (const auto& t : file.tensors()) {
    tensors.push_back({t.name, t.dtype, t.shape, file.data(t.name)});
    if (t.name == "final_norm.weight") tensors.back().shape = {2, 8};
  }
  auto metadata = file.metadata();
  metadata.erase("checksums");
  io::write_safetensors(path + ".edited", tensors, metadata);
  e = thrown<mf::FormatError>(load);
  EXPECT_EQ(e.tensor(), "final_norm.weight");
  EXPECT_EQ(e.field(), "shape");
  EXPECT_NE(std::string(e.what()).find("[2, 8], expected [16]"), std::string::npos) << e.what();
}

TEST(Errors, ImpossibleRequestsOfAGoodFileAreArgumentErrors) {
  const std::string path = temp_path("good.safetensors");
  const float x[2] = {1, 2};
  io::write_safetensors(path, {io::tensor("x", x, {2})});
  const auto file = io::SafetensorsFile::open(path);
  const auto e = thrown<mf::ArgumentError>([&] { file.view<double>("x"); });
  EXPECT_NE(std::string(e.what()).find("tensor 'x'"), std::string::npos) << e.what();
  thrown<mf::ArgumentError>([] { io::SafetensorsFile::from_memory(nullptr, 16, "null"); });
  thrown<mf::ArgumentError>([&] {
    io::write_safetensors(path, {io::tensor("a", x, {1}), io::tensor("a", x, {2})});
  });
  thrown<mf::ArgumentError>([] { io::parse_dtype("F33"); });
}

}  // namespace
