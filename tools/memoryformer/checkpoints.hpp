// The files of `memoryformer train --out OUT`: checkpoints OUT.ckpt-<step> (io::save_checkpoint,
// one atomic file each), found newest first, pruned once a newer one is complete, and the
// temporary files a killed writer left behind (docs/training.md, "Checkpoints").
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <csignal>

namespace checkpoints {

namespace fs = std::filesystem;

inline std::string path_for(const std::string& out, long step) { return out + ".ckpt-" + std::to_string(step); }

// The step of a file name "<base>.ckpt-<step>", or nothing.
inline std::optional<long> step_of(const std::string& name, const std::string& base) {
  const std::string prefix = base + ".ckpt-";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  long step = 0;
  const char* first = name.data() + prefix.size();
  const char* last = name.data() + name.size();
  const auto [end, ec] = std::from_chars(first, last, step);
  if (ec != std::errc() || end != last || step < 0) return std::nullopt;
  return step;
}

// The directory of `path` ("." for a bare name) and its file name.
inline std::pair<fs::path, std::string> split(const std::string& path) {
  const fs::path p(path);
  return {p.has_parent_path() ? p.parent_path() : fs::path("."), p.filename().string()};
}

// The checkpoints of `out` on disk, newest (highest step) first.
inline std::vector<std::pair<long, std::string>> find(const std::string& out) {
  const auto [dir, base] = split(out);
  std::vector<std::pair<long, std::string>> found;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec))
    if (const auto step = step_of(e.path().filename().string(), base)) found.emplace_back(*step, e.path().string());
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return found;
}

// Removes the checkpoints of `out` other than the newest `keep` of those at or below `step`: older
// ones, and newer ones, which a resume from an earlier checkpoint has made a discarded future.
inline void prune(const std::string& out, long step, int keep) {
  int kept = 0;
  for (const auto& [s, path] : find(out)) {
    if (s <= step && kept < keep) {
      ++kept;
      continue;
    }
    std::error_code ec;
    fs::remove(path, ec);
  }
}

// Whether `name` is a temporary file (io::AtomicFile's "<target>.tmp.<pid>") of a file that
// `train --out out` writes: OUT, OUT.csv, OUT.optim (older versions) or a checkpoint.
inline bool is_temporary_of(const std::string& name, const std::string& base) {
  const std::size_t tmp = name.rfind(".tmp.");
  if (tmp == std::string::npos || tmp + 5 == name.size()) return false;
  if (!std::all_of(name.begin() + static_cast<std::ptrdiff_t>(tmp) + 5, name.end(),
                   [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  const std::string target = name.substr(0, tmp);
  return target == base || target == base + ".csv" || target == base + ".optim" || step_of(target, base);
}

// Removes the temporary files a killed `train` left beside `outputs` (its --out and --log), and
// returns their paths.
inline std::vector<std::string> remove_stale_temporaries(const std::vector<std::string>& outputs) {
  std::vector<std::string> removed;
  for (const std::string& out : outputs) {
    const auto [dir, base] = split(out);
    std::error_code ec;
    for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
      const std::string path = e.path().string();
      if (is_temporary_of(e.path().filename().string(), base) &&
          std::find(removed.begin(), removed.end(), path) == removed.end() && fs::remove(path, ec))
        removed.push_back(path);
    }
  }
  return removed;
}

// A test hook: with MEMORYFORMER_TEST_KILL_AT=<point>:<step> in the environment, the process
// kills itself (SIGKILL, as a power cut or the OOM killer would) on reaching `point` at `step`.
// The tests that kill a training run at each point between two writes use it.
inline void kill_point(const char* point, long step) {
  static const std::string wanted = [] {
    const char* v = std::getenv("MEMORYFORMER_TEST_KILL_AT");
    return std::string(v != nullptr ? v : "");
  }();
  if (!wanted.empty() && wanted == std::string(point) + ":" + std::to_string(step)) std::raise(SIGKILL);
}

}  // namespace checkpoints
