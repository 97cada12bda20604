// How a kernel call is cut into pool tasks.
#pragma once

#include <Eigen/Core>

#include <algorithm>

namespace memoryformer {
inline namespace v0 {
namespace detail {

struct Range {
  Eigen::Index begin, end;
  Eigen::Index size() const { return end - begin; }
};

// Part `index` of [0, total) cut into `parts` nearly equal pieces whose inner boundaries are
// multiples of `align` (columns: 16 floats, one cache line, so threads never share a line).
inline Range split_range(Eigen::Index total, int parts, int index, Eigen::Index align = 1) {
  const Eigen::Index units = (total + align - 1) / align;
  auto boundary = [&](int i) { return std::min(total, units * i / parts * align); };
  return {boundary(index), boundary(index + 1)};
}

// Calls below this many multiply-adds run on the calling thread: waking a worker costs more.
inline constexpr double kMinParallelWork = 1 << 16;

// Nor is any task given less than this many: with many threads, a decode-sized call (a layer's
// 131K multiply-adds at N = 1) would otherwise wake every worker for a sliver of work each. Half of
// kMinParallelWork, so that two threads split every call they split before.
inline constexpr double kMinTaskWork = kMinParallelWork / 2;

// How many tasks to cut `units` independent units of work into, `work` multiply-adds in all.
inline int task_count(double work, Eigen::Index units, int threads) {
  if (work < kMinParallelWork || threads <= 1) return 1;
  const auto by_work = static_cast<Eigen::Index>(work / kMinTaskWork);
  return static_cast<int>(std::max<Eigen::Index>(1, std::min({units, static_cast<Eigen::Index>(threads), by_work})));
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
