// Keeps memory that the benchmarks free inside the process, for both the dense and the lookup arms.
// glibc hands every allocation of 32 MiB or more straight back to the kernel when it is freed, and
// trims its heaps once enough is free at the top, so a training step that allocates the same large
// activations every step faults and zeroes them again every step (the dense model's 4d-wide FFN
// activations at d 512 and 4096 tokens are 32 MiB each). That is allocator churn, not the work
// being measured: it took a sixth of the dense training step (docs/performance.md, "Allocator").
#pragma once

#include <benchmark/benchmark.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

inline void keep_freed_memory() {
#if defined(__GLIBC__)
  const bool kept = mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
  benchmark::AddCustomContext("malloc", kept ? "freed memory kept (mmap and trim thresholds 1 GiB)"
                                             : "mallopt failed: freed memory returned to the kernel");
#else
  benchmark::AddCustomContext("malloc", "not glibc: the allocator's defaults");
#endif
}
