// MemoryFormer (Ding et al., NeurIPS 2024) on Eigen: everything the library offers.
#pragma once

#include "attention.hpp"
#include "config.hpp"
#include "embedding.hpp"
#include "flops.hpp"
#include "hash_bucket.hpp"
#include "kernel_path.hpp"
#include "linear.hpp"
#include "loss.hpp"
#include "memory_layer.hpp"
#include "norm.hpp"
#include "optim.hpp"
#include "parameter.hpp"
#include "rotary.hpp"
#include "threading.hpp"
