# The headers' layering: no header under a detail/ folder includes a public header that itself
# includes a detail/ header, so that the computation in detail/ sits above the public types it
# uses and never points back up into a layer that depends on it. The platform headers (platform/:
# thread pool, CPU features, aligned buffers, float16, KernelPath) lie below everything.
# Arguments: INCLUDE_DIR (the include/ folder).
file(GLOB_RECURSE headers RELATIVE ${INCLUDE_DIR} ${INCLUDE_DIR}/memoryformer/*.hpp ${INCLUDE_DIR}/memoryformer/*.inc)

# The headers `header` includes with quotes, as paths relative to INCLUDE_DIR.
function(quoted_includes header out)
  file(STRINGS ${INCLUDE_DIR}/${header} lines REGEX "^#include \"")
  get_filename_component(dir ${header} DIRECTORY)
  set(result "")
  foreach(line IN LISTS lines)
    string(REGEX REPLACE "^#include \"([^\"]+)\".*" "\\1" target "${line}")
    get_filename_component(path ${INCLUDE_DIR}/${dir}/${target} ABSOLUTE)
    file(RELATIVE_PATH path ${INCLUDE_DIR} ${path})
    list(APPEND result ${path})
  endforeach()
  set(${out} ${result} PARENT_SCOPE)
endfunction()

set(violations "")
foreach(header IN LISTS headers)
  if(NOT header MATCHES "/detail/")
    continue()
  endif()
  quoted_includes(${header} targets)
  foreach(target IN LISTS targets)
    if(target MATCHES "/detail/")
      continue()
    endif()
    quoted_includes(${target} below)
    foreach(b IN LISTS below)
      if(b MATCHES "/detail/")
        string(APPEND violations "  ${header} -> ${target} -> ${b}\n")
      endif()
    endforeach()
  endforeach()
endforeach()
if(violations)
  message(FATAL_ERROR "detail/ headers include public headers that include detail/ again:\n${violations}")
endif()
list(LENGTH headers count)
message(STATUS "check_layering: ${count} headers, no detail/ header points back up")
