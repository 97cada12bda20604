// mf::Context: what a computation runs on -- the thread pool, the kernel path and the L2 size the
// schedules plan for. Like Eigen's ThreadPoolDevice, it is explicit: a model, block, layer or
// optimizer holds one (set_context), and two models with different contexts run side by side in
// one process. A module given none follows the default context, which set_num_threads() and
// set_kernel_path() change, so that one-line use keeps working.
#pragma once

#include "config.hpp"
#include "platform/thread_pool.hpp"
#include "platform/kernel_path.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace memoryformer {
inline namespace v0 {

namespace detail {

inline int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

// Bytes of L2 per core, as the OS reports it (1 MiB if it does not).
inline std::size_t reported_l2_cache_bytes() {
  static const std::size_t bytes = [] {
    long reported = 0;
#if defined(_SC_LEVEL2_CACHE_SIZE)
    reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return reported > 0 ? static_cast<std::size_t>(reported) : std::size_t{1} << 20;
  }();
  return bytes;
}

}  // namespace detail

// What a Context is built with; every field left at its default is detected.
struct ContextOptions {
  int threads = 0;                        // >= 1, or 0 for the hardware concurrency
  std::optional<KernelPath> kernel_path;  // unset: MEMORYFORMER_PATH if set, else the best supported
  std::size_t l2_cache_bytes = 0;         // per core; 0: as the OS reports it
};

// A small value: copies share one thread pool, which lives as long as any copy.
class Context {
 public:
  // The hardware's threads, the best kernel path (or MEMORYFORMER_PATH's) and the reported L2.
  Context() : Context(ContextOptions{}) {}
  explicit Context(int threads) : Context(with_threads(threads)) {}
  explicit Context(const ContextOptions& options)
      : pool_(std::make_shared<detail::ThreadPool>(thread_count(options.threads))),
        path_(chosen_path(options.kernel_path)),
        l2_bytes_(options.l2_cache_bytes == 0 ? detail::reported_l2_cache_bytes() : options.l2_cache_bytes) {}

  int num_threads() const { return pool_->size(); }
  KernelPath kernel_path() const { return path_; }
  std::size_t l2_cache_bytes() const { return l2_bytes_; }

  // This context on another kernel path, sharing its thread pool.
  Context with_kernel_path(KernelPath path) const {
    Context out = *this;
    out.path_ = chosen_path(path);
    return out;
  }

  // Runs body(i) for every i in [0, tasks) on the pool and returns when all have finished. The
  // first exception a task throws is rethrown here; the tasks not yet started are skipped.
  template <class Body>
  void parallel_for(int tasks, const Body& body) const {
    pool_->parallel_for(tasks, body);
  }

 private:
  static ContextOptions with_threads(int threads) {
    ContextOptions o;
    o.threads = threads;
    return o;
  }
  static int thread_count(int threads) {
    if (threads < 0) detail::fail("Context", "threads", threads, ">= 1, or 0 for the hardware concurrency");
    return threads == 0 ? detail::hardware_threads() : threads;
  }
  static KernelPath chosen_path(const std::optional<KernelPath>& path) {
    if (!path) return detail::initial_kernel_path();
    detail::require_supported("Context", "kernel_path", *path);
    return *path;
  }

  std::shared_ptr<detail::ThreadPool> pool_;
  KernelPath path_;
  std::size_t l2_bytes_;
};

namespace detail {

// The default context: set under a mutex by the setters below, which also bump `generation`.
// Readers keep a copy per thread and refresh it only when the generation has moved, so that a
// call reads one atomic and takes no lock (a process-wide lock on every call serialised every
// module of every model that has no context of its own).
struct DefaultContextHolder {
  std::mutex mutex;
  std::optional<Context> context;
  std::atomic<std::uint64_t> generation{1};
};

inline DefaultContextHolder& default_context_holder() {
  static DefaultContextHolder holder;
  return holder;
}

// Replaces the default context by make(current or null); the caller holds no lock.
template <class Make>
void replace_default_context(const Make& make) {
  DefaultContextHolder& h = default_context_holder();
  std::lock_guard<std::mutex> lock(h.mutex);
  if (std::optional<Context> next = make(h.context ? &*h.context : nullptr)) {
    h.context = std::move(next);
    h.generation.fetch_add(1, std::memory_order_release);
  }
}

}  // namespace detail

// The context of modules given none, made on first use. A call returns a copy, so that calls in
// flight finish on the context they started with while set_num_threads() replaces it. Lock-free
// once this thread has read the current default (see DefaultContextHolder).
inline Context default_context() {
  struct Cached {
    std::uint64_t generation = 0;
    std::optional<Context> context;
  };
  thread_local Cached cached;
  detail::DefaultContextHolder& h = detail::default_context_holder();
  const std::uint64_t now = h.generation.load(std::memory_order_acquire);
  if (cached.generation != now || !cached.context) {
    std::lock_guard<std::mutex> lock(h.mutex);
    if (!h.context) h.context.emplace();
    cached.context = *h.context;
    cached.generation = h.generation.load(std::memory_order_relaxed);
  }
  return *cached.context;
}

// The default context's thread count (like Eigen::nbThreads).
inline int num_threads() { return default_context().num_threads(); }

// threads >= 1 sets the default context's thread count; 0 restores the hardware concurrency.
inline void set_num_threads(int threads) {
  if (threads < 0) detail::fail("set_num_threads", "threads", threads, ">= 1, or 0 for the default");
  const int n = threads == 0 ? detail::hardware_threads() : threads;
  detail::replace_default_context([n](const Context* current) -> std::optional<Context> {
    if (current != nullptr && current->num_threads() == n) return std::nullopt;
    ContextOptions o;
    o.threads = n;
    if (current != nullptr) o.kernel_path = current->kernel_path();
    return Context(o);
  });
}

// The default context's kernel path. Throws Error if MEMORYFORMER_PATH names an unknown or
// unsupported path and set_kernel_path() has not overridden it.
inline KernelPath kernel_path() { return default_context().kernel_path(); }

// Selects `path` for the default context; throws Error if it is not supported.
inline void set_kernel_path(KernelPath path) {
  detail::require_supported("set_kernel_path", "path", path);
  detail::replace_default_context([path](const Context* current) -> std::optional<Context> {
    if (current != nullptr) return current->with_kernel_path(path);
    ContextOptions o;
    o.kernel_path = path;
    return Context(o);
  });
}

namespace detail {

// What a module runs on: the context it was given, else the default one at the time of the call.
class ModuleContext {
 public:
  Context get() const { return given_ ? *given_ : default_context(); }
  void set(Context context) { given_ = std::move(context); }

 private:
  std::optional<Context> given_;
};

}  // namespace detail

}  // namespace v0
}  // namespace memoryformer
