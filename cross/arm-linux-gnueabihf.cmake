# Cross-compiling for 32-bit ARM with hardware floating point (armhf, e.g. Raspberry Pi OS
# 32-bit), with Debian's cross compiler and multiarch -dev packages (cross/build armhf).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(OUTPOST_CROSS_TRIPLE arm-linux-gnueabihf)
set(OUTPOST_CROSS_QEMU qemu-arm)
set(OUTPOST_DEB_ARCH armhf)  # for the packages (cmake/packaging.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/multiarch.cmake)
