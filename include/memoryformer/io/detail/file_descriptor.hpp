// Ownership of a POSIX file descriptor, so that no error path between open() and close() can leak
// one: whatever throws, the destructor closes it.
#pragma once

#include <utility>

#include <unistd.h>

namespace memoryformer {
inline namespace v0 {
namespace detail {

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }

  int get() const noexcept { return fd_; }
  bool is_open() const noexcept { return fd_ >= 0; }

  // Closes now and returns close()'s result (0, or -1 with errno set). A writer must check it: a
  // write the kernel deferred can fail only here.
  int close() noexcept { return ::close(std::exchange(fd_, -1)); }

 private:
  int fd_;
};

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
