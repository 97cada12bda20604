// MemoryFormer (Ding et al., NeurIPS 2024) on Eigen: everything the library offers.
#pragma once

#include "config.hpp"
#include "flops.hpp"
#include "hash_bucket.hpp"
#include "kernel_path.hpp"
#include "memory_layer.hpp"
#include "threading.hpp"
