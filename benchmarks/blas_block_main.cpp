// memoryformer_bench_blas_block: block_bench.cpp built with EIGEN_USE_BLAS, so that every Eigen
// matrix product inside both blocks -- the dense block's projections and FFN, and attention in
// both -- is the system BLAS's sgemm (OpenBLAS on Debian) instead of Eigen's own GEMM. This is the
// dense block at its best on this machine. EIGEN_USE_BLAS changes what Eigen's products compile to,
// so it cannot share a program with the Eigen-GEMM benchmarks of memoryformer_bench.
//
// Both blocks run their products on the library's pool, several at once; OpenBLAS must therefore
// run single-threaded inside them (OPENBLAS_NUM_THREADS=1, which benchmarks/run.sh sets, with
// OPENBLAS_CORETYPE: OpenBLAS reads both when it is loaded, before main()).
#include "allocator.hpp"
#include "environment.hpp"

#include <memoryformer/memoryformer.hpp>

#include <benchmark/benchmark.h>

#include <iostream>

int main(int argc, char** argv) {
  try {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    keep_freed_memory_and_record_it();
    benchmark::AddCustomContext("eigen_products", "EIGEN_USE_BLAS (system BLAS sgemm)");
    benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
    benchmark::AddCustomContext("OPENBLAS_CORETYPE",
                                mf_bench::environment_or("OPENBLAS_CORETYPE", "unset (BLAS may run ~5x slow)"));
    benchmark::AddCustomContext(
        "OPENBLAS_NUM_THREADS",
        mf_bench::environment_or("OPENBLAS_NUM_THREADS", "unset (BLAS threads oversubscribe the pool)"));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
  } catch (const std::exception& e) {
    std::cerr << "memoryformer_bench_blas_block: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
