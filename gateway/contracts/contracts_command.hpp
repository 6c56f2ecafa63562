#pragma once
// `outpost-gateway contracts check --old OLD --new NEW`: refuses a change to the contracts
// that breaks docs/contracts.md's evolution rules (proto/compat.hpp), one line per problem on
// stderr, exit 4; prints a summary and exits 0 when the new set is compatible. OLD and NEW are
// descriptor sets (protoc --include_imports --descriptor_set_out), or text format (.txtpb).
//
// Thread-safety: called once, from main.

namespace outpost::gateway {

// argv[0] is "contracts". Returns the process's exit code (common/exit_code.hpp).
int run_contracts_command(int argc, char** argv);

}  // namespace outpost::gateway
