#pragma once
// The exit codes of both programs, one rule (docs/configuration.md, "Exit codes"):
//   0  ok, or stopped on SIGTERM/SIGINT
//   1  a runtime error: a file missing or unreadable, I/O, bad input, a directory or buffer
//      held by another process
//   2  bad flags or configuration, including what only the start can tell (a port that
//      cannot be bound, an unusable certificate, a librdkafka property it does not know)
//   3  `outpost-agent buffer verify` found damage
//   4  `outpost-gateway contracts check` found a breaking change
//   75 the agent's buffer became unusable while running (EX_TEMPFAIL: restart it)
//
// Thread-safety: constants and a pure function.

#include "common/errc.hpp"
#include "common/result.hpp"

namespace outpost {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitCorrupt = 3;
inline constexpr int kExitIncompatible = 4;
inline constexpr int kExitRestart = 75;

// 2 for a configuration error (common_errc::config_*), 1 for anything else.
inline int exit_code_for(const Error& e) {
  return e.code == common_errc::config_unreadable || e.code == common_errc::config_invalid ||
                 e.code == common_errc::config_unknown_key
             ? kExitUsage
             : kExitError;
}

}  // namespace outpost
