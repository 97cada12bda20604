// Weight files: safetensors reading (copied or mapped) and atomic writing with xxHash checksums,
// model save/load, and the JSON they record configs in (docs/method.md §5). POSIX file and mmap
// calls and xxHash live here only (CMake: MemoryFormer::io).
#pragma once

#include "atomic_file.hpp"
#include "json.hpp"
#include "model_file.hpp"
#include "safetensors.hpp"
