// Storage for lookup tables, their gradients and packed panels: what the gather kernels read.
//
// - 64-byte aligned. A table row of a multiple of 16 floats then starts on a cache line, and no
//   AVX-512 load of it spans two lines. malloc's blocks start 16 bytes past a line (Eigen aligns to
//   16 unless built for AVX-512), and the panel gather ran slower on them (docs/performance.md,
//   "Alignment").
// - From 2 MiB on (Linux), 2 MiB aligned and advised for transparent huge pages. A batch-1 gather
//   reads K rows in K different 4 KiB pages: with 4 KiB pages each row costs a TLB miss and a page
//   walk before its DRAM access can start (BM_MemoryLayer N = 1 cold; docs/performance.md, "TLB
//   misses: huge pages for tables"). Where the kernel grants no huge page (THP "never") the advice
//   is a no-op.
#pragma once

#include "../config.hpp"

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace memoryformer {
inline namespace v0 {
namespace detail {

inline constexpr std::size_t kCacheLineBytes = 64;
inline constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;

// An owning, zero-initialised array of `size` trivially copyable values, aligned as above. Copies
// are deep.
template <class T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable<T>::value, "AlignedBuffer<T>: T must be trivially copyable");

 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t size) : data_(allocate(size)), size_(size) {}

  AlignedBuffer(const AlignedBuffer& other) : AlignedBuffer(other.size_) {
    if (size_ > 0) std::memcpy(data_.get(), other.data_.get(), size_ * sizeof(T));
  }
  AlignedBuffer& operator=(const AlignedBuffer& other) {
    if (this != &other) *this = AlignedBuffer(other);
    return *this;
  }
  // A moved-from buffer is empty.
  AlignedBuffer(AlignedBuffer&& other) noexcept
      : data_(std::move(other.data_)), size_(std::exchange(other.size_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept {
    data_ = std::move(other.data_);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& operator[](std::size_t i) { return data_.get()[i]; }
  const T& operator[](std::size_t i) const { return data_.get()[i]; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };

  static T* allocate(std::size_t size) {
    if (size == 0) return nullptr;
    if (size > (static_cast<std::size_t>(-1) - kHugePageBytes) / sizeof(T)) throw std::bad_alloc();
    const std::size_t bytes = size * sizeof(T);
    const bool huge = bytes >= kHugePageBytes;
    const std::size_t align = huge ? kHugePageBytes : kCacheLineBytes;
    // aligned_alloc wants a multiple of the alignment.
    void* p = std::aligned_alloc(align, (bytes + align - 1) / align * align);
    if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (huge) madvise(p, bytes / kHugePageBytes * kHugePageBytes, MADV_HUGEPAGE);  // before first touch
#endif
    std::memset(p, 0, bytes);
    return static_cast<T*>(p);
  }

  std::unique_ptr<T, Free> data_;
  std::size_t size_ = 0;
};

// A row-major [rows, cols] matrix in an AlignedBuffer, seen through Eigen maps.
template <class Scalar>
class AlignedMatrix {
 public:
  AlignedMatrix(Eigen::Index rows, Eigen::Index cols)
      : buffer_(static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols)), rows_(rows), cols_(cols) {}

  Scalar* data() { return buffer_.data(); }
  const Scalar* data() const { return buffer_.data(); }
  Eigen::Index rows() const { return rows_; }
  Eigen::Index cols() const { return cols_; }
  Eigen::Index size() const { return rows_ * cols_; }

 private:
  AlignedBuffer<Scalar> buffer_;
  Eigen::Index rows_, cols_;
};

template <class Scalar>
Eigen::Map<RowMatrix<Scalar>> view(AlignedMatrix<Scalar>& m) {
  return {m.data(), m.rows(), m.cols()};
}
template <class Scalar>
Eigen::Map<const RowMatrix<Scalar>> view(const AlignedMatrix<Scalar>& m) {
  return {m.data(), m.rows(), m.cols()};
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
