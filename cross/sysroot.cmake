# Shared by toolchain files whose target libraries come from a Debian root made with
# debootstrap (OUTPOST_CROSS_SYSROOT, made by cross/build) instead of multiarch -dev
# packages. Multiarch needs the target's copy of every library at exactly the build
# machine's version; a mirror whose security index for the target lags (seen for armhf)
# cannot give that, while a debootstrapped root is consistent in itself.
set(CMAKE_C_COMPILER ${OUTPOST_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${OUTPOST_CROSS_TRIPLE}-g++)
set(CMAKE_LIBRARY_ARCHITECTURE ${OUTPOST_CROSS_TRIPLE})
if(NOT EXISTS ${OUTPOST_CROSS_SYSROOT}/usr/include/sqlite3.h)
  message(FATAL_ERROR "no ${OUTPOST_CROSS_TRIPLE} root at ${OUTPOST_CROSS_SYSROOT}: "
                      "run cross/build ${OUTPOST_DEB_ARCH}, which makes it")
endif()
set(CMAKE_SYSROOT ${OUTPOST_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH ${OUTPOST_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(ENV{PKG_CONFIG_SYSROOT_DIR} ${OUTPOST_CROSS_SYSROOT})
set(ENV{PKG_CONFIG_LIBDIR}
    ${OUTPOST_CROSS_SYSROOT}/usr/lib/${OUTPOST_CROSS_TRIPLE}/pkgconfig:${OUTPOST_CROSS_SYSROOT}/usr/share/pkgconfig)
set(Protobuf_PROTOC_EXECUTABLE /usr/bin/protoc CACHE FILEPATH "protoc of the build machine")
# The root's own loader and libraries, all of one build: qemu-user runs binaries from it.
set(CMAKE_CROSSCOMPILING_EMULATOR ${OUTPOST_CROSS_QEMU};-L;${OUTPOST_CROSS_SYSROOT})
# The Depends of the package: dpkg-shlibdeps cannot look the root's libraries up in this
# machine's dpkg database, so they are named here (the same as arm64's, which
# dpkg-shlibdeps computes); tests/deploy/package_test.sh runs the armhf agent from a root
# that holds exactly these.
set(OUTPOST_DEB_DEPENDS
    "passwd, libc6 (>= 2.34), libfmt9, libgcc-s1, libmbedcrypto7, libmbedtls14, libmbedx509-1, libpaho-mqtt1.3, libpaho-mqttpp3-1, libprotobuf32, libspdlog1.10, libsqlite3-0, libstdc++6, libtomlplusplus3, libzstd1")
