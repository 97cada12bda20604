// Weight files: safetensors reading (copied or mapped) and atomic writing with xxHash checksums,
// model save/load, the JSON they record configs in (docs/method.md §5), and tokenised datasets. POSIX file and mmap
// calls and xxHash live here only (CMake: MemoryFormer::io).
#pragma once

#include "atomic_file.hpp"
#include "checkpoint.hpp"
#include "json.hpp"
#include "model_file.hpp"
#include "safetensors.hpp"
#include "token_dataset.hpp"
