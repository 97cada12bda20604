// A persistent pool of worker threads that runs `body(task)` for task in [0, tasks).
// The calling thread works too, so a pool of size n has n - 1 workers. One parallel_for runs at a
// time; a call made while the pool is busy (from another thread, or nested inside a task) runs
// serially on its caller instead of waiting, which keeps concurrent forward() calls safe.
// A task that throws does not end the process: the first exception is rethrown on the caller once
// every task has finished or been skipped, and the pool stays usable.
// Chosen over Eigen::ThreadPool because a call costs less (BM_ParallelFor, docs/performance.md).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__amd64__)
#include <immintrin.h>
#endif

namespace memoryformer {
inline namespace v0 {
namespace detail {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__amd64__)
  _mm_pause();
#endif
}

class ThreadPool {
 public:
  explicit ThreadPool(int threads) : size_(std::max(1, threads)) {
    workers_.reserve(static_cast<std::size_t>(size_ - 1));
    for (int i = 1; i < size_; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  int size() const { return size_; }

  // Runs body(i) for every i in [0, tasks); returns when all have finished. If a task throws, the
  // tasks not yet started are skipped and the first exception is rethrown here.
  template <class Body>
  void parallel_for(int tasks, const Body& body) {
    if (tasks <= 0) return;
    std::unique_lock<std::mutex> busy(submit_, std::try_to_lock);
    if (tasks == 1 || workers_.empty() || !busy.owns_lock()) {
      for (int i = 0; i < tasks; ++i) body(i);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      context_ = &body;
      invoke_ = [](const void* ctx, int i) { (*static_cast<const Body*>(ctx))(i); };
      error_ = nullptr;
      failed_.store(false, std::memory_order_relaxed);
      tasks_ = tasks;
      next_.store(0, std::memory_order_relaxed);
      pending_workers_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    run_tasks();
    // Every worker must have left this job before `body` (on our caller's stack) goes away.
    for (int spin = 0; spin < kSpins && pending_workers_.load(std::memory_order_acquire) != 0; ++spin)
      cpu_relax();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_workers_.load(std::memory_order_acquire) == 0; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  // Polling this long before sleeping keeps back-to-back small calls (batch-1 decode) off the
  // futex path, at a bounded cost (a few microseconds) when the pool goes idle.
  static constexpr int kSpins = 4000;

  // Takes tasks until none is left; after a failure the rest are taken but not run.
  void run_tasks() {
    for (int i = next_.fetch_add(1, std::memory_order_relaxed); i < tasks_;
         i = next_.fetch_add(1, std::memory_order_relaxed)) {
      if (failed_.load(std::memory_order_relaxed)) continue;
      try {
        invoke_(context_, i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        failed_.store(true, std::memory_order_relaxed);
      }
    }
  }

  void worker_loop() {
    std::uint64_t seen = 0;
    for (;;) {
      std::uint64_t generation = generation_.load(std::memory_order_acquire);
      for (int spin = 0; spin < kSpins && generation == seen; ++spin) {
        cpu_relax();
        generation = generation_.load(std::memory_order_acquire);
      }
      if (generation == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_.load() != seen; });
        if (stop_) return;
        generation = generation_.load(std::memory_order_acquire);
      }
      seen = generation;
      run_tasks();
      if (pending_workers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.notify_one();
      }
    }
  }

  const int size_;
  std::vector<std::thread> workers_;
  std::mutex submit_;  // held by the one parallel_for in progress
  std::mutex mutex_;   // guards the job fields while they change, and the sleeps
  std::condition_variable wake_, done_;
  bool stop_ = false;
  const void* context_ = nullptr;
  void (*invoke_)(const void*, int) = nullptr;
  int tasks_ = 0;
  std::exception_ptr error_;  // the first exception a task of this job threw (guarded by mutex_)
  std::atomic<bool> failed_{false};
  std::atomic<int> next_{0};
  std::atomic<int> pending_workers_{0};
  std::atomic<std::uint64_t> generation_{0};
};

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
