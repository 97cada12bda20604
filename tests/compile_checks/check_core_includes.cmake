# memoryformer/core.hpp must reach no header of io/ or distributed/, nor xxhash.h or mpi.h: the core
# target links neither xxHash (MemoryFormer::io does) nor MPI (MemoryFormer::mpi does). Lists the
# headers the compiler opens for core.hpp (-M).
# Arguments: CXX, HEADER, INCLUDES (|-separated).
string(REPLACE "|" ";" include_dirs "${INCLUDES}")
list(TRANSFORM include_dirs PREPEND "-I")
execute_process(COMMAND ${CXX} -std=c++17 -x c++ -M ${include_dirs} ${HEADER}
                OUTPUT_VARIABLE deps ERROR_VARIABLE errors RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "listing the includes of ${HEADER} failed:\n${errors}")
endif()
if(NOT deps MATCHES "memory_layer\\.hpp")
  message(FATAL_ERROR "the include list of ${HEADER} lacks memory_layer.hpp, so it is not the core:\n${deps}")
endif()
foreach(forbidden "memoryformer/io/" "xxhash\\.h" "memoryformer/distributed/" "/mpi\\.h")
  if(deps MATCHES "${forbidden}")
    message(FATAL_ERROR "${HEADER} includes ${forbidden}, which belongs to MemoryFormer::io or MemoryFormer::mpi:\n${deps}")
  endif()
endforeach()
