// Results do not depend on the thread count, forward is safe from several threads, and the pool
// runs each task exactly once, also when called concurrently or from inside a task.
#include "test_support.hpp"

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>

namespace {

// Restores the default thread count after each test.
class Threads : public test::PathTest {
 protected:
  void TearDown() override {
    mf::set_num_threads(0);
    test::PathTest::TearDown();
  }
};

mf::MemoryLayerOptions options(int in, int out, int tau) {
  mf::MemoryLayerOptions o;
  o.in_dim = in;
  o.out_dim = out;
  o.tau = tau;
  o.score = mf::Score::l1;
  return o;
}

TEST_P(Threads, ForwardAndBackwardAreIdenticalForAnyThreadCount) {
  // Each output column is the same sequence of multiply-adds however the work is split, so the
  // results must agree bit for bit. N = 1 splits columns, N = 300 splits tokens, N = 40 runs the
  // backward by code with threads owning tables (all above the size where calls stay on one
  // thread: K * h = 128 * 1100 multiply-adds per token).
  for (int n : {1, 40, 300}) {
    const auto x = test::random_matrix<float>(n, 512, static_cast<unsigned>(n), 0.01, 1.0);
    const auto dy = test::random_matrix<float>(n, 1100, 7u);
    mf::MemoryLayer<float> layer(options(512, 1100, 4));
    mf::RowMatrix<float> y1, dx1, g1;
    for (int threads : {1, 2, 3, 5}) {
      mf::set_num_threads(threads);
      layer.zero_grad();
      const mf::RowMatrix<float> y = layer.forward(x);
      const mf::RowMatrix<float> dx = layer.backward(x, dy);
      if (threads == 1) {
        y1 = y, dx1 = dx, g1 = layer.table_grad();
        continue;
      }
      EXPECT_EQ(y, y1) << threads << " threads, N " << n;
      EXPECT_EQ(dx, dx1) << threads << " threads, N " << n;
      EXPECT_EQ(layer.table_grad(), g1) << threads << " threads, N " << n;
    }
  }
}

TEST_P(Threads, OneTokenIsTheSameOnAnyThreadCountInEveryStorage) {
  // The decode path (one token, its columns split across threads) for every table type and
  // layout: the same bits on 1, 2, 3 and 5 threads, and the reference sum of the stored values.
  const mf::MemoryLayer<float> trained(options(512, 1100, 4));
  const auto x = test::random_matrix<float>(1, 512, 31u, 0.01, 1.0);
  for (mf::TableType type : {mf::TableType::fp32, mf::TableType::bf16, mf::TableType::int8})
    for (mf::TableLayout layout : {mf::TableLayout::rows, mf::TableLayout::tiles}) {
      const mf::MemoryLayer<float> stored = trained.compressed(type, layout);
      mf::MemoryLayer<float> values = trained;  // trainable, holding the stored values
      values.tables() = stored.table_values();
      mf::RowMatrix<float> y1;
      for (int threads : {1, 2, 3, 5}) {
        mf::set_num_threads(threads);
        const mf::RowMatrix<float> y = stored.forward(x);
        if (threads == 1) {
          y1 = y;
          EXPECT_LT(test::relative_error(y, test::reference_forward(x, values)), 1e-5)
              << mf::to_string(type) << " in " << mf::to_string(layout);
          continue;
        }
        EXPECT_EQ(y, y1) << threads << " threads, " << mf::to_string(type) << " in " << mf::to_string(layout);
      }
    }
}

TEST_P(Threads, HashOfABatchIsEachRowsHashForAnyThreadCount) {
  // Rows are split across threads (301 rows of 96 values are above the one-thread size), in the
  // hash and in its backward; each row must come out as it does alone. A new input per thread
  // count, so that a row left unwritten cannot hold the previous call's answer.
  const mf::SignHash<float> hash(96, 8, mf::Score::l1, 0.7f);
  for (int threads : {1, 2, 3}) {
    const auto seed = 17u + static_cast<unsigned>(threads);
    const auto x = test::random_matrix<float>(301, 96, seed);
    const auto dscores = test::random_matrix<float>(301, hash.num_chunks(), seed + 100);
    mf::set_num_threads(threads);
    const mf::Buckets<float> batch = hash(x);
    const mf::RowMatrix<float> dx = hash.backward(x, dscores);
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      const mf::Buckets<float> alone = hash(x.row(i));
      ASSERT_EQ(batch.codes.row(i), alone.codes) << threads << " threads, row " << i;
      ASSERT_EQ(batch.scores.row(i), alone.scores) << threads << " threads, row " << i;
      ASSERT_EQ(dx.row(i), hash.backward(x.row(i), dscores.row(i))) << threads << " threads, row " << i;
    }
  }
}

