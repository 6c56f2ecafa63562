# Helpers shared by every folder: warnings and sanitizers as interface targets that each
# Outpost target links privately (never through CMAKE_CXX_FLAGS), a library helper, and a
# test helper that registers a doctest binary with CTest and its labels.

add_library(outpost_warnings INTERFACE)
target_compile_options(outpost_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow
                                                  -Wnon-virtual-dtor -Wconversion -Wno-sign-conversion)

add_library(outpost_sanitizers INTERFACE)
if(OUTPOST_SANITIZE)
  target_compile_options(outpost_sanitizers INTERFACE -fsanitize=${OUTPOST_SANITIZE}
                                                      -fno-omit-frame-pointer -fno-sanitize-recover=all)
  target_link_options(outpost_sanitizers INTERFACE -fsanitize=${OUTPOST_SANITIZE})
endif()

# outpost_library(NAME ALIAS SOURCES ... [PUBLIC_LIBS ...] [PRIVATE_LIBS ...])
function(outpost_library name)
  cmake_parse_arguments(arg "" "ALIAS" "SOURCES;PUBLIC_LIBS;PRIVATE_LIBS" ${ARGN})
  add_library(${name} STATIC ${arg_SOURCES})
  add_library(${arg_ALIAS} ALIAS ${name})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${arg_PUBLIC_LIBS} outpost_sanitizers
                                PRIVATE ${arg_PRIVATE_LIBS} outpost_warnings)
endfunction()

# outpost_executable(NAME SOURCES ... LIBS ...)
function(outpost_executable name)
  cmake_parse_arguments(arg "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${arg_SOURCES})
  target_link_libraries(${name} PRIVATE ${arg_LIBS} outpost_warnings outpost_sanitizers)
endfunction()

# outpost_test(NAME SOURCES ... LIBS ... LABELS level;capability [TIMEOUT s] [ARGS ...])
# Every test has a level label (unit, integration, e2e) and a capability label.
function(outpost_test name)
  cmake_parse_arguments(arg "" "TIMEOUT" "SOURCES;LIBS;LABELS;ARGS" ${ARGN})
  outpost_executable(${name} SOURCES ${arg_SOURCES} LIBS ${arg_LIBS} doctest::doctest)
  add_test(NAME ${name} COMMAND ${name} ${arg_ARGS})
  if(NOT arg_TIMEOUT)
    set(arg_TIMEOUT 300)
  endif()
  if(CMAKE_CROSSCOMPILING)
    list(APPEND arg_LABELS cross)  # built for ARM, run under qemu-user
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${arg_LABELS}" TIMEOUT ${arg_TIMEOUT})
endfunction()

# A test that runs the real programs: told where they are (OUTPOST_AGENT_BIN,
# OUTPOST_GATEWAY_BIN) and where the sources are (OUTPOST_SOURCE_DIR), and built after them.
# SKIPPABLE: exit code 77 means skipped (e.g. no permission to mount a tmpfs).
function(outpost_process_test name)
  cmake_parse_arguments(arg "SKIPPABLE" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  outpost_test(${name} SOURCES ${arg_SOURCES} LIBS ${arg_LIBS} LABELS ${arg_LABELS}
    TIMEOUT ${arg_TIMEOUT})
  if(arg_SKIPPABLE)
    set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77)
  endif()
  target_compile_definitions(${name} PRIVATE
    OUTPOST_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    OUTPOST_AGENT_BIN="$<TARGET_FILE:outpost-agent>"
    OUTPOST_GATEWAY_BIN="$<TARGET_FILE:outpost-gateway>")
  add_dependencies(${name} outpost-agent outpost-gateway)
endfunction()

# A target that reads the build's contracts (OUTPOST_DESCRIPTOR_SET, made by proto/): told
# where they are, and built after them.
function(outpost_use_descriptor_set target)
  target_compile_definitions(${target} PRIVATE OUTPOST_DESCRIPTOR_SET="${OUTPOST_DESCRIPTOR_SET}")
  add_dependencies(${target} outpost_descriptor_set)
endfunction()
