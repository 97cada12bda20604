// An environment variable's value for a benchmark's JSON context, or what its absence means.
#pragma once

#include <cstdlib>
#include <string>

namespace mf_bench {

inline std::string environment_or(const char* name, const char* unset) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : unset;
}

}  // namespace mf_bench
