#pragma once
// Logging: one line per event to stderr. Under systemd (JOURNAL_STREAM set) lines carry a
// syslog priority prefix ("<3>") and no timestamp, which journald adds itself; elsewhere they
// start with an ISO-8601 UTC timestamp. Components log through a named logger
// (`log::get("buffer")`). Never log per event on a hot path: count, and log summaries.
//
// Thread-safety: loggers may be used from any thread; call init() once at start-up, before
// other threads exist.

#include <memory>
#include <string_view>

#include <spdlog/formatter.h>
#include <spdlog/spdlog.h>

#include "common/result.hpp"

namespace outpost::log {

// Levels: trace, debug, info, warn, error, critical, off.
Result<void> init(std::string_view level);
std::shared_ptr<spdlog::logger> get(std::string_view component);
// The line format (journal: priority prefix, no time); exposed for its test.
std::unique_ptr<spdlog::formatter> make_formatter(bool journal);

}  // namespace outpost::log
