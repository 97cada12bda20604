# Compiles SOURCE twice: as is it must fail with EXPECT in the compiler's messages; with
# -D${COMPLETE_DEFINE} it must compile, so that a failure for another reason cannot pass.
# Arguments: CXX, SOURCE, INCLUDES (|-separated), EXPECT, COMPLETE_DEFINE.
string(REPLACE "|" ";" include_dirs "${INCLUDES}")
list(TRANSFORM include_dirs PREPEND "-I")
execute_process(COMMAND ${CXX} -std=c++17 -fsyntax-only -D${COMPLETE_DEFINE} ${include_dirs} ${SOURCE}
                ERROR_VARIABLE errors RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${SOURCE} with -D${COMPLETE_DEFINE} should compile, but:\n${errors}")
endif()
execute_process(COMMAND ${CXX} -std=c++17 -fsyntax-only ${include_dirs} ${SOURCE}
                ERROR_VARIABLE errors RESULT_VARIABLE status)
if(status EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it should be refused with: ${EXPECT}")
endif()
string(FIND "${errors}" "${EXPECT}" found)
if(found EQUAL -1)
  message(FATAL_ERROR "${SOURCE} was refused, but without naming \"${EXPECT}\":\n${errors}")
endif()
