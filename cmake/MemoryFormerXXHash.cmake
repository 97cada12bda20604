# Debian's xxHash ships a header and a pkg-config file but no CMake config. The library uses it
# header-only (XXH_INLINE_ALL), so the imported target carries just the include directory.
if(NOT TARGET MemoryFormer::xxhash)
  find_package(PkgConfig QUIET)
  if(PkgConfig_FOUND)
    pkg_check_modules(MF_PC_XXHASH QUIET libxxhash)
  endif()
  find_path(MF_XXHASH_INCLUDE_DIR xxhash.h HINTS ${MF_PC_XXHASH_INCLUDE_DIRS})
  if(NOT MF_XXHASH_INCLUDE_DIR)
    message(FATAL_ERROR "MemoryFormer needs xxhash.h (Debian: apt-get install libxxhash-dev); "
                        "set MF_XXHASH_INCLUDE_DIR to the folder that holds it")
  endif()
  add_library(MemoryFormer::xxhash INTERFACE IMPORTED)
  set_target_properties(MemoryFormer::xxhash PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${MF_XXHASH_INCLUDE_DIR}")
endif()
