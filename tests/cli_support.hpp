// What the tests of the memoryformer tool share: running it as a separate process, its JSON
// output, a token dataset written by the library, and small training flags.
#pragma once

#include "test_support.hpp"

#include <memoryformer/io/json.hpp>
#include <memoryformer/io/token_dataset.hpp>

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#ifndef MF_CLI_PATH
#error "MF_CLI_PATH must name the memoryformer executable"
#endif

namespace cli_test {

namespace fs = std::filesystem;

struct Result {
  int status;  // the exit status; -1000 - signal if the process was killed (a crash)
  std::string out, err;
};

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (const char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline std::string temp_path(const std::string& name) { return ::testing::TempDir() + "mf_cli_" + name; }

// Runs the tool with `args`; `launcher` (e.g. mpiexec and its flags) goes before it.
inline Result run(const std::vector<std::string>& args, const std::string& launcher = "") {
  static int calls = 0;
  const std::string err_file =
      temp_path("stderr_" + std::to_string(::getpid()) + "_" + std::to_string(calls++));
  std::string command = launcher + shell_quote(MF_CLI_PATH);
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

#ifdef MF_CLI_MPIEXEC
// The tool under mpiexec with `ranks` ranks (MF_CLI_MPIEXEC: mpiexec, its rank-count flag, then
// MF_CLI_MPIEXEC_FLAGS).
inline std::string mpiexec(int ranks) {
  return std::string(MF_CLI_MPIEXEC) + " " + std::to_string(ranks) + " " + MF_CLI_MPIEXEC_FLAGS + " ";
}
#endif

// The last line of a command's stdout, parsed as the JSON object train and eval end with.
inline mf::io::JsonValue last_json_line(const std::string& out) {
  std::string s = out;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return mf::io::parse_json(s.substr(s.rfind('\n') == std::string::npos ? 0 : s.rfind('\n') + 1), "stdout");
}

// A dataset written by the library, so that train and eval are tested without SentencePiece:
// ids follow a pattern with period 7 plus noise, over a vocabulary of 40.
inline std::string pattern_dataset(const std::string& name, const std::string& checksum = "00000000000000aa") {
  const std::string folder = temp_path(name + "/");
  fs::remove_all(folder);
  std::vector<std::int32_t> train, val;
  mf::detail::Rng rng(3);
  for (int i = 0; i < 3000; ++i) train.push_back(rng.uniform() < 0.9 ? (i * 3) % 7 : 7 + i % 33);
  for (int i = 0; i < 400; ++i) val.push_back(rng.uniform() < 0.9 ? (i * 3) % 7 : 7 + i % 33);
  mf::io::TokenDatasetMeta meta;
  meta.vocab_size = 40;
  meta.train.text_bytes = 9000;
  meta.val.text_bytes = 1234;
  meta.tokenizer = "sentencepiece";
  meta.tokenizer_checksum = checksum;
  mf::io::write_token_dataset(folder, train, val, meta);
  return folder;
}

inline std::vector<std::string> train_flags(const std::string& data, const std::string& out, int steps) {
  return {"train", "--data", data, "--layers", "1", "--d-model", "16", "--heads", "2", "--tau", "4", "--seq",
          "16", "--batch", "4", "--steps", std::to_string(steps), "--eval-every", "3", "--lr", "1e-2",
          "--threads", "2", "--out", out};
}

// The columns of a validation curve that do not depend on timing: step, lr, train_loss (the mean
// since the previous row), val_loss, val_bpb.
inline std::vector<std::vector<std::string>> curve_columns(const std::string& csv) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream lines(csv);
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> cells;
    std::istringstream cols(line);
    for (std::string cell; std::getline(cols, cell, ',');) cells.push_back(cell);
    if (cells.size() < 5) {
      ADD_FAILURE() << "a curve row of " << cells.size() << " cells: " << line;
      continue;
    }
    rows.push_back({cells[0], cells[1], cells[2], cells[3], cells[4]});
  }
  return rows;
}

}  // namespace cli_test
