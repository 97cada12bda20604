// How many threads the library's kernels use (like Eigen::setNbThreads). Default: the hardware
// concurrency. Changing it is safe while other threads compute: calls in flight finish on the pool
// they started with.
#pragma once

#include "config.hpp"
#include "detail/thread_pool.hpp"

#include <memory>
#include <mutex>
#include <thread>

namespace memoryformer {
inline namespace v0 {
namespace detail {

inline int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

struct PoolHolder {
  std::mutex mutex;
  std::shared_ptr<ThreadPool> pool;
};

inline PoolHolder& pool_holder() {
  static PoolHolder holder;
  return holder;
}

// The current pool, created on first use. Callers keep the shared_ptr for the duration of a call.
inline std::shared_ptr<ThreadPool> thread_pool() {
  PoolHolder& h = pool_holder();
  std::lock_guard<std::mutex> lock(h.mutex);
  if (!h.pool) h.pool = std::make_shared<ThreadPool>(hardware_threads());
  return h.pool;
}

}  // namespace detail

inline int num_threads() { return detail::thread_pool()->size(); }

// threads >= 1 sets the count; 0 restores the default (hardware concurrency).
inline void set_num_threads(int threads) {
  if (threads < 0) detail::fail("set_num_threads", "threads", threads, ">= 1, or 0 for the default");
  const int n = threads == 0 ? detail::hardware_threads() : threads;
  detail::PoolHolder& h = detail::pool_holder();
  std::lock_guard<std::mutex> lock(h.mutex);
  if (!h.pool || h.pool->size() != n) h.pool = std::make_shared<detail::ThreadPool>(n);
}

}  // namespace v0
}  // namespace memoryformer
