// The library's class templates the test files use most, instantiated once, in instantiations.cpp,
// instead of in every test file that names them: the heavy test files compile in about half the
// time. Instantiating a whole class also compiles every member, including those no test calls.
// Model<DenseBlock<T>> is left out: some of Model's members exist only for MemoryFormer blocks.
#pragma once

#include <memoryformer/memoryformer.hpp>

#ifndef MF_TEST_INSTANTIATE
#define MF_TEST_INSTANTIATE extern template
#endif

#define MF_TEST_INSTANTIATE_ALL(Scalar)                                          \
  MF_TEST_INSTANTIATE class memoryformer::Model<memoryformer::MemoryFormerBlock<Scalar>>; \
  MF_TEST_INSTANTIATE class memoryformer::MemoryFormerBlock<Scalar>;             \
  MF_TEST_INSTANTIATE class memoryformer::DenseBlock<Scalar>;                    \
  MF_TEST_INSTANTIATE class memoryformer::detail::RotaryAttention<Scalar>;       \
  MF_TEST_INSTANTIATE class memoryformer::CausalSelfAttention<Scalar>;           \
  MF_TEST_INSTANTIATE class memoryformer::KVCache<Scalar>;                       \
  MF_TEST_INSTANTIATE class memoryformer::MemoryLayer<Scalar>;                   \
  MF_TEST_INSTANTIATE class memoryformer::Linear<Scalar>;                        \
  MF_TEST_INSTANTIATE class memoryformer::Embedding<Scalar>;                     \
  MF_TEST_INSTANTIATE class memoryformer::LayerNorm<Scalar>;                     \
  MF_TEST_INSTANTIATE class memoryformer::RMSNorm<Scalar>;

MF_TEST_INSTANTIATE_ALL(float)
MF_TEST_INSTANTIATE_ALL(double)
