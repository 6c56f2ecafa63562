#include "gateway/contracts/contracts_command.hpp"

#include <google/protobuf/descriptor.pb.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "common/exit_code.hpp"
#include "proto/compat.hpp"

namespace outpost::gateway {

int run_contracts_command(int argc, char** argv) {
  CLI::App app{"outpost-gateway contracts: the contracts' descriptor sets (docs/contracts.md)",
               "outpost-gateway contracts"};
  app.require_subcommand(1);
  std::string old_path, new_path;
  auto* check = app.add_subcommand(
      "check",
      "Refuse a change that breaks the evolution rules (docs/contracts.md): one line per "
      "problem, naming the schema, the field and the rule. Exit 0: compatible; 4: breaking "
      "changes; 1: a file that cannot be read; 2: bad flags.");
  check->add_option("--old", old_path, "the descriptor set in use (binary, or .txtpb text)")
      ->required();
  check->add_option("--new", new_path, "the proposed descriptor set")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  google::protobuf::FileDescriptorSet before, after;
  for (auto [path, set] : {std::pair{&old_path, &before}, std::pair{&new_path, &after}}) {
    if (auto r = proto::load_descriptor_set(*path, set); !r) {
      std::cerr << "outpost-gateway contracts check: " << r.error().describe() << "\n";
      return exit_code_for(r.error());
    }
  }
  const proto::CompatReport report = proto::check_compatibility(before, after);
  for (const proto::CompatProblem& p : report.problems) std::cerr << p.line() << "\n";
  if (!report.problems.empty()) {
    std::cerr << "outpost-gateway contracts check: " << report.problems.size()
              << " breaking change(s) from " << old_path << " to " << new_path
              << " (docs/contracts.md, \"Evolution rules\")\n";
    return kExitIncompatible;
  }
  std::cout << "compatible: " << report.types_checked << " messages and enums, "
            << report.fields_checked << " fields and values of " << old_path << " kept in "
            << new_path << "\n";
  return kExitOk;
}

}  // namespace outpost::gateway
