// A text corpus for the memoryformer tool: a file, or every regular file below a folder in sorted
// path order, checked to be UTF-8 text and cut into documents at blank lines (a file boundary
// also ends a document). Concatenating the documents gives back the files' bytes exactly.
#pragma once

#include "cli.hpp"

#include <memoryformer/io/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace corpus {

struct Corpus {
  std::vector<std::string> documents;
  std::uint64_t bytes = 0;
  std::size_t files = 0;
};

// Why `text` (the bytes of `file`) is not a corpus: the empty string when it is UTF-8 text.
inline std::string not_text(const std::string& text) {
  const std::size_t nul = text.find('\0');
  if (nul != std::string::npos) return "a NUL byte at offset " + std::to_string(nul) + " (a binary file)";
  if (!memoryformer::io::is_valid_utf8(text)) return "bytes that are not UTF-8 (a binary file or another encoding)";
  return "";
}

// Cuts text after each run of blank lines: "a\nb\n\nc\n" -> {"a\nb\n\n", "c\n"}.
inline void append_documents(const std::string& text, std::vector<std::string>& documents) {
  std::size_t begin = 0, pos = 0;
  while (pos < text.size()) {
    const std::size_t end_of_line = text.find('\n', pos);
    if (end_of_line == std::string::npos) break;
    pos = end_of_line + 1;
    if (pos < text.size() && text[pos] == '\n') {  // a blank line: the document ends after the run
      while (pos < text.size() && text[pos] == '\n') ++pos;
      documents.push_back(text.substr(begin, pos - begin));
      begin = pos;
    }
  }
  if (begin < text.size()) documents.push_back(text.substr(begin));
}

// Reads `path` (a file, or a folder searched recursively), as flag `arg`. Throws cli::UsageError
// naming the flag, the file and the problem for a missing path, an empty corpus or binary data.
inline Corpus read(const std::string& arg, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> files;
  if (fs::is_directory(path, ec)) {
    for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec))
      if (it->is_regular_file(ec)) files.push_back(it->path());
    if (ec) throw cli::UsageError(arg + " = \"" + path + "\": cannot list the folder: " + ec.message());
    std::sort(files.begin(), files.end());
  } else if (fs::is_regular_file(path, ec)) {
    files.push_back(path);
  } else {
    throw cli::UsageError(arg + " = \"" + path + "\": expected a text file or a folder of them, but it " +
                          (fs::exists(path, ec) ? "is neither" : "does not exist"));
  }
  Corpus c;
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof())
      throw cli::UsageError(arg + " = \"" + path + "\": cannot read " + file.string());
    const std::string problem = not_text(text);
    if (!problem.empty())
      throw cli::UsageError(arg + " = \"" + path + "\": expected UTF-8 text, but " + file.string() + " has " +
                            problem);
    append_documents(text, c.documents);
    c.bytes += text.size();
    ++c.files;
  }
  if (c.bytes == 0)
    throw cli::UsageError(arg + " = \"" + path + "\": expected text, but " +
                          (files.empty() ? std::string("the folder holds no files") : "the corpus is empty"));
  return c;
}

}  // namespace corpus
