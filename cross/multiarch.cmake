# Shared by the toolchain files: Debian multiarch (the target's libraries and CMake/pkg-config
# files under /usr/lib/<triple>, headers under /usr/include), host programs, qemu-user.
set(CMAKE_C_COMPILER ${OUTPOST_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${OUTPOST_CROSS_TRIPLE}-g++)
set(CMAKE_LIBRARY_ARCHITECTURE ${OUTPOST_CROSS_TRIPLE})
# Find only the target's libraries and packages; programs (protoc) from the build machine.
set(CMAKE_FIND_ROOT_PATH /usr/${OUTPOST_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
set(CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/cmake)
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/${OUTPOST_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig)
set(Protobuf_PROTOC_EXECUTABLE /usr/bin/protoc CACHE FILEPATH "protoc of the build machine")
# ctest runs the target's test binaries under qemu-user. The target's dynamic loader and
# libraries are the multiarch ones (libc6:<arch>), under /; no `-L /usr/<triple>`: that
# would load the cross toolchain's libc next to the multiarch libstdc++ and friends, and
# with the two glibc builds mixed, pthread_create spins forever (seen with qemu 7.2).
set(CMAKE_CROSSCOMPILING_EMULATOR ${OUTPOST_CROSS_QEMU})