TEST_P(Threads, ConcurrentForwardCallsOnOneLayer) {
  mf::set_num_threads(2);
  const mf::MemoryLayer<float> layer(options(128, 200, 8));
  std::vector<mf::RowMatrix<float>> inputs, expected;
  for (unsigned i = 0; i < 4; ++i) {
    inputs.push_back(test::random_matrix<float>(40 + i, 128, i));
    expected.push_back(layer.forward(inputs.back()));
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> callers;
  for (std::size_t i = 0; i < inputs.size(); ++i)
    callers.emplace_back([&, i] {
      for (int repeat = 0; repeat < 20; ++repeat)
        if (layer.forward(inputs[i]) != expected[i]) ++mismatches;
    });
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

MF_INSTANTIATE_ON_ALL_PATHS(Threads);

TEST(ThreadPool, RunsEveryTaskExactlyOnce) {
  mf::detail::ThreadPool pool(3);
  for (int tasks : {1, 2, 3, 7, 100}) {
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(tasks));
    pool.parallel_for(tasks, [&](int i) { ++hits[static_cast<std::size_t>(i)]; });
    for (int i = 0; i < tasks; ++i)
      EXPECT_EQ(hits[static_cast<std::size_t>(i)].load(), 1) << tasks << " tasks";
  }
}

TEST(ThreadPool, NestedAndConcurrentCallsComplete) {
  mf::detail::ThreadPool pool(2);
  std::atomic<int> count{0};
  pool.parallel_for(4, [&](int) { pool.parallel_for(5, [&](int) { ++count; }); });
  EXPECT_EQ(count.load(), 20);
  count = 0;
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c)
    callers.emplace_back([&] {
      for (int r = 0; r < 200; ++r) pool.parallel_for(4, [&](int) { ++count; });
    });
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(count.load(), 3 * 200 * 4);
}

TEST(ThreadPool, NumThreadsFollowsTheSetting) {
  mf::set_num_threads(3);
  EXPECT_EQ(mf::num_threads(), 3);
  mf::set_num_threads(0);
  EXPECT_EQ(mf::num_threads(), mf::detail::hardware_threads());
}

TEST(ThreadPool, AThrowingTaskReachesTheCallerAndThePoolStaysUsable) {
  mf::detail::ThreadPool pool(3);
  // Thrown by a worker's task, by the caller's, by the only task (run serially), and from a nested
  // call (also serial): each must reach this thread, and the next job must run every task.
  for (int tasks : {1, 2, 7, 100})
    for (int thrower : {0, tasks - 1}) {
      EXPECT_THROW(pool.parallel_for(tasks,
                                     [&](int i) {
                                       if (i == thrower) throw std::runtime_error("task failed");
                                     }),
                   std::runtime_error)
          << tasks << " tasks, task " << thrower << " throws";
      std::atomic<int> ran{0};
      pool.parallel_for(tasks, [&](int) { ++ran; });
      EXPECT_EQ(ran.load(), tasks);
    }
  EXPECT_THROW(pool.parallel_for(4, [&](int) { pool.parallel_for(2, [](int) { throw std::bad_alloc(); }); }),
               std::bad_alloc);
}

