// Whole-file writes that never leave a half-written file: the bytes go to a temporary file in the
// same directory, which is flushed to disk and then renamed over the target (rename is atomic on
// POSIX file systems). On any failure the temporary file is removed and Error names the path and
// the system's reason.
#pragma once

#include "../config.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <unistd.h>

namespace memoryformer {
inline namespace v0 {
namespace io {

inline void write_file_atomically(const std::string& path, const std::string& bytes) {
  const char* where = "write_file_atomically";
  if (path.empty()) detail::fail(where, "path", "\"\"", "a file name");
  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  auto fail_with_errno = [&](const char* step) {
    const std::string reason = std::strerror(errno);
    ::unlink(temp.c_str());
    detail::fail(where, "path", '"' + path + '"',
                 std::string("a writable file (") + step + " failed: " + reason + ")");
  };
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_with_errno("creating the temporary file");
  std::size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int saved = errno;
      ::close(fd);
      errno = saved;
      fail_with_errno("writing");
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    fail_with_errno("flushing");
  }
  if (::close(fd) != 0) fail_with_errno("closing");
  if (std::rename(temp.c_str(), path.c_str()) != 0) fail_with_errno("renaming into place");
}

}  // namespace io
}  // namespace v0
}  // namespace memoryformer
