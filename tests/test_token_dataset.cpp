// Token datasets (io/token_dataset.hpp): the bytes on disk against a hand-built little-endian
// layout, the reader against the writer, and every bad input a clear error naming file and field.
#include "test_support.hpp"

#include <memoryformer/io/token_dataset.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace io = memoryformer::io;

std::string fresh_folder(const std::string& name) {
  const std::string folder = ::testing::TempDir() + "mf_dataset_" + name;
  fs::remove_all(folder);
  return folder;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

io::TokenDatasetMeta meta_of(int vocab) {
  io::TokenDatasetMeta m;
  m.vocab_size = vocab;
  m.train.text_bytes = 11;
  m.val.text_bytes = 3;
  m.tokenizer = "sentencepiece";
  m.tokenizer_checksum = "0123456789abcdef";
  return m;
}

// Expects FormatError naming `file` (its last path component) and `field`.
void expect_format_error(const std::function<void()>& call, const std::string& file, const std::string& field) {
  try {
    call();
    ADD_FAILURE() << "expected FormatError for " << file;
  } catch (const mf::FormatError& e) {
    EXPECT_EQ(fs::path(e.file()).filename().string(), file) << e.what();
    EXPECT_EQ(e.field(), field) << e.what();
  }
}

TEST(TokenDataset, WritesLittleEndianIdsAndReadsThemBack) {
  const std::string folder = fresh_folder("roundtrip");
  const std::vector<std::int32_t> train = {0, 1, 258, 65535, 7}, val = {4, 513};
  io::write_token_dataset(folder, train, val, meta_of(65536));
  // uint16 for a vocabulary of 65536: 258 is bytes 02 01.
  EXPECT_EQ(read_bytes(folder + "/train.bin"), std::string("\x00\x00\x01\x00\x02\x01\xff\xff\x07\x00", 10));
  EXPECT_EQ(read_bytes(folder + "/val.bin"), std::string("\x04\x00\x01\x02", 4));

  const io::TokenDataset d = io::TokenDataset::open(folder);
  EXPECT_EQ(d.meta().vocab_size, 65536);
  EXPECT_EQ(d.meta().train.tokens, 5u);
  EXPECT_EQ(d.meta().val.tokens, 2u);
  EXPECT_EQ(d.meta().train.text_bytes, 11u);
  EXPECT_EQ(d.meta().val.text_bytes, 3u);
  EXPECT_EQ(d.meta().tokenizer, "sentencepiece");
  EXPECT_EQ(d.meta().tokenizer_checksum, "0123456789abcdef");
  ASSERT_EQ(d.train().size(), train.size());
  for (std::size_t i = 0; i < train.size(); ++i) EXPECT_EQ(d.train()[i], train[i]);
  ASSERT_EQ(d.split("val").size(), val.size());
  for (std::size_t i = 0; i < val.size(); ++i) EXPECT_EQ(d.split("val")[i], val[i]);
  EXPECT_EQ(d.val().text_bytes(), 3u);
  test::expect_error([&] { d.split("test"); }, {"name", "\"test\"", "\"train\" or \"val\""});
}

TEST(TokenDataset, UsesFourByteIdsAboveSixteenBits) {
  const std::string folder = fresh_folder("u32");
  io::write_token_dataset(folder, {70000, 1}, {65536}, meta_of(70001));
  // 70000 = 0x00011170.
  EXPECT_EQ(read_bytes(folder + "/train.bin"), std::string("\x70\x11\x01\x00\x01\x00\x00\x00", 8));
  EXPECT_NE(read_bytes(folder + "/meta.json").find("\"dtype\": \"uint32\""), std::string::npos);
  const io::TokenDataset d = io::TokenDataset::open(folder);
  EXPECT_EQ(d.train()[0], 70000);
  EXPECT_EQ(d.val()[0], 65536);
}

TEST(TokenDataset, WriterRefusesIdsOutsideTheVocabularyAndWritesNothing) {
  const std::string folder = fresh_folder("bad_ids");
  test::expect_error([&] { io::write_token_dataset(folder, {1, 2}, {9}, meta_of(9)); },
                     {"val[0]", "9", "[0, 9)"});
  EXPECT_FALSE(fs::exists(folder + "/meta.json"));
  test::expect_error([&] { io::write_token_dataset(folder, {-1}, {}, meta_of(9)); }, {"train[0]", "-1"});
}

TEST(TokenDataset, RewritingAFolderNeverLeavesAnOldMetaJsonBesideNewFiles) {
  const std::string folder = fresh_folder("rewrite");
  io::write_token_dataset(folder, {1, 2, 3}, {4}, meta_of(10));
  // A second write that fails part way (val.bin's path is now a directory) must not leave the
  // first meta.json beside the new train.bin.
  fs::remove(folder + "/val.bin");
  fs::create_directory(folder + "/val.bin");
  EXPECT_THROW(io::write_token_dataset(folder, {5, 6}, {7}, meta_of(10)), mf::FileError);
  EXPECT_FALSE(fs::exists(folder + "/meta.json"));
  EXPECT_THROW(io::TokenDataset::open(folder), mf::FileError);
}

TEST(TokenDataset, ATruncatedOrForeignFileIsAFormatErrorNamingIt) {
  const std::string folder = fresh_folder("truncated");
  io::write_token_dataset(folder, {1, 2, 3, 4}, {5, 6}, meta_of(10));
  const std::string train = read_bytes(folder + "/train.bin");
  write_bytes(folder + "/train.bin", train.substr(0, 7));  // 3.5 ids
  expect_format_error([&] { io::TokenDataset::open(folder); }, "train.bin", "size");
  write_bytes(folder + "/train.bin", train + std::string(2, '\0'));  // one id more than meta.json says
  expect_format_error([&] { io::TokenDataset::open(folder); }, "train.bin", "size");
  write_bytes(folder + "/train.bin", train);
  EXPECT_NO_THROW(io::TokenDataset::open(folder));
}

TEST(TokenDataset, AnIdOutsideTheVocabularyIsAFormatErrorNamingItsPosition) {
  const std::string folder = fresh_folder("id_range");
  io::write_token_dataset(folder, {1, 2, 3}, {4}, meta_of(10));
  write_bytes(folder + "/train.bin", std::string("\x01\x00\x0a\x00\x03\x00", 6));  // id 10 at position 1
  expect_format_error([&] { io::TokenDataset::open(folder); }, "train.bin", "id 1");
  test::expect_error([&] { io::TokenDataset::open(folder); }, {"10", "vocab_size 10"});
}

TEST(TokenDataset, AMetaJsonThatDoesNotMatchItsFilesIsAFormatError) {
  const std::string folder = fresh_folder("meta");
  io::write_token_dataset(folder, {1, 2, 3}, {4}, meta_of(10));
  const std::string meta = read_bytes(folder + "/meta.json");
  auto with = [&](const std::string& from, const std::string& to) {
    std::string m = meta;
    const std::size_t at = m.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    m.replace(at, from.size(), to);
    write_bytes(folder + "/meta.json", m);
  };
  with("\"tokens\": 3", "\"tokens\": 4");
  expect_format_error([&] { io::TokenDataset::open(folder); }, "train.bin", "size");
  with("\"dtype\": \"uint16\"", "\"dtype\": \"uint32\"");
  expect_format_error([&] { io::TokenDataset::open(folder); }, "meta.json", "dtype");
  with("memoryformer-tokens", "other-tokens");
  expect_format_error([&] { io::TokenDataset::open(folder); }, "meta.json", "format");
  with("\"file\": \"val.bin\"", "\"file\": \"../val.bin\"");
  expect_format_error([&] { io::TokenDataset::open(folder); }, "meta.json", "val.file");
  write_bytes(folder + "/meta.json", "{\"format\": ");
  EXPECT_THROW(io::TokenDataset::open(folder), mf::FormatError);
}

TEST(TokenDataset, AMissingFolderIsAFileErrorWithThePath) {
  const std::string folder = fresh_folder("missing");
  try {
    io::TokenDataset::open(folder);
    ADD_FAILURE() << "expected FileError";
  } catch (const mf::FileError& e) {
    EXPECT_EQ(e.path(), folder + "/meta.json");
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
  }
}

}  // namespace
