#include "agent/buffer/buffer.hpp"

#include <memory>

#include "common/error_category.hpp"

namespace outpost::agent {
namespace {

const char* describe(buffer_errc e) {
  switch (e) {
    case buffer_errc::full:
      return "buffer full";
    case buffer_errc::disk_full:
      return "disk full";
    case buffer_errc::queue_full:
      return "buffer write queue full";
    case buffer_errc::closed:
      return "buffer closed";
    case buffer_errc::corrupt:
      return "buffer file corrupt";
    case buffer_errc::newer_schema:
      return "buffer file from a newer version";
    case buffer_errc::io:
      return "buffer I/O error";
    case buffer_errc::not_found:
      return "buffer file not found";
    case buffer_errc::busy:
      return "buffer busy";
    case buffer_errc::key_missing:
      return "buffer key missing";
  }
  return nullptr;
}

}  // namespace

const std::error_category& buffer_category() {
  static const EnumCategory<buffer_errc> category("outpost.buffer", describe);
  return category;
}

std::string_view drop_reason_name(DropReason r) {
  switch (r) {
    case DropReason::rejected_full:
      return "rejected_full";
    case DropReason::evicted_full:
      return "evicted_full";
    case DropReason::expired:
      return "expired";
    case DropReason::purged:
      return "purged";
    case DropReason::disk_full:
      return "disk_full";
    case DropReason::queue_full:
      return "queue_full";
    case DropReason::closed:
      return "closed";
    case DropReason::write_failed:
      return "write_failed";
    case DropReason::corrupt:
      return "corrupt";
    case DropReason::tampered:
      return "tampered";
  }
  return "unknown";
}

std::optional<DropReason> drop_reason_from_name(std::string_view name) {
  for (int r = 0; r < kDropReasonCount; ++r) {
    if (drop_reason_name(static_cast<DropReason>(r)) == name) return static_cast<DropReason>(r);
  }
  return std::nullopt;
}

std::future<Result<AppendResult>> Buffer::append(std::vector<NewEvent> events, Commit when) {
  auto promise = std::make_shared<std::promise<Result<AppendResult>>>();
  auto future = promise->get_future();
  append(
      std::move(events), [promise](const Result<AppendResult>& r) { promise->set_value(r); }, when);
  return future;
}

}  // namespace outpost::agent
