# Compiles each SIMD row kernel (prefetch_kept.cpp) to assembly at the usual optimisation levels and
# fails if one has lost its software prefetches. GCC 12 at -O2 once deleted them all without a
# warning (the helper looked "pure" to it); results stay right, batch-1 latency rose by 70%, so no
# numerical test can see it. Arguments: CXX, SOURCE, INCLUDES (|-separated).
string(REPLACE "|" ";" include_dirs "${INCLUDES}")
list(TRANSFORM include_dirs PREPEND "-I")
set(kernels "avx512::gather<int8>" "avx512::scatter" "avx2::gather<int8>" "avx2::scatter")
set(failures "")
foreach(level -O1 -O2 -Os)
  foreach(index RANGE 3)
    list(GET kernels ${index} name)
    execute_process(
      COMMAND ${CXX} -std=c++17 ${level} -DMF_KERNEL_UNDER_TEST=${index} ${include_dirs} -S -o - ${SOURCE}
      OUTPUT_VARIABLE assembly ERROR_VARIABLE errors RESULT_VARIABLE status)
    if(NOT status EQUAL 0)
      message(FATAL_ERROR "compiling ${name} at ${level} failed:\n${errors}")
    endif()
    if(NOT assembly MATCHES "[ \t]prefetch(t0|t1|t2|nta|w)[ \t]")
      list(APPEND failures "${name} at ${level}")
    endif()
  endforeach()
endforeach()
if(failures)
  list(JOIN failures ", " failures)
  message(FATAL_ERROR "no prefetch instruction left in: ${failures}")
endif()
