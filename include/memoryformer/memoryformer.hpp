// MemoryFormer (Ding et al., NeurIPS 2024) on Eigen: everything the library offers, the core
// (core.hpp) and weight files (io/io.hpp). CMake: MemoryFormer::memoryformer.
#pragma once

#include "core.hpp"
#include "io/io.hpp"
