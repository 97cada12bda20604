# Each snippet a consumer program marks with "// --- <doc>, ..." and "// --- end ---" appears in
# <doc> word for word (less the program's two-space indent): the documented code is code that
# builds and runs (tests/consumer). One snippet per program. Semicolons are swapped for a marker
# first, since CMake would split the text into a list at each. Argument: SOURCE_DIR.
set(programs tests/consumer/project/main.cpp tests/consumer/project/core_only.cpp)
set(checked 0)
foreach(program ${programs})
  file(READ ${SOURCE_DIR}/${program} text)
  string(REPLACE ";" "<semicolon>" text "${text}")
  string(REGEX MATCH "// --- [^,\n]+, [^\n]*\n.*// --- end ---" snippet "${text}")
  if(snippet)
    string(REGEX MATCH "// --- ([^,\n]+), " _ "${snippet}")
    set(doc ${CMAKE_MATCH_1})
    string(REGEX REPLACE "^// --- [^\n]*\n" "" body "${snippet}")
    string(REGEX REPLACE "[ ]*// --- end ---$" "" body "${body}")
    string(REPLACE "\n  " "\n" body "\n${body}")  # the first line too, hence the "\n"
    string(SUBSTRING "${body}" 1 -1 body)
    file(READ ${SOURCE_DIR}/${doc} doc_text)
    string(REPLACE ";" "<semicolon>" doc_text "${doc_text}")
    string(FIND "${doc_text}" "${body}" at)
    if(at EQUAL -1)
      message(FATAL_ERROR "${doc} lacks the snippet ${program} runs, or has changed it:\n${body}")
    endif()
    math(EXPR checked "${checked} + 1")
  endif()
endforeach()
if(NOT checked EQUAL 2)
  message(FATAL_ERROR "expected 2 marked snippets in ${programs}, found ${checked}")
endif()
