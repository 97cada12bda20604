// The memoryformer tool's errors and exit statuses (main.cpp documents them): a library error keeps
// the status of its kind (its type, never its message), and a failure at run time names the
// argument and value it concerns.
#pragma once

#include "cli.hpp"

#include <memoryformer/errors.hpp>
#if MF_HAVE_MPI
#include <memoryformer/distributed/communicator.hpp>
#endif

#include <charconv>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>

namespace tool {

namespace mf = memoryformer;
using cli::UsageError;

// Exit statuses (the top of main.cpp).
enum Status : int { kFailure = 1, kUsage = 2, kFileSystem = 3, kMalformedFile = 4 };

// The status of a library error, by its kind.
inline int status_of(const mf::Error& e) {
  if (dynamic_cast<const mf::FileError*>(&e) != nullptr) return kFileSystem;
  if (dynamic_cast<const mf::FormatError*>(&e) != nullptr) return kMalformedFile;
#if MF_HAVE_MPI
  if (const auto* d = dynamic_cast<const mf::distributed::DistributedError*>(&e)) {
    switch (d->kind()) {
      case mf::distributed::ErrorKind::file:
        return kFileSystem;
      case mf::distributed::ErrorKind::format:
        return kMalformedFile;
      case mf::distributed::ErrorKind::argument:
      case mf::distributed::ErrorKind::other:
        break;
    }
  }
#endif
  return kFailure;
}

// Whether every rank of a sharded run threw `e` alike.
inline bool is_agreed(const mf::Error& e) {
#if MF_HAVE_MPI
  return dynamic_cast<const mf::distributed::DistributedError*>(&e) != nullptr;
#else
  (void)e;
  return false;
#endif
}

// A failure at run time, its message already naming the argument it concerns, and its status.
class RunError : public std::runtime_error {
 public:
  RunError(const std::string& message, int status, bool agreed = false)
      : std::runtime_error(message), status_(status), agreed_(agreed) {}
  int status() const { return status_; }
  // Whether every rank of a sharded run threw it alike (distributed::DistributedError).
  bool agreed() const { return agreed_; }

 private:
  int status_;
  bool agreed_;
};

inline std::string in_quotes(const std::string& s) { return '"' + s + '"'; }

// The whole of `text` as a decimal integer, or nothing.
inline std::optional<long long> parse_integer(const std::string& text) {
  long long value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Runs `step`; a library error becomes a RunError that names the argument and value it concerns
// and keeps the status of the error's kind.
template <class Step>
auto for_argument(const std::string& arg, const std::string& value, Step step) -> decltype(step()) {
  try {
    return step();
  } catch (const mf::Error& e) {
    throw RunError(arg + " = " + in_quotes(value) + ": " + e.what(), status_of(e), is_agreed(e));
  }
}

}  // namespace tool
