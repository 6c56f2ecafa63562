# Install rules and the Debian packages (CPack DEB, one package per component):
#   outpost-agent    the agent, its hardened systemd unit and /etc/outpost/agent.toml
#   outpost-gateway  the gateway, its unit and /etc/outpost/gateway.toml (when it is built)
# deploy/package ARCH builds them and the agent's tarball; docs/install.md uses them.
# Destinations are relative to CPACK_PACKAGING_INSTALL_PREFIX "/" so that the packages hold
# /usr/bin, /etc and /lib/systemd; `cmake --install --prefix STAGE` gives the same tree.


if(CMAKE_CROSSCOMPILING)
  set(outpost_deb_arch "${OUTPOST_DEB_ARCH}")  # set by the toolchain file
else()
  execute_process(COMMAND dpkg --print-architecture OUTPUT_VARIABLE outpost_deb_arch
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
endif()

set(outpost_components agent)
if(OUTPOST_BUILD_GATEWAY)
  list(APPEND outpost_components gateway)
endif()

foreach(component IN LISTS outpost_components)
  set(PACKAGE outpost-${component})
  set(SERVICE outpost-${component}.service)
  if(component STREQUAL "agent")
    set(USER outpost)
    set(STATE_DIR /var/lib/outpost)
  else()
    set(USER outpost-gateway)
    set(STATE_DIR /var/lib/outpost-gateway)
  endif()
  set(scripts_dir "${CMAKE_CURRENT_BINARY_DIR}/deb/${component}")
  foreach(script postinst prerm postrm)
    configure_file("${CMAKE_CURRENT_SOURCE_DIR}/deploy/debian/${script}.in"
                   "${scripts_dir}/${script}" @ONLY
                   FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
                                    GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  endforeach()
  file(WRITE "${scripts_dir}/conffiles" "/etc/outpost/${component}.toml\n")

  install(TARGETS outpost-${component} RUNTIME DESTINATION usr/bin COMPONENT ${component})
  install(FILES "deploy/${component}.toml" DESTINATION etc/outpost COMPONENT ${component})
  install(FILES "deploy/systemd/outpost-${component}.service"
          DESTINATION lib/systemd/system COMPONENT ${component})
  install(FILES docs/install.md docs/configuration.md docs/contracts.md
          DESTINATION usr/share/doc/outpost-${component} COMPONENT ${component})
  # The default payload contracts (docs/contracts.md): the gateway validates against them, the
  # agent with edge validation. One copy per package, so that both can be installed.
  install(FILES "${OUTPOST_DESCRIPTOR_SET}" DESTINATION usr/share/outpost-${component}/contracts
          COMPONENT ${component})

  string(TOUPPER ${component} C)
  set(CPACK_DEBIAN_${C}_PACKAGE_NAME outpost-${component})
  set(CPACK_DEBIAN_${C}_FILE_NAME DEB-DEFAULT)
  set(CPACK_DEBIAN_${C}_PACKAGE_CONTROL_EXTRA
      "${scripts_dir}/postinst;${scripts_dir}/prerm;${scripts_dir}/postrm;${scripts_dir}/conffiles")
  set(CPACK_DEBIAN_${C}_PACKAGE_CONTROL_STRICT_PERMISSION ON)
endforeach()
set(CPACK_DEBIAN_AGENT_DESCRIPTION
    "Outpost edge agent\n Collects tracking-pixel hits, JSON events and MQTT sensor readings,\n buffers them durably in SQLite and forwards them to an Outpost gateway\n over mutual TLS.")
set(CPACK_DEBIAN_GATEWAY_DESCRIPTION
    "Outpost gateway\n Receives events from Outpost agents over mutual TLS, drops duplicates\n and writes them to Kafka or to local compressed files.")

set(CPACK_GENERATOR DEB)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL ${outpost_components})
set(CPACK_PACKAGE_NAME outpost)
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")  # deploy/package may set another
set(CPACK_PACKAGE_CONTACT "Outpost maintainers <outpost@example.org>")
set(CPACK_PACKAGING_INSTALL_PREFIX "/")
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGE_DIRECTORY "${CMAKE_BINARY_DIR}/packages")
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE "${outpost_deb_arch}")
if(OUTPOST_DEB_DEPENDS)  # a sysroot build (cross/sysroot.cmake) names them
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "${OUTPOST_DEB_DEPENDS}")
else()
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # Depends: from the binaries' NEEDED libraries
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "passwd")  # groupadd, useradd in postinst
endif()
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://github.com/outpost-project/outpost")
include(CPack)
