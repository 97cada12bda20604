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

// How many tasks to cut `units` independent units of work into, `work` multiply-adds in all.
inline int task_count(double work, Eigen::Index units, int threads) {
  if (work < kMinParallelWork || threads <= 1) return 1;
  return static_cast<int>(std::max<Eigen::Index>(1, std::min<Eigen::Index>(units, threads)));
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
