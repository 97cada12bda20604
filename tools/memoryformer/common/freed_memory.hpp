// Keeps memory a program frees inside the process. glibc hands every freed allocation of 32 MiB or
// more back to the kernel and trims its heaps once enough is free at their top, so a training loop
// that allocates the same large activations every step faults and zeroes them again every step
// (docs/performance.md, "Allocator"). A process-wide policy, so the programs set it, not the library.
#pragma once

#include <cstdlib>  // any C library header: it defines __GLIBC__ for the test below

#if defined(__GLIBC__)
#include <malloc.h>
#endif

// Raises glibc's mmap and trim thresholds to 1 GiB. Returns whether they were set (false on other
// C libraries, whose defaults stay).
inline bool keep_freed_memory() {
#if defined(__GLIBC__)
  return mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
#else
  return false;
#endif
}
