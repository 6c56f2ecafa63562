#include "uplink/sink.hpp"

#include <cerrno>

#include "common/error_category.hpp"

namespace outpost::uplink {
namespace {

const char* describe(sink_errc e) {
  switch (e) {
    case sink_errc::unavailable:
      return "unavailable";
    case sink_errc::gap:
      return "gap";
    case sink_errc::io:
      return "io";
    case sink_errc::disk_full:
      return "disk_full";
    case sink_errc::queue_full:
      return "queue_full";
    case sink_errc::config:
      return "config";
  }
  return nullptr;
}

}  // namespace

const std::error_category& sink_category() {
  static const EnumCategory<sink_errc> category("outpost.sink", describe);
  return category;
}

const char* sink_error_name(const std::error_code& code) {
  if (code.category() != sink_category()) return "other";
  const char* name = describe(static_cast<sink_errc>(code.value()));
  return name != nullptr ? name : "other";
}

std::string describe_sink_error(const Error& error) {
  if (error.code.category() != sink_category()) return error.describe();
  return std::string(sink_error_name(error.code)) + ": " + error.describe();
}

sink_errc sink_errc_from_errno(int err) {
  return err == ENOSPC || err == EDQUOT ? sink_errc::disk_full : sink_errc::io;
}

}  // namespace outpost::uplink
