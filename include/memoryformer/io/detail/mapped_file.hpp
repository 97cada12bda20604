// A whole regular file mapped read-only, owned by a shared_ptr so that views into it (mapped
// tables, token datasets) keep it alive. Errors are FileErrors carrying errno and the path.
#pragma once

#include "../../errors.hpp"
#include "file_descriptor.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

namespace memoryformer {
inline namespace v0 {
namespace detail {

struct MappedFile {
  std::shared_ptr<const void> bytes;  // nullptr for an empty file (mmap cannot map 0 bytes)
  std::size_t size = 0;

  const std::uint8_t* data() const { return static_cast<const std::uint8_t*>(bytes.get()); }
};

enum class HugePages { no, advise };

// `huge` = advise: pages read in come as 2 MiB folios where transparent huge pages allow it
// (docs/performance.md, "Huge pages for mapped files"); a no-op where THP is off.
inline MappedFile map_file(const std::string& path, HugePages huge = HugePages::no) {
  const FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.is_open()) throw FileError(errno, path, "cannot open");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw FileError(errno, path, "cannot stat");
  // EISDIR for a directory; ENODEV, what mmap says of a file it cannot map, for the rest.
  if (!S_ISREG(st.st_mode)) throw FileError(S_ISDIR(st.st_mode) ? EISDIR : ENODEV, path, "not a regular file");
  MappedFile file;
  file.size = static_cast<std::size_t>(st.st_size);
  if (file.size == 0) return file;
  void* mapping = ::mmap(nullptr, file.size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (mapping == MAP_FAILED) throw FileError(errno, path, "cannot map");
  // Owned at once: the mapping outlives the descriptor, and any throw from here on unmaps it.
  file.bytes = std::shared_ptr<const void>(
      mapping, [length = file.size](const void* p) { ::munmap(const_cast<void*>(p), length); });
#if defined(MADV_HUGEPAGE)
  if (huge == HugePages::advise) ::madvise(mapping, file.size, MADV_HUGEPAGE);
#else
  (void)huge;
#endif
  return file;
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
