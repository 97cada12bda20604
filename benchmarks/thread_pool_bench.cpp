// The library's thread pool (detail/thread_pool.hpp) against Eigen's own (Eigen::ThreadPool, the
// non-blocking work-stealing pool of unsupported/CXX11/ThreadPool), on the call the kernels make:
// parallel_for(tasks, body), caller included, returning once every task has run. Both sides run
// the same body: `work` sequential multiply-adds per task (0: the dispatch cost alone), with tasks
// taken from one shared counter, the caller taking tasks too, as the library's pool does.
//
// BM_ParallelFor/pool:0|1/threads/tasks/work  pool 0 = the library's, 1 = Eigen's.
// What it tells: the latency of one call (time per iteration), the cost a batch-1 decode step
// pays per kernel call. docs/performance.md, "Thread pool", records the comparison.
#include <memoryformer/memoryformer.hpp>

#include <benchmark/benchmark.h>

#include <unsupported/Eigen/CXX11/ThreadPool>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace {

// Eigen's pool driven as the library's is: threads - 1 workers plus the caller, tasks from one
// counter, and a barrier the caller waits on.
class EigenParallelFor {
 public:
  explicit EigenParallelFor(int threads) : pool_(std::max(1, threads - 1)), threads_(threads) {}

  template <class Body>
  void operator()(int tasks, const Body& body) {
    std::atomic<int> next{0};
    auto drain = [&] {
      for (int i = next.fetch_add(1, std::memory_order_relaxed); i < tasks;
           i = next.fetch_add(1, std::memory_order_relaxed))
        body(i);
    };
    const int helpers = std::min(threads_ - 1, tasks - 1);
    Eigen::Barrier done(static_cast<unsigned>(std::max(0, helpers)));
    for (int h = 0; h < helpers; ++h)
      pool_.Schedule([&] {
        drain();
        done.Notify();
      });
    drain();
    done.Wait();
  }

 private:
  Eigen::ThreadPool pool_;
  int threads_;
};

// `work` dependent multiply-adds: a fixed amount of time per task that the compiler cannot fold.
float task_work(int i, int work) {
  float x = static_cast<float>(i);
  for (int k = 0; k < work; ++k) x = x * 0.999f + 1.0f;
  return x;
}

void BM_ParallelFor(benchmark::State& state) {
  const bool eigen = state.range(0) == 1;
  const int threads = static_cast<int>(state.range(1));
  const int tasks = static_cast<int>(state.range(2));
  const int work = static_cast<int>(state.range(3));
  std::vector<float> out(static_cast<std::size_t>(tasks) * 16);  // a line per task: no false sharing
  auto body = [&](int i) { out[static_cast<std::size_t>(i) * 16] = task_work(i, work); };
  if (eigen) {
    EigenParallelFor pool(threads);
    for (auto _ : state) pool(tasks, body);
  } else {
    memoryformer::detail::ThreadPool pool(threads);
    for (auto _ : state) pool.parallel_for(tasks, body);
  }
  benchmark::DoNotOptimize(out.data());
  state.SetLabel(eigen ? "Eigen::ThreadPool" : "memoryformer ThreadPool");
}

void pool_args(benchmark::internal::Benchmark* b) {
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int> threads = {2, hardware};
  threads.erase(std::unique(threads.begin(), threads.end()), threads.end());
  for (int pool : {0, 1})
    for (int t : threads)
      for (int tasks : {t, 8 * t})
        for (int work : {0, 2000}) b->Args({pool, t, tasks, work});
  b->ArgNames({"pool", "threads", "tasks", "work"});
  b->UseRealTime();
}

}  // namespace

BENCHMARK(BM_ParallelFor)->Apply(pool_args);
