// AlignedBuffer: the storage the gather kernels read (detail/aligned_buffer.hpp).
#include <memoryformer/memoryformer.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <utility>

namespace mf = memoryformer;
using mf::detail::AlignedBuffer;

namespace {

std::uintptr_t address(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

TEST(AlignedBuffer, SmallBuffersStartOnACacheLineAndAreZero) {
  for (std::size_t size : {1u, 3u, 17u, 1000u}) {
    const AlignedBuffer<float> b(size);
    ASSERT_EQ(b.size(), size);
    EXPECT_EQ(address(b.data()) % 64, 0u) << "size " << size;
    for (std::size_t i = 0; i < size; ++i) ASSERT_EQ(b[i], 0.0f) << "size " << size << " index " << i;
  }
}

TEST(AlignedBuffer, LargeBuffersStartOnAHugePageBoundary) {
  const std::size_t size = (std::size_t{2} << 20) + 5;  // bytes of int8: just over one huge page
  const AlignedBuffer<std::int8_t> b(size);
  EXPECT_EQ(address(b.data()) % (std::size_t{2} << 20), 0u);
  EXPECT_EQ(b[0], 0);
  EXPECT_EQ(b[size - 1], 0);
}

TEST(AlignedBuffer, EmptyHasNoStorage) {
  const AlignedBuffer<double> b;
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.data(), nullptr);
  EXPECT_TRUE(AlignedBuffer<double>(0).empty());
}

TEST(AlignedBuffer, CopiesAreDeepAndMovesTransferStorage) {
  AlignedBuffer<int> a(100);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<int>(i * 7);
  AlignedBuffer<int> copy = a;
  ASSERT_NE(copy.data(), a.data());
  EXPECT_EQ(address(copy.data()) % 64, 0u);
  a[3] = -1;
  EXPECT_EQ(copy[3], 21);
  const int* storage = copy.data();
  AlignedBuffer<int> moved = std::move(copy);
  EXPECT_EQ(moved.data(), storage);
  EXPECT_EQ(moved[99], 99 * 7);
  EXPECT_TRUE(copy.empty());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  copy = moved;               // assignment into a moved-from buffer
  EXPECT_EQ(copy[99], 99 * 7);
}

TEST(AlignedBuffer, AnImpossibleSizeIsBadAlloc) {
  EXPECT_THROW(AlignedBuffer<double>(static_cast<std::size_t>(-1) / 4), std::bad_alloc);
}

// The layers keep their tables in it: rows of a multiple of 16 floats start on cache lines.
TEST(AlignedBuffer, LayerTablesAreAligned) {
  mf::MemoryLayerOptions options;
  options.in_dim = 16;
  options.out_dim = 48;
  options.tau = 4;
  mf::MemoryLayer<float> layer(options);
  EXPECT_EQ(address(layer.tables().data()) % 64, 0u);
  layer.zero_grad();
  EXPECT_EQ(address(layer.table_grad().data()) % 64, 0u);
  const mf::MemoryLayer<float> copy = layer;
  EXPECT_EQ(address(copy.tables().data()) % 64, 0u);
  EXPECT_EQ(copy.tables(), layer.tables());
}

}  // namespace
