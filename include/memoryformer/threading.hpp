// num_threads() and set_num_threads(): the default context's thread count (context.hpp). This
// header is kept so that code including it keeps compiling.
#pragma once

#include "context.hpp"
