// Both arms of every benchmark run with freed memory kept in the process
// (tools/memoryformer/common/freed_memory.hpp): otherwise the dense model's training step is timed
// re-faulting its 32 MiB activations every step (docs/performance.md, "Allocator"). The JSON context
// records which policy ran.
#pragma once

#include "freed_memory.hpp"

#include <benchmark/benchmark.h>

inline void keep_freed_memory_and_record_it() {
  benchmark::AddCustomContext("malloc", keep_freed_memory()
                                            ? "freed memory kept (glibc mmap and trim thresholds 1 GiB)"
                                            : "the C library's defaults (freed memory may go back to the kernel)");
}
