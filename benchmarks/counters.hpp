// Counters shared by the layer and block benchmarks (docs/performance.md's protocol). Rates are over
// real time; FLOPs count 2 per multiply-accumulate (the MACs of flops.hpp).
#pragma once

#include <benchmark/benchmark.h>

namespace mf_bench {

// time_per_token: elapsed / (iterations * tokens), in seconds (the console prints "19.6us");
// tokens_per_s: its inverse; FLOP_per_s: 2 * macs per call over real time.
inline void set_token_counters(benchmark::State& state, double tokens, double macs) {
  using Counter = benchmark::Counter;
  state.counters["time_per_token"] = Counter(tokens, Counter::kIsIterationInvariantRate | Counter::kInvert);
  state.counters["tokens_per_s"] = Counter(tokens, Counter::kIsIterationInvariantRate);
  state.counters["FLOP_per_s"] = Counter(2.0 * macs, Counter::kIsIterationInvariantRate);
}

// The token counters and bytes_per_s: `weight_bytes` read per call, over real time.
inline void set_counters(benchmark::State& state, double tokens, double macs, double weight_bytes) {
  using Counter = benchmark::Counter;
  set_token_counters(state, tokens, macs);
  state.counters["bytes_per_s"] = Counter(weight_bytes, Counter::kIsIterationInvariantRate, Counter::kIs1024);
}

}  // namespace mf_bench
