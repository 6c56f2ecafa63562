// Log lines carry a correct UTC time whatever the clock says, the epoch included (a device
// whose battery died boots at 1970-01-01T00:00:00; spdlog's own format printed 1900-01-00).
#include "common/log.hpp"

#include <doctest/doctest.h>

#include <chrono>

namespace {

std::string line_at(spdlog::formatter& f, std::chrono::nanoseconds since_epoch) {
  spdlog::details::log_msg msg(
      spdlog::log_clock::time_point(
          std::chrono::duration_cast<spdlog::log_clock::duration>(since_epoch)),
      spdlog::source_loc{}, "buffer", spdlog::level::warn, "text");
  spdlog::memory_buf_t out;
  f.format(msg, out);
  return std::string(out.data(), out.size());
}

}  // namespace

TEST_CASE("log lines: the time at the epoch, after it, and second changes") {
  auto f = outpost::log::make_formatter(false);
  using std::chrono::milliseconds;
  CHECK(line_at(*f, milliseconds(7)).rfind("1970-01-01T00:00:00.007Z warning buffer: text", 0) ==
        0);
  CHECK(line_at(*f, milliseconds(1'999)).rfind("1970-01-01T00:00:01.999Z", 0) == 0);
  CHECK(line_at(*f, milliseconds(1'790'000'000'123)).rfind("2026-09-21T14:13:20.123Z", 0) == 0);
  CHECK(line_at(*f, milliseconds(5)).rfind("1970-01-01T00:00:00.005Z", 0) == 0);  // back again
  auto journal = outpost::log::make_formatter(true);
  CHECK(line_at(*journal, milliseconds(7)).rfind("<4>buffer: text", 0) == 0);
}
