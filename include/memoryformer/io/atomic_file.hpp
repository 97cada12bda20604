// Whole-file writes that never leave a half-written file: the bytes go to a temporary file in the
// same directory, which is flushed to disk and then renamed over the target (rename is atomic on
// POSIX file systems). On any failure, or when the writer is destroyed before commit(), the
// temporary file is removed, and Error names the path and the system's reason.
#pragma once

#include "../config.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include <fcntl.h>
#include <unistd.h>

namespace memoryformer {
inline namespace v0 {
namespace io {

// A file written in pieces, in order or at given offsets (to fill in a header last), that appears
// at `path` only on commit().
class AtomicFile {
 public:
  explicit AtomicFile(std::string path) : path_(std::move(path)) {
    if (path_.empty()) detail::fail(kWhere, "path", "\"\"", "a file name");
    temp_ = path_ + ".tmp." + std::to_string(::getpid());
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail_with_errno("creating the temporary file");
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(temp_.c_str());
  }

  const std::string& path() const { return path_; }

  // Appends n bytes.
  void write(const void* bytes, std::size_t n) {
    write_at(bytes, n, offset_);
    offset_ += n;
  }

  // Writes n bytes at `offset`, below what write() has appended.
  void write_at(const void* bytes, std::size_t n, std::uint64_t offset) {
    const auto* p = static_cast<const char*>(bytes);
    std::size_t done = 0;
    while (done < n) {
      const ssize_t k = ::pwrite(fd_, p + done, n - done, static_cast<off_t>(offset + done));
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) fail_with_errno("writing");
      done += static_cast<std::size_t>(k);
    }
  }

  // Flushes the bytes to disk and renames the file into place.
  void commit() {
    if (::fsync(fd_) != 0) fail_with_errno("flushing");
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) fail_with_errno("closing");
    if (std::rename(temp_.c_str(), path_.c_str()) != 0) fail_with_errno("renaming into place");
    committed_ = true;
  }

 private:
  static constexpr const char* kWhere = "write_file_atomically";

  [[noreturn]] void fail_with_errno(const char* step) const {
    const std::string reason = std::strerror(errno);
    detail::fail(kWhere, "path", '"' + path_ + '"',
                 std::string("a writable file (") + step + " failed: " + reason + ")");
  }

  std::string path_, temp_;
  int fd_ = -1;
  std::uint64_t offset_ = 0;
  bool committed_ = false;
};

inline void write_file_atomically(const std::string& path, const std::string& bytes) {
  AtomicFile file(path);
  file.write(bytes.data(), bytes.size());
  file.commit();
}

}  // namespace io
}  // namespace v0
}  // namespace memoryformer
