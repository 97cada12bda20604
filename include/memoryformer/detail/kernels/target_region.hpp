// Target regions: every function defined between MF_BEGIN_TARGET_<ISA> and MF_END_TARGET is compiled
// for that instruction set, as if it carried __attribute__((target(...))), templates included. The
// kernels are written once (vector_kernels.inc) and included in one region per ISA; a per-function
// attribute cannot do that, since the target cannot depend on a template argument. Never a global
// -mavx2: that would change Eigen's alignment ABI between translation units. Only code without Eigen
// goes in a region, and it runs only after CPUID allows (kernel_path.hpp).
#pragma once

#if defined(__clang__)
#define MF_BEGIN_TARGET_AVX2 \
  _Pragma("clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define MF_BEGIN_TARGET_AVX512 \
  _Pragma("clang attribute push(__attribute__((target(\"avx512f,avx2,fma\"))), apply_to = function)")
#define MF_END_TARGET _Pragma("clang attribute pop")
#else
#define MF_BEGIN_TARGET_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define MF_BEGIN_TARGET_AVX512 _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx2,fma\")")
#define MF_END_TARGET _Pragma("GCC pop_options")
#endif
