// Whole-file writes that never leave a half-written file: the bytes go to a temporary file in the
// same directory, which is flushed to disk and then renamed over the target (rename is atomic on
// POSIX file systems). On any failure, or when the writer is destroyed before commit(), the
// temporary file is removed, and FileError carries the path, the step and the errno.
#pragma once

#include "../config.hpp"
#include "detail/file_descriptor.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdio>
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
  explicit AtomicFile(std::string path)
      : path_(non_empty(std::move(path))),
        temp_(path_ + ".tmp." + std::to_string(::getpid())),
        fd_(::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) {
    if (!fd_.is_open()) fail(errno, "creating");
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() {
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
      const ssize_t k = ::pwrite(fd_.get(), p + done, n - done, static_cast<off_t>(offset + done));
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) fail(k < 0 ? errno : EIO, "writing");  // 0 bytes written sets no errno
      done += static_cast<std::size_t>(k);
    }
  }

  // Flushes the bytes to disk and renames the file into place.
  void commit() {
    if (::fsync(fd_.get()) != 0) fail(errno, "flushing");
    if (fd_.close() != 0) fail(errno, "closing");
    if (std::rename(temp_.c_str(), path_.c_str()) != 0) fail(errno, "renaming");
    committed_ = true;
  }

 private:
  static std::string non_empty(std::string path) {
    if (path.empty()) detail::fail("write_file_atomically", "path", "\"\"", "a file name");
    return path;
  }

  // `errno_value` comes in as read right after the call, before any allocation can change errno.
  [[noreturn]] void fail(int errno_value, const char* step) const {
    throw FileError(errno_value, path_, std::string(step) + " the temporary file '" + temp_ + "' failed");
  }

  std::string path_, temp_;
  detail::FileDescriptor fd_;
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
