// The JSON reader, the 16-bit float conversions and safetensors reading/writing. Files the tests
// build byte by byte (header JSON as literal text) check the reader independently of the writer.
#include "test_support.hpp"

#include <memoryformer/io/json.hpp>
#include <memoryformer/io/safetensors.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace io = memoryformer::io;

namespace {

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "mf_safetensors_" + name; }

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string le64(std::uint64_t n) {
  std::string s;
  for (int i = 0; i < 8; ++i) s += static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// A safetensors file from literal header text and raw data bytes.
std::string file_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::uint64_t xxh3_of(const std::string& bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

}  // namespace

// ---------------------------------------------------------------- JSON

TEST(Json, ParsesAllValueKinds) {
  const auto v = io::parse_json(
      " {\"n\": null, \"t\": true, \"f\": false, \"i\": -12, \"d\": 2.5e-3, \"z\": 0, \"s\": "
      "\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\","
      " \"u\": \"\\u00e9\\u20AC\\ud83d\\ude00\", \"a\": [1, [], {}], \"o\": {\"k\": \"v\"}} \n",
      "test");
  ASSERT_TRUE(v.is_object());
  EXPECT_TRUE(v.at("n").is_null());
  EXPECT_TRUE(v.at("t").as_bool());
  EXPECT_FALSE(v.at("f").as_bool());
  EXPECT_EQ(v.at("i").as_int64(), -12);
  EXPECT_TRUE(v.at("i").is_integer());
  EXPECT_DOUBLE_EQ(v.at("d").as_number(), 2.5e-3);
  EXPECT_FALSE(v.at("d").is_integer());
  EXPECT_EQ(v.at("z").as_uint64(), 0u);
  EXPECT_EQ(v.at("s").as_string(), "a\"\\/\b\f\n\r\t");
  EXPECT_EQ(v.at("u").as_string(), "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
  EXPECT_EQ(v.at("a").as_array().size(), 3u);
  EXPECT_EQ(v.at("o").at("k").as_string(), "v");
  EXPECT_EQ(v.object_keys().front(), "n");  // document order
  EXPECT_EQ(v.find("missing"), nullptr);
  EXPECT_EQ(io::parse_json("18446744073709551615", "t").as_uint64(), 18446744073709551615u);
  EXPECT_EQ(io::parse_json("\"\\u0000\"", "t").as_string(), std::string(1, '\0'));
}

TEST(Json, AccessorsNameTypeAndPath) {
  const auto v = io::parse_json("{\"a\": [1, \"x\"], \"b.c\": {\"d\": 1.5}}", "doc");
  test::expect_error([&] { v.at("a").as_array()[1].as_number(); },
                     {"memoryformer: file 'doc'", "$.a[1]: a string", "expected a number"});
  test::expect_error([&] { v.at("b.c").at("d").as_int64(); }, {"$[\"b.c\"].d: 1.5", "expected an integer"});
  test::expect_error([&] { v.at("a").as_string(); }, {"$.a: an array", "expected a string"});
  test::expect_error([&] { v.at("zz"); }, {"$: no key \"zz\""});
  test::expect_error([&] { io::parse_json("-1", "t").as_uint64(); },
                     {"$: -1", "expected an integer in [0, 2^64)"});
  test::expect_error([&] { io::parse_json("9223372036854775808", "t").as_int64(); },
                     {"expected an integer in [-2^63"});
}

TEST(Json, RejectsMalformedText) {
  struct Case {
    std::string text;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"", "at byte 0: expected a value, found end of input"},
      {"{} x", "at byte 3: unexpected character 'x' after the JSON value"},
      {"{\"a\":1,\"a\":2}", "at byte 7: duplicate key \"a\""},
      {"01", "leading zeros"},
      {"-", "expected a digit"},
      {"1.", "expected a digit after '.'"},
      {"1e", "expected a digit in the exponent"},
      {".5", "expected a value, found character '.'"},
      {"1e999", "out of the range of a double"},
      {"[1,]", "expected a value, found character ']'"},
      {"{\"a\":1,}", "expected a string key"},
      {"{\"a\" 1}", "expected ':' after an object key"},
      {"[1 2]", "expected ',' or ']'"},
      {"{\"a\":1 \"b\"}", "expected ',' or '}'"},
      {"\"abc", "at byte 0: unterminated string"},
      {"\"a\tb\"", "control character byte 0x09"},
      {"\"\\x\"", "invalid escape sequence \\character 'x'"},
      {"\"\\u12G4\"", "expected 4 hex digits"},
      {"\"\\udc00\"", "unpaired low surrogate"},
      {"\"\\ud800x\"", "high surrogate not followed by a \\u low surrogate"},
      {"\"\\ud800\\u0041\"", "high surrogate not followed by a low surrogate"},
      {"\"\xC3\"", "invalid UTF-8"},
      {"\"\xC0\xAF\"", "invalid UTF-8"},          // overlong '/'
      {"\"\xED\xA0\x80\"", "invalid UTF-8"},      // encoded surrogate
      {"\"\xF4\x90\x80\x80\"", "invalid UTF-8"},  // above U+10FFFF
      {"tru", "expected a value"},
      {"nul", "expected a value"},
      {"\xEF\xBB\xBF{}", "expected a value, found byte 0xef"},  // no byte order mark
      {"{}\x01", "unexpected byte 0x01"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    test::expect_error([&] { io::parse_json(c.text, "case"); },
                       {"memoryformer: file 'case': invalid JSON", c.message});
  }
}

TEST(Json, NestingIsLimitedTo64Levels) {
  EXPECT_NO_THROW(io::parse_json(std::string(64, '[') + std::string(64, ']'), "t"));
  test::expect_error([] { io::parse_json(std::string(65, '[') + std::string(65, ']'), "t"); },
                     {"at byte 64", "nested deeper than 64 levels"});
  test::expect_error([] { io::parse_json(std::string(100000, '['), "t"); }, {"nested deeper than 64"});
}

TEST(Json, QuoteRoundTrips) {
  const std::string s = std::string("a\"b\\c\n\t\x01\x1f/\x7f \xC3\xA9") + '\0' + "z";
  EXPECT_EQ(io::json_quote("a\"\n\x01"), "\"a\\\"\\n\\u0001\"");
  EXPECT_EQ(io::parse_json(io::json_quote(s), "t").as_string(), s);
  EXPECT_TRUE(io::is_valid_utf8("\xF0\x9F\x98\x80 ok"));
  EXPECT_FALSE(io::is_valid_utf8("\xF0\x9F\x98"));
}

// ---------------------------------------------------------------- 16-bit floats

TEST(HalfFloat, KnownBitPatterns) {
  EXPECT_EQ(io::float_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(io::float_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(io::float_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(io::float_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(io::float_to_f16(std::ldexp(1.0f, -14)), 0x0400);
  EXPECT_EQ(io::float_to_f16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(io::float_to_f16(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(io::float_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(io::f16_to_float(0x3C00), 1.0f);
  EXPECT_EQ(io::f16_to_float(0xC000), -2.0f);
  EXPECT_EQ(io::f16_to_float(0x7BFF), 65504.0f);
  EXPECT_EQ(io::f16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(io::f16_to_float(0x83FF), -std::ldexp(1023.0f, -24));
  EXPECT_EQ(io::f16_to_float(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(io::f16_to_float(0x7E00)));
  EXPECT_TRUE(std::signbit(io::f16_to_float(0x8000)));
  const std::uint16_t nan = io::float_to_f16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE((nan & 0x7C00) == 0x7C00 && (nan & 0x03FF) != 0);
  // Rounding: ties to even, overflow to inf, underflow to zero.
  EXPECT_EQ(io::float_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(io::float_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(io::float_to_f16(65519.0f), 0x7BFF);
  EXPECT_EQ(io::float_to_f16(65520.0f), 0x7C00);
  EXPECT_EQ(io::float_to_f16(1e10f), 0x7C00);
  EXPECT_EQ(io::float_to_f16(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(io::float_to_f16(std::ldexp(3.0f, -26)), 0x0001);
  EXPECT_EQ(io::float_to_f16(std::ldexp(3.0f, -25)), 0x0002);
  EXPECT_EQ(io::float_to_f16(std::ldexp(1023.5f, -24)),
            0x0400);  // subnormal rounds up to the smallest normal
  EXPECT_EQ(io::float_to_f16(-1e-30f), 0x8000);
  EXPECT_EQ(io::float_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(HalfFloat, EveryHalfRoundTrips) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const float f = io::f16_to_float(bits);
    ASSERT_EQ(io::float_to_f16(f), bits) << std::hex << h;
    const bool nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0;
    ASSERT_EQ(std::isnan(f), nan) << std::hex << h;
  }
}

// Independent of the bit tricks: the chosen half is at least as close as both neighbours.
TEST(HalfFloat, RoundsToNearest) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> exponent(-26.0f, 16.0f);
  for (int i = 0; i < 200000; ++i) {
    const float x = std::exp2(exponent(gen)) * (i % 2 ? -1.0f : 1.0f);
    const std::uint16_t h = io::float_to_f16(x);
    if ((h & 0x7FFF) == 0x7C00) {
      ASSERT_GE(std::abs(x), 65520.0f) << x;
      continue;
    }
    const double err = std::abs(static_cast<double>(io::f16_to_float(h)) - x);
    for (const int step : {-1, 1}) {
      const auto neighbour = static_cast<std::uint16_t>((h & 0x7FFF) + step);
      if (neighbour > 0x7BFF) continue;
      const double other = std::abs(std::abs(static_cast<double>(io::f16_to_float(neighbour))) - std::abs(x));
      ASSERT_LE(err, other) << x;
    }
  }
}

TEST(BFloat16, KnownBitPatternsAndRoundTrip) {
  EXPECT_EQ(io::float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(io::float_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(io::bf16_to_float(0x3F80), 1.0f);
  EXPECT_EQ(io::bf16_to_float(0xC000), -2.0f);
  EXPECT_EQ(io::bf16_to_float(0x0001), std::ldexp(1.0f, -133));  // smallest subnormal
  EXPECT_EQ(io::bf16_to_float(0x7F80), std::numeric_limits<float>::infinity());
  EXPECT_EQ(io::float_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(io::float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);  // tie to even
  EXPECT_EQ(io::float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  EXPECT_EQ(io::float_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3F81);
  EXPECT_EQ(io::float_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // rounds up to inf
  // A NaN whose payload is only in the low 16 bits must not truncate to inf.
  float low_nan;
  const std::uint32_t low_nan_bits = 0x7F800001u;
  std::memcpy(&low_nan, &low_nan_bits, 4);
  EXPECT_TRUE(std::isnan(io::bf16_to_float(io::float_to_bf16(low_nan))));
  EXPECT_TRUE(std::isnan(io::bf16_to_float(io::float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  for (std::uint32_t h = 0; h < 65536; ++h)
    ASSERT_EQ(io::float_to_bf16(io::bf16_to_float(static_cast<std::uint16_t>(h))), h) << std::hex << h;
}

// ---------------------------------------------------------------- reading and writing

TEST(Safetensors, RoundTripsDtypesShapesAndMetadata) {
  const std::string path = temp_path("round_trip.safetensors");
  const mf::RowMatrix<double> w = test::random_matrix<double>(3, 4, 1);
  const mf::RowMatrix<float> v = test::random_matrix<float>(1, 5, 2);
  const std::vector<std::int32_t> codes = {1, -2, 3, -4, 5, -6, 7, -8};
  const std::int64_t scalar = -(std::int64_t{1} << 40);
  const std::vector<std::uint8_t> bytes = {0, 127, 255};
  const std::vector<std::int8_t> small = {-128, 0, 127};
  const std::vector<std::int16_t> shorts = {-32768, 1, 32767, 4};
  const bool flags[] = {true, false, true};
  const std::vector<std::uint16_t> halves = {0x3C00, 0xC000, 0x0001, 0x7BFF};
  const std::vector<std::uint16_t> bhalves = {0x3F80, 0xC000};
  const std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                       {"note", "quote \" backslash \\ newline \n é"}};
  io::write_safetensors(
      path,
      {io::tensor("w", w), io::tensor("v", v.data(), {5}), io::tensor("codes", codes.data(), {2, 2, 2}),
       io::tensor("scalar", &scalar, {}), io::tensor("bytes", bytes.data(), {3}),
       io::tensor("small", small.data(), {3, 1}), io::tensor("shorts", shorts.data(), {2, 2}),
       io::tensor("flags", flags, {3}), io::tensor<float>("empty", nullptr, {0, 4}),
       io::TensorData{"half", io::DType::F16, {2, 2}, halves.data()},
       io::TensorData{"bhalf", io::DType::BF16, {2}, bhalves.data()}},
      metadata);
  auto file = io::SafetensorsFile::open(path);
  EXPECT_TRUE(file.has_checksums());
  EXPECT_EQ(file.metadata().size(), 3u);
  EXPECT_EQ(file.metadata().at("note"), metadata.at("note"));
  EXPECT_EQ(file.metadata().at("format"), "pt");
  ASSERT_EQ(file.tensors().size(), 11u);
  EXPECT_EQ(file.tensors().front().name, "bhalf");  // sorted by name
  EXPECT_EQ(file.tensors().back().name, "w");
  EXPECT_EQ(file.info("w").begin, 0u);  // written in the given order
  EXPECT_EQ(file.info("w").dtype, io::DType::F64);
  EXPECT_EQ(file.info("codes").shape, (std::vector<std::int64_t>{2, 2, 2}));
  EXPECT_EQ(file.info("codes").numel(), 8);
  EXPECT_EQ(file.info("scalar").numel(), 1);
  EXPECT_EQ(file.info("empty").numel(), 0);
  EXPECT_TRUE(file.contains("v"));
  EXPECT_FALSE(file.contains("V"));

  EXPECT_EQ(file.matrix<double>("w"), w);
  EXPECT_EQ(file.view<double>("w"), w);
  EXPECT_EQ(file.matrix<float>("v"), v);
  EXPECT_EQ(file.matrix<float>("v").rows(), 1);
  const auto c = file.matrix<double>("codes");
  ASSERT_EQ(c.rows(), 2);
  ASSERT_EQ(c.cols(), 4);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(c.data()[i], codes[static_cast<std::size_t>(i)]);
  EXPECT_EQ(file.view<std::int32_t>("codes")(1, 3), -8);
  const auto s = file.matrix<double>("scalar");
  ASSERT_EQ(s.rows(), 1);
  ASSERT_EQ(s.cols(), 1);
  EXPECT_EQ(s(0, 0), static_cast<double>(scalar));
  EXPECT_EQ(file.matrix<float>("bytes"), (mf::RowMatrix<float>(1, 3) << 0, 127, 255).finished());
  EXPECT_EQ(file.matrix<float>("small"), (mf::RowMatrix<float>(3, 1) << -128, 0, 127).finished());
  EXPECT_EQ(file.matrix<double>("shorts"), (mf::RowMatrix<double>(2, 2) << -32768, 1, 32767, 4).finished());
  EXPECT_EQ(file.matrix<float>("flags"), (mf::RowMatrix<float>(1, 3) << 1, 0, 1).finished());
  const auto empty = file.matrix<float>("empty");
  EXPECT_EQ(empty.rows(), 0);
  EXPECT_EQ(empty.cols(), 4);
  EXPECT_EQ(file.view<float>("empty").size(), 0);
  EXPECT_EQ(file.matrix<float>("half"),
            (mf::RowMatrix<float>(2, 2) << 1, -2, std::ldexp(1.0f, -24), 65504).finished());
  EXPECT_EQ(file.matrix<double>("bhalf"), (mf::RowMatrix<double>(1, 2) << 1, -2).finished());
  EXPECT_EQ(std::memcmp(file.data("codes"), codes.data(), codes.size() * 4), 0);

  // The data section starts at a multiple of 8 and tensors follow each other without gaps.
  const std::string raw = read_bytes(path);
  std::uint64_t header = 0;
  std::memcpy(&header, raw.data(), 8);
  EXPECT_EQ(header % 8, 0u);
  EXPECT_EQ(raw.size(), 8 + header + file.data_size());
  EXPECT_EQ(file.data("w"), reinterpret_cast<const std::uint8_t*>(file.view<double>("w").data()));

  // Moving keeps the mapping alive; the moved-from object is empty.
  io::SafetensorsFile moved = std::move(file);
  EXPECT_EQ(moved.matrix<double>("w"), w);
  EXPECT_TRUE(file.tensors().empty());  // NOLINT(bugprone-use-after-move)
  io::SafetensorsFile other = io::SafetensorsFile::open(path);
  other = std::move(moved);
  EXPECT_EQ(other.matrix<float>("v"), v);
}

TEST(Safetensors, EmptyFilesLoad) {
  const std::string path = temp_path("empty.safetensors");
  io::write_safetensors(path, {}, {}, false);
  // The header is padded so that the data section starts 64 bytes into the file.
  EXPECT_EQ(read_bytes(path), le64(56) + "{}" + std::string(54, ' '));
  auto file = io::SafetensorsFile::open(path);
  EXPECT_TRUE(file.tensors().empty());
  EXPECT_TRUE(file.metadata().empty());
  EXPECT_FALSE(file.has_checksums());
  EXPECT_EQ(file.data_size(), 0u);

  io::write_safetensors(path, {io::tensor<std::int64_t>("none", nullptr, {3, 0})});
  file = io::SafetensorsFile::open(path);
  EXPECT_TRUE(file.has_checksums());
  EXPECT_EQ(file.data_size(), 0u);
  EXPECT_EQ(file.matrix<double>("none").rows(), 3);
  EXPECT_EQ(file.matrix<double>("none").cols(), 0);
}

TEST(Safetensors, ReadsAFileBuiltByHand) {
  // Tensor "a" (I16 [1, 3]) at [0, 6), two bytes of gap, then "b" (F32 [2]) at [8, 16), then
  // "été😀" (F64 []) at [16, 24); keys out of order, escapes in a name, header padded with spaces.
  const std::string header =
      "{\"__metadata__\":{\"format\":\"pt\",\"k\\u00e9y\":\"\\n\"},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
      "\"a\":{\"shape\":[1,3],\"dtype\":\"I16\",\"data_offsets\":[0,6]},"
      "\"\\u00e9t\\u00E9\\ud83d\\ude00\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[16,24]}}   ";
  const std::string data = std::string("\x01\x00\xFE\xFF\x2C\x01", 6) + std::string(2, '\0') +
                           std::string("\x00\x00\x80\x3F\x00\x00\x00\xBF", 8) +
                           std::string("\x00\x00\x00\x00\x00\x00\x08\xC0", 8);  // -3.0
  const std::string path = temp_path("by_hand.safetensors");
  write_bytes(path, file_bytes(header, data));
  const auto file = io::SafetensorsFile::open(path);
  EXPECT_FALSE(file.has_checksums());
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.metadata().at("k\xC3\xA9y"), "\n");
  ASSERT_EQ(file.tensors().size(), 3u);
  EXPECT_EQ(file.matrix<double>("a"), (mf::RowMatrix<double>(1, 3) << 1, -2, 300).finished());
  EXPECT_EQ(file.matrix<float>("b"), (mf::RowMatrix<float>(1, 2) << 1.0f, -0.5f).finished());
  EXPECT_EQ(file.matrix<double>("\xC3\xA9t\xC3\xA9\xF0\x9F\x98\x80")(0, 0), -3.0);
  EXPECT_EQ(file.info("b").begin, 8u);
  EXPECT_EQ(file.info("b").end, 16u);
  EXPECT_EQ(file.data("b")[3], 0x3F);
  EXPECT_EQ(file.data_size(), 24u);
}

TEST(Safetensors, ViewNeedsMatchingDtypeAndAlignment) {
  const std::string header =
      "{\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
      "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]}}";
  std::string padded = header + std::string((8 - header.size() % 8) % 8, ' ');
  const std::string path = temp_path("unaligned.safetensors");
  write_bytes(path, file_bytes(padded, std::string("\x07\x00\x00\x80\x3F\x00\x00\x00\x40", 9)));
  const auto file = io::SafetensorsFile::open(path);
  EXPECT_EQ(file.matrix<float>("f"),
            (mf::RowMatrix<float>(1, 2) << 1.0f, 2.0f).finished());  // unaligned copy is fine
  test::expect_error([&] { file.view<float>("f"); },
                     {"tensor 'f'", "not aligned to 4 bytes", "use matrix()"});
  test::expect_error([&] { file.view<double>("f"); },
                     {"tensor 'f'", "stored as F32", "view of F64", "use matrix()"});
  EXPECT_EQ(file.view<std::uint8_t>("u")(0, 0), 7);
}

TEST(Safetensors, ChecksumsAreVerified) {
  const std::string path = temp_path("checksums.safetensors");
  const mf::RowMatrix<float> a = test::random_matrix<float>(4, 4, 3), b = test::random_matrix<float>(2, 3, 4);
  io::write_safetensors(path, {io::tensor("a", a), io::tensor("b", b)});
  {
    const auto file = io::SafetensorsFile::open(path);
    EXPECT_TRUE(file.has_checksums());
    const auto sums = io::parse_json(file.metadata().at("checksums"), "t");
    EXPECT_EQ(sums.object_keys().size(), 2u);
    const std::string a_bytes(reinterpret_cast<const char*>(a.data()), 64);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(xxh3_of(a_bytes)));
    EXPECT_EQ(sums.at("a").as_string(), hex);
  }
  std::string raw = read_bytes(path);
  std::uint64_t header = 0;
  std::memcpy(&header, raw.data(), 8);
  raw[8 + header + 64 + 5] ^= 0x01;  // one bit of "b", which follows the 64 bytes of "a"
  write_bytes(path, raw);
  test::expect_error(
      [&] { io::SafetensorsFile::open(path); },
      {("file '" + path + "'").c_str(), "tensor 'b'", "checksum: mismatch", "header says", "data hashes to"});
  {
    // Checksums::report opens the file anyway and names every mismatch.
    const auto file = io::SafetensorsFile::open(path, io::Checksums::report);
    EXPECT_EQ(file.checksum_count(), 2u);
    const auto bad = file.checksum_mismatches();
    ASSERT_EQ(bad.size(), 1u);
    EXPECT_EQ(bad[0].tensor, "b");
    EXPECT_EQ(bad[0].stored, io::parse_json(file.metadata().at("checksums"), "t").at("b").as_string());
    EXPECT_NE(bad[0].actual, bad[0].stored);
  }

  // Without checksums, the same corruption goes unnoticed.
  io::write_safetensors(path, {io::tensor("a", a), io::tensor("b", b)}, {{"x", "y"}}, false);
  raw = read_bytes(path);
  std::memcpy(&header, raw.data(), 8);
  raw[8 + header + 64 + 5] ^= 0x01;
  write_bytes(path, raw);
  const auto file = io::SafetensorsFile::open(path);
  EXPECT_FALSE(file.has_checksums());
  EXPECT_EQ(file.checksum_count(), 0u);
  EXPECT_TRUE(file.checksum_mismatches().empty());
  EXPECT_EQ(file.metadata().size(), 1u);
  EXPECT_NE(file.matrix<float>("b"), b);
}

TEST(Safetensors, MalformedChecksumsAreRejected) {
  const std::string path = temp_path("bad_checksums.safetensors");
  const float x[2] = {1, 2};
  const auto write = [&](const std::string& sums) {
    io::write_safetensors(path, {io::tensor("x", x, {2})}, {{"checksums", sums}}, false);
  };
  write("{\"y\":\"0123456789abcdef\"}");
  test::expect_error([&] { io::SafetensorsFile::open(path); },
                     {"tensor 'y': checksum: listed in __metadata__.checksums, but no such tensor"});
  write("{\"x\":\"0123456789ABCDEF\"}");
  test::expect_error([&] { io::SafetensorsFile::open(path); },
                     {"tensor 'x'", "is not 16 lowercase hex digits"});
  write("{\"x\":\"0123\"}");
  test::expect_error([&] { io::SafetensorsFile::open(path); },
                     {"tensor 'x'", "\"0123\" is not 16 lowercase hex"});
  write("{\"x\":5}");
  test::expect_error([&] { io::SafetensorsFile::open(path); }, {"tensor 'x'", "checksum: a number"});
  write("[]");
  test::expect_error([&] { io::SafetensorsFile::open(path); },
                     {"__metadata__.checksums: an array, expected an object"});
  write("{");
  test::expect_error([&] { io::SafetensorsFile::open(path); }, {"checksums: invalid JSON at byte 1"});
  write("{\"x\":\"0000000000000000\"}");
  test::expect_error([&] { io::SafetensorsFile::open(path); },
                     {"tensor 'x': checksum: mismatch", "header says 0000000000000000"});
}

TEST(Safetensors, RejectsHostileFiles) {
  const auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape,
                        const std::string& offsets) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
           ",\"data_offsets\":" + offsets + "}";
  };
  const std::string four(4, '\0'), eight(8, '\0');
  struct Case {
    const char* name;
    std::string bytes;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"empty", "", "file of 0 bytes is shorter than the 8-byte header length"},
      {"too short", "abc", "file of 3 bytes is shorter than the 8-byte header length"},
      {"header length too big", le64(1000) + "{}",
       "header length: 1000 exceeds the 2 bytes after the 8-byte length"},
      {"header length huge", le64(~std::uint64_t{0}) + "{}", "header length: 18446744073709551615 exceeds"},
      {"empty header", file_bytes("", ""),
       "header: invalid JSON at byte 0: expected a value, found end of input"},
      {"bad json", file_bytes("{\"a\":}", ""), "header: invalid JSON at byte 5"},
      {"trailing garbage", file_bytes("{}  x", ""),
       "invalid JSON at byte 4: unexpected character 'x' after the JSON value"},
      {"nul padding", file_bytes(std::string("{}\0\0", 4), ""), "unexpected byte 0x00 after the JSON value"},
      {"duplicate keys",
       file_bytes("{" + entry("a", "F32", "[1]", "[0,4]") + "," + entry("a", "F32", "[1]", "[0,4]") + "}",
                  four),
       "duplicate key \"a\""},
      {"not an object", file_bytes("[]", ""), "header: an array, expected a JSON object"},
      {"entry not an object", file_bytes("{\"a\":[]}", ""),
       "tensor 'a': entry is an array, expected an object"},
      {"unknown dtype", file_bytes("{" + entry("a", "F8", "[1]", "[0,1]") + "}", "x"),
       "tensor 'a': dtype: unknown \"F8\""},
      {"dtype not a string", file_bytes("{\"a\":{\"dtype\":4,\"shape\":[],\"data_offsets\":[0,4]}}", four),
       "tensor 'a': dtype: a number, expected a string"},
      {"missing shape", file_bytes("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", four),
       "tensor 'a': shape: missing"},
      {"extra key",
       file_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":1}}", four),
       "tensor 'a': x: unexpected key"},
      {"negative dim", file_bytes("{" + entry("a", "F32", "[-1]", "[0,4]") + "}", four),
       "tensor 'a': shape[0]: -1 is negative"},
      {"fractional dim", file_bytes("{" + entry("a", "F32", "[1.0]", "[0,4]") + "}", four),
       "tensor 'a': shape[0]: the non-integer 1.0, expected a non-negative integer"},
      {"string dim", file_bytes("{" + entry("a", "F32", "[\"1\"]", "[0,4]") + "}", four),
       "shape[0]: a string"},
      {"dim beyond 64 bits",
       file_bytes("{" + entry("a", "U8", "[18446744073709551616]", "[0,4]") + "}", four),
       "shape[0]: 18446744073709551616 does not fit in 64 bits"},
      {"dim beyond 63 bits", file_bytes("{" + entry("a", "U8", "[9223372036854775808]", "[0,4]") + "}", four),
       "shape[0]: 9223372036854775808 does not fit in 63 bits"},
      {"shape/bytes mismatch", file_bytes("{" + entry("a", "F32", "[2]", "[0,4]") + "}", four),
       "tensor 'a': data_offsets: [0, 4] span 4 bytes, but shape [2] of F32 needs 8"},
      {"offsets out of range",
       file_bytes("{" + entry("embed.weight", "F32", "[25]", "[0,100]") + "}", std::string(96, '\0')),
       "tensor 'embed.weight': data_offsets: [0, 100] exceed the data section of 96 bytes"},
      {"offsets reversed", file_bytes("{" + entry("a", "F32", "[1]", "[4,0]") + "}", four),
       "data_offsets: [4, 0] end before they begin"},
      {"offsets count", file_bytes("{" + entry("a", "F32", "[1]", "[0,4,8]") + "}", eight),
       "data_offsets: 3 entries, expected 2"},
      {"negative offset", file_bytes("{" + entry("a", "F32", "[1]", "[-4,0]") + "}", four),
       "data_offsets[0]: -4 is negative"},
      {"overlapping tensors",
       file_bytes("{" + entry("a", "F32", "[2]", "[0,8]") + "," + entry("b", "F32", "[1]", "[4,8]") + "}",
                  eight),
       "tensor 'b': data_offsets: [4, 8] overlap those of tensor 'a' [0, 8]"},
      {"contained tensor",
       file_bytes("{" + entry("a", "U8", "[8]", "[0,8]") + "," + entry("b", "U8", "[1]", "[6,7]") + "," +
                      entry("c", "U8", "[1]", "[2,3]") + "}",
                  eight),
       "overlap those of tensor 'a'"},
      {"non-string metadata", file_bytes("{\"__metadata__\":{\"n\":1}}", ""),
       "__metadata__.n: a number, expected a string"},
      {"metadata not an object", file_bytes("{\"__metadata__\":\"x\"}", ""),
       "__metadata__: a string, expected an object"},
      {"huge dims overflow",
       file_bytes("{" + entry("a", "F32", "[4294967296,4294967296]", "[0,4]") + "}", four),
       "tensor 'a': shape: [4294967296, 4294967296] of F32 overflows 64 bits"},
      {"dims overflow in bytes only",
       file_bytes("{" + entry("a", "F64", "[4611686018427387904]", "[0,8]") + "}", eight),
       "overflows 64 bits"},
      {"empty with overflowing dims",  // numel() and matrix() used to overflow int64 (UB)
       file_bytes("{" + entry("z", "F32", "[0,4611686018427387904,4]", "[0,0]") + "}", ""),
       "tensor 'z': shape: [0, 4611686018427387904, 4] is empty, but the product of its non-zero dims "
       "overflows 63 bits"},
      {"deep nesting",
       file_bytes("{\"__metadata__\":" + std::string(70, '[') + std::string(70, ']') + "}", ""),
       "nested deeper than 64 levels"},
      {"control character", file_bytes("{\"a\nb\":1}", ""), "control character byte 0x0a"},
  };
  int index = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = temp_path("hostile_" + std::to_string(index++));
    write_bytes(path, c.bytes);
    test::expect_error([&] { io::SafetensorsFile::open(path); },
                       {"memoryformer: file '", path.c_str(), c.message.c_str()});
    EXPECT_THROW(io::SafetensorsFile::open(path), mf::FormatError);
  }
  test::expect_error([] { io::SafetensorsFile::open(temp_path("does_not_exist")); },
                     {"cannot open", "No such file"});
  test::expect_error([] { io::SafetensorsFile::open(::testing::TempDir()); }, {"not a regular file"});
  EXPECT_THROW(io::SafetensorsFile::open(temp_path("does_not_exist")), mf::FileError);
  EXPECT_THROW(io::SafetensorsFile::open(::testing::TempDir()), mf::FileError);
}

// Zero dims make a tensor empty however large the others are, and empty tensors overlap nothing.
TEST(Safetensors, EmptyTensorsWithHugeDimsAreFine) {
  const std::string header =
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[0,9223372036854775807],\"data_offsets\":[4,4]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  const std::string path = temp_path("empty_huge.safetensors");
  write_bytes(path, file_bytes(header, std::string("\x00\x00\x80\x3F", 4)));
  const auto file = io::SafetensorsFile::open(path);
  EXPECT_EQ(file.info("a").numel(), 0);
  EXPECT_EQ(file.matrix<float>("b")(0, 0), 1.0f);
}

TEST(Safetensors, HeaderLengthIsCapped) {
  // A sparse file larger than the limit, so the length field fits in the file but not the cap.
  const std::string path = temp_path("huge_header.safetensors");
  const std::uint64_t length = io::SafetensorsFile::max_header_bytes + 1;
  write_bytes(path, le64(length));
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(8 + length)), 0);
  test::expect_error([&] { io::SafetensorsFile::open(path); },
                     {"header length: 100000001 exceeds the limit of 100000000 bytes"});
  std::remove(path.c_str());
}

// from_memory runs the same checks as open() on bytes in place, and names them as asked.
TEST(Safetensors, ReadsFromMemory) {
  const std::string path = temp_path("memory.safetensors");
  const mf::RowMatrix<float> w = test::random_matrix<float>(2, 3, 5);
  io::write_safetensors(path, {io::tensor("w", w)}, {{"k", "v"}});
  const std::string bytes = read_bytes(path);
  const auto file = io::SafetensorsFile::from_memory(bytes.data(), bytes.size(), "weights in memory");
  EXPECT_EQ(file.path(), "weights in memory");
  EXPECT_TRUE(file.has_checksums());
  EXPECT_EQ(file.metadata().at("k"), "v");
  EXPECT_EQ(file.matrix<float>("w"), w);
  EXPECT_EQ(file.data("w"), reinterpret_cast<const std::uint8_t*>(bytes.data()) + (bytes.size() - 24));

  std::string corrupt = bytes;
  corrupt.back() ^= 0x01;
  test::expect_error([&] { io::SafetensorsFile::from_memory(corrupt.data(), corrupt.size(), "buf"); },
                     {"file 'buf'", "tensor 'w': checksum: mismatch"});
  test::expect_error([&] { io::SafetensorsFile::from_memory(bytes.data(), 7); },
                     {"file '<memory>'", "file of 7 bytes is shorter than the 8-byte header length"});
  test::expect_error([] { io::SafetensorsFile::from_memory(nullptr, 16, "null"); },
                     {"bytes = nullptr", "16 bytes of 'null'"});
}

TEST(Safetensors, MissingTensorIsNamed) {
  const std::string path = temp_path("missing.safetensors");
  const float x[1] = {1};
  io::write_safetensors(path, {io::tensor("x", x, {1}), io::tensor("y", x, {1})});
  const auto file = io::SafetensorsFile::open(path);
  test::expect_error([&] { file.info("nope"); }, {("file '" + path + "'").c_str(),
                                                  "tensor 'nope': not in the file", "2 tensors: 'x', 'y'"});
  test::expect_error([&] { file.matrix<float>("nope"); }, {"tensor 'nope': not in the file"});
  test::expect_error([&] { file.data("nope"); }, {"tensor 'nope': not in the file"});
  test::expect_error([&] { file.view<float>("nope"); }, {"tensor 'nope': not in the file"});
}

TEST(Safetensors, WriterRejectsBadArguments) {
  const std::string path = temp_path("writer_errors.safetensors");
  const float x[2] = {1, 2};
  test::expect_error(
      [&] {
        io::write_safetensors(path, {io::tensor("a", x, {1}), io::tensor("a", x, {2})});
      },
      {"write_safetensors", "tensors[1].name = \"a\"", "a name not used by an earlier tensor"});
  test::expect_error([&] { io::write_safetensors(path, {io::tensor("", x, {1})}); },
                     {"tensors[0].name", "non-empty"});
  test::expect_error([&] { io::write_safetensors(path, {io::tensor("__metadata__", x, {1})}); },
                     {"reserved __metadata__"});
  test::expect_error([&] { io::write_safetensors(path, {io::tensor("\xFF", x, {1})}); }, {"valid UTF-8"});
  test::expect_error([&] { io::write_safetensors(path, {io::tensor("a", x, {-1})}); },
                     {"tensors[0].shape = [-1]", "non-negative"});
  test::expect_error([&] { io::write_safetensors(path, {io::tensor<float>("a", nullptr, {2})}); },
                     {"tensors[0].data = nullptr", "8 bytes"});
  test::expect_error(
      [&] {
        io::write_safetensors(path, {io::tensor("a", x, {std::int64_t{1} << 62, 8})});
      },
      {"tensors[0].shape", "fits in 64 bits"});
  test::expect_error(
      [&] {
        io::write_safetensors(path, {io::tensor("a", x, {2})}, {{"checksums", "{}"}});
      },
      {"metadata key = \"checksums\"", "written automatically"});
  test::expect_error([] { io::parse_dtype("F8"); }, {"parse_dtype", "dtype = \"F8\"", "one of F64"});
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Safetensors, WritesAtomically) {
  const std::string dir = temp_path("missing_dir");
  const std::string path = dir + "/model.safetensors";
  const float x[2] = {1, 2};
  test::expect_error([&] { io::write_safetensors(path, {io::tensor("x", x, {2})}); },
                     {path.c_str(), "creating the temporary file"});
  EXPECT_FALSE(std::filesystem::exists(dir));

  // Overwriting leaves the new complete file and no temporary next to it.
  std::filesystem::create_directories(dir);
  io::write_safetensors(path, {io::tensor("x", x, {2})});
  io::write_safetensors(path, {io::tensor("y", x, {1})});
  EXPECT_TRUE(io::SafetensorsFile::open(path).contains("y"));
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) entries += e.is_regular_file() ? 1 : 0;
  EXPECT_EQ(entries, 1);
  std::filesystem::remove_all(dir);
}

TEST(Safetensors, StreamedTensorsAreWrittenInPiecesOrNotAtAll) {
  const std::string dir = temp_path("streamed");
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/s.safetensors";
  const float values[6] = {1, 2, 3, 4, 5, 6};
  // Three pieces of uneven size make the tensor, checksum included.
  const io::StreamedTensor pieces{"v", io::DType::F32, {2, 3}, [&](const io::ByteSink& sink) {
                                    sink(values, 4);
                                    sink(values + 1, 12);
                                    sink(values + 4, 8);
                                  }};
  io::write_safetensors_streamed(path, {pieces}, {{"k", "v"}});
  const auto file = io::SafetensorsFile::open(path);  // verifies the checksum
  EXPECT_EQ(file.matrix<float>("v"), (Eigen::Map<const mf::RowMatrix<float>>(values, 2, 3)));
  EXPECT_EQ(file.metadata().at("k"), "v");

  // A producer that gives too few or too many bytes is an error, and leaves no file behind.
  std::filesystem::remove(path);
  const io::StreamedTensor short_one{"v", io::DType::F32, {2, 3}, [&](const io::ByteSink& sink) { sink(values, 20); }};
  test::expect_error([&] { io::write_safetensors_streamed(path, {short_one}); },
                     {"tensors[0]", "20 bytes produced", "24 bytes"});
  const io::StreamedTensor long_one{"v", io::DType::F32, {1, 3}, [&](const io::ByteSink& sink) { sink(values, 16); }};
  test::expect_error([&] { io::write_safetensors_streamed(path, {long_one}); },
                     {"tensors[0]", "more bytes than its shape", "12 bytes"});
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  std::filesystem::remove_all(dir);
}

TEST(Safetensors, DTypeNamesAndSizes) {
  for (const io::DType d : io::all_dtypes) EXPECT_EQ(io::parse_dtype(io::to_string(d)), d);
  EXPECT_EQ(io::dtype_size(io::DType::BF16), 2u);
  EXPECT_EQ(io::dtype_size(io::DType::I64), 8u);
  EXPECT_EQ(io::dtype_size(io::DType::BOOL), 1u);
  EXPECT_EQ(io::dtype_of<std::int32_t>(), io::DType::I32);
}
