# Builds and runs tests/consumer/project the way an outside user would (cmake -P script).
# MODE=find_package: install this build into a staging prefix, then find_package(MemoryFormer).
# MODE=add_subdirectory: pull the source tree in with add_subdirectory.
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer test (${MODE}) failed at: ${ARGV}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(args -S ${CMAKE_CURRENT_LIST_DIR}/project -B ${WORK_DIR}/build -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
         -DCMAKE_BUILD_TYPE=Release)
if(MODE STREQUAL "find_package")
  run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/stage)
  list(APPEND args -DCMAKE_PREFIX_PATH=${WORK_DIR}/stage)
else()
  list(APPEND args -DMF_SOURCE_DIR=${SOURCE_DIR})
endif()
run(${CMAKE_COMMAND} ${args})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/consumer)
run(${WORK_DIR}/build/core_only)
