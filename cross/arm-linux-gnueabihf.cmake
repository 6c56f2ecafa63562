# Cross-compiling for 32-bit ARM with hardware floating point (armhf, e.g. Raspberry Pi OS
# 32-bit), with Debian's cross compiler and the armhf libraries of a debootstrapped Debian 12
# root in build/sysroot-armhf (cross/build armhf makes it; see cross/sysroot.cmake for why
# not multiarch).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(OUTPOST_CROSS_TRIPLE arm-linux-gnueabihf)
set(OUTPOST_CROSS_QEMU qemu-arm)
set(OUTPOST_DEB_ARCH armhf)  # for the packages (cmake/packaging.cmake)
get_filename_component(OUTPOST_CROSS_SYSROOT ${CMAKE_CURRENT_LIST_DIR}/../build/sysroot-armhf ABSOLUTE)
include(${CMAKE_CURRENT_LIST_DIR}/sysroot.cmake)
# GCC notes that the ABI of passing some structs changed in GCC 7.1: nothing built here
# mixes with code from before that.
set(CMAKE_CXX_FLAGS_INIT "-Wno-psabi")
