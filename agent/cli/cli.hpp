#pragma once
// The outpost-agent command line: `run` (the agent) and `buffer <verb>` (operators' tools).
// main.cpp only calls agent_main(); tests link the library and call it too.
//
// Exit codes: common/exit_code.hpp (one rule for both programs).
//
// Thread-safety: call from the main thread, once.

#include "common/exit_code.hpp"

namespace outpost::agent {

using outpost::kExitCorrupt;
using outpost::kExitError;
using outpost::kExitOk;
using outpost::kExitRestart;
using outpost::kExitUsage;

int agent_main(int argc, char** argv);

}  // namespace outpost::agent