TEST(Context, TwoModelsWithDifferentThreadCountsRunSideBySide) {
  const mf::MemoryLayerOptions o = options(256, 300, 8);
  mf::MemoryLayer<float> one(o), three(o);
  one.set_context(mf::Context(1));
  three.set_context(mf::Context(3));
  EXPECT_EQ(one.context().num_threads(), 1);
  EXPECT_EQ(three.context().num_threads(), 3);
  const auto x = test::random_matrix<float>(300, 256, 5u);
  mf::set_num_threads(1);
  const mf::RowMatrix<float> expected = mf::MemoryLayer<float>(o).forward(x);
  mf::set_num_threads(0);
  std::atomic<int> mismatches{0};
  std::thread a([&] {
    for (int r = 0; r < 10; ++r)
      if (one.forward(x) != expected) ++mismatches;
  });
  std::thread b([&] {
    for (int r = 0; r < 10; ++r)
      if (three.forward(x) != expected) ++mismatches;
  });
  a.join();
  b.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// Two whole models, each on a context of its own, run side by side while this test holds the
// default context's lock: neither forward nor backward nor an optimizer step looks up the default
// context. A module on the default context, once its thread has read it, takes no lock either.
TEST(Context, ModelsWithTheirOwnContextsTakeNoProcessWideLock) {
  mf::ModelConfig c;
  c.vocab_size = 17;
  c.d_model = 32;
  c.n_heads = 2;
  c.n_layers = 2;
  c.tau = 4;
  using Model = mf::MemoryFormerModel<float>;
  Model one(c), three(c), shared(c);
  one.set_context(mf::Context(1));
  three.set_context(mf::Context(3));
  const mf::TokenMatrix tokens = test::random_tokens(2, 12, c.vocab_size, 4u);
  const mf::RowMatrix<float> expected = shared.forward(tokens);
  // A training step of a model on `ctx`: forward, backward, AdamW on the same context.
  auto step = [&](Model& model) {
    auto params = model.parameters();
    mf::AdamW<float> optimizer(params);
    optimizer.set_context(model.context());
    Model::Saved saved;
    mf::RowMatrix<float> dlogits;
    mf::cross_entropy<float>(model.forward(tokens, &saved), tokens, &dlogits);
    model.backward(saved, dlogits);
    optimizer.step(params, 1e-3, mf::clip_scale(mf::global_grad_norm(params, model.context()), 1.0));
    return model.forward(tokens);
  };

  std::promise<void> warmed;
  std::promise<void> go;
  std::shared_future<void> started = go.get_future().share();
  std::future<mf::RowMatrix<float>> on_default = std::async(std::launch::async, [&] {
    shared.forward(tokens);  // this thread reads the default context once
    warmed.set_value();
    started.wait();
    return shared.forward(tokens);
  });
  warmed.get_future().wait();
  std::unique_lock<std::mutex> hold(mf::detail::default_context_holder().mutex);
  go.set_value();
  auto a = std::async(std::launch::async, [&] { return step(one); });
  auto b = std::async(std::launch::async, [&] { return step(three); });
  const auto limit = std::chrono::seconds(60);
  const bool done = a.wait_for(limit) == std::future_status::ready && b.wait_for(limit) == std::future_status::ready &&
                    on_default.wait_for(limit) == std::future_status::ready;
  hold.unlock();
  ASSERT_TRUE(done) << "a call waited on the default context's lock";
  EXPECT_EQ(on_default.get(), expected);
  const mf::RowMatrix<float> after_one = a.get(), after_three = b.get();
  EXPECT_EQ(after_one, after_three) << "the same step on 1 and 3 threads";
  EXPECT_NE(after_one, expected) << "the step changed the weights";
}

TEST(Context, RejectsANegativeThreadCount) {
  test::expect_error([] { mf::Context c(-2); }, {"threads", "-2"});
}

TEST(Partition, SplitsCoverTheRangeOnAlignedBoundaries) {
  for (int parts : {1, 2, 3, 7})
    for (Eigen::Index total : {1, 15, 16, 100, 1000}) {
      Eigen::Index next = 0;
      for (int i = 0; i < parts; ++i) {
        const auto r = mf::detail::split_range(total, parts, i, 16);
        EXPECT_EQ(r.begin, next);
        if (r.end != total) {
          EXPECT_EQ(r.end % 16, 0);
        }
        next = r.end;
      }
      EXPECT_EQ(next, total);
    }
}

// Small calls stay on the caller; larger ones get one task per thread, but no task less than
// kMinTaskWork: a decode-sized layer call (K * h = 128 * 1024 multiply-adds) wakes 4 of 16 threads.
TEST(Partition, TaskCountKeepsAMinimumOfWorkPerTask) {
  using mf::detail::task_count;
  EXPECT_EQ(task_count(1000.0, 100, 16), 1);
  EXPECT_EQ(task_count(128.0 * 1024, 64, 1), 1);
  EXPECT_EQ(task_count(128.0 * 1024, 64, 2), 2);
  EXPECT_EQ(task_count(128.0 * 1024, 64, 16), 4);
  EXPECT_EQ(task_count(128.0 * 1024, 3, 16), 3);
  EXPECT_EQ(task_count(4096.0 * 128 * 1024, 4096, 16), 16);
  for (double work : {65536.0, 100000.0, 1e6, 1e9})
    for (int threads : {2, 3, 8, 16}) {
      const int tasks = task_count(work, 1 << 20, threads);
      EXPECT_GE(tasks, 2) << work << " " << threads;
      EXPECT_LE(tasks, threads) << work << " " << threads;
      EXPECT_GE(work / tasks, mf::detail::kMinTaskWork) << work << " " << threads;
    }
}

}  // namespace
