# Cross-compiling for 64-bit ARM (arm64) with Debian's cross compiler and multiarch -dev
# packages (cross/build arm64 installs both). Libraries come from /usr/lib/aarch64-linux-gnu;
# code generators (protoc) run on the build machine; tests run under qemu-user.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(OUTPOST_CROSS_TRIPLE aarch64-linux-gnu)
set(OUTPOST_CROSS_QEMU qemu-aarch64)
set(OUTPOST_DEB_ARCH arm64)  # for the packages (cmake/packaging.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/multiarch.cmake)
