#pragma once
// The outpost-agent command line: `run` (the agent) and `buffer <verb>` (operators' tools).
// main.cpp only calls agent_main(); tests link the library and call it too.
//
// Exit codes: 0 ok; 1 a runtime error (missing or unreadable file, I/O, bad input);
// 2 bad flags or configuration; 3 `buffer verify` found damage; 75 the buffer became unusable
// while running (restart so that it can be recovered).
//
// Thread-safety: call from the main thread, once.

namespace outpost::agent {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitCorrupt = 3;
inline constexpr int kExitRestart = 75;  // EX_TEMPFAIL

int agent_main(int argc, char** argv);

}  // namespace outpost::agent
