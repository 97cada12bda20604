# Every documentation file the sources cite as docs/<name>.md must exist, and every section they
# cite as "docs/<name>.md §N" (or "§N, §M") must have a heading in it ("## N. Title"). Scans the
# headers, tests, tools, benchmarks and examples, README.md and docs/*.md. Prints each broken
# citation as FILE:LINE and fails. Argument: SOURCE_DIR, the repository root.
cmake_minimum_required(VERSION 3.25)

if(NOT IS_DIRECTORY "${SOURCE_DIR}/include")
  message(FATAL_ERROR "check_doc_citations: SOURCE_DIR = '${SOURCE_DIR}', expected the repository root")
endif()

file(GLOB_RECURSE sources RELATIVE "${SOURCE_DIR}"
  "${SOURCE_DIR}/include/*" "${SOURCE_DIR}/tests/*" "${SOURCE_DIR}/tools/*"
  "${SOURCE_DIR}/benchmarks/*" "${SOURCE_DIR}/examples/*")
list(FILTER sources INCLUDE REGEX "(\\.(hpp|h|cpp|inc|py|sh|cmake)|CMakeLists\\.txt)$")
file(GLOB docs RELATIVE "${SOURCE_DIR}" "${SOURCE_DIR}/docs/*.md")
list(APPEND sources README.md ${docs})
list(SORT sources)

# A cited path, optionally in backticks, optionally followed by sections.
set(citation "docs/[A-Za-z0-9_.-]+\\.md`? ?(§[0-9]+(, §[0-9]+)*)?")
set(broken "")
set(checked 0)

foreach(source IN LISTS sources)
  file(READ "${SOURCE_DIR}/${source}" rest)
  set(line 1)
  while(TRUE)
    string(REGEX MATCH "${citation}" match "${rest}")
    if(match STREQUAL "")
      break()
    endif()
    # Where the match starts, to count the lines before it.
    string(FIND "${rest}" "${match}" position)
    string(SUBSTRING "${rest}" 0 ${position} before)
    string(REGEX MATCHALL "\n" newlines "${before}")
    list(LENGTH newlines count)
    math(EXPR line "${line} + ${count}")
    string(LENGTH "${match}" length)
    math(EXPR position "${position} + ${length}")
    string(SUBSTRING "${rest}" ${position} -1 rest)
    math(EXPR checked "${checked} + 1")

    string(REGEX MATCH "^docs/[A-Za-z0-9_.-]+\\.md" cited "${match}")
    if(NOT EXISTS "${SOURCE_DIR}/${cited}")
      list(APPEND broken "${source}:${line}: ${cited} does not exist")
      continue()
    endif()
    string(REGEX MATCHALL "§[0-9]+" sections "${match}")
    if(sections)
      file(READ "${SOURCE_DIR}/${cited}" text)
      foreach(section IN LISTS sections)
        string(REPLACE "§" "" number "${section}")
        if(NOT text MATCHES "(^|\n)#+ +(§)?${number}[. ]")
          list(APPEND broken "${source}:${line}: ${cited} §${number}: ${cited} has no heading for section ${number}")
        endif()
      endforeach()
    endif()
  endwhile()
endforeach()

if(broken)
  foreach(entry IN LISTS broken)
    message(NOTICE "${entry}")
  endforeach()
  list(LENGTH broken count)
  message(FATAL_ERROR "${count} broken documentation citation(s), listed above")
endif()
list(LENGTH sources files)
message(STATUS "check_doc_citations: ${checked} citations in ${files} files resolve")
