// What "cold" means in the benchmarks (docs/performance.md's protocol): the weights a run reads
// cycle through at least this many bytes of independent sets, more than the L3 of any machine
// measured, so that every call starts from DRAM as in a deep model.
#pragma once

#include <cstdint>

namespace mf_bench {

inline constexpr std::int64_t kColdBytes = std::int64_t{512} << 20;

}  // namespace mf_bench
