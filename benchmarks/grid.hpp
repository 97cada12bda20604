// Which grid of points a run measures, from MF_BENCH_GRID (benchmarks/run.sh sets it):
//   quick     the main job's (scripts/run.sh): the headline's points, so that a newcomer sees them
//             within minutes; blocks at d 1024 on 2 threads only, whole models at the tiny size only;
//   unset     the README's run: the same layers, blocks at d 512 and 1024 on 1 and 2 threads,
//             models up to MF-base;
//   full      the whole grid of layers (N, d, tau, cold; hours); blocks and models as unset.
// Any other value stops the program with a message rather than measuring a grid nobody asked for.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

namespace mf_bench {

enum class Grid { quick, standard, full };

inline Grid bench_grid() {
  const char* value = std::getenv("MF_BENCH_GRID");
  if (value == nullptr || *value == '\0') return Grid::standard;
  const std::string name(value);
  if (name == "quick") return Grid::quick;
  if (name == "full") return Grid::full;
  std::fprintf(stderr, "MF_BENCH_GRID=\"%s\": expected quick, full or unset\n", value);
  std::exit(2);
}

}  // namespace mf_bench
