#include "agent/cli/cli.hpp"

#include <CLI/CLI.hpp>

#include <iostream>

#include "agent/cli/commands.hpp"

namespace outpost::agent {

int agent_main(int argc, char** argv) {
  CLI::App app{
      "outpost-agent: collects events on an edge device, buffers them durably and "
      "forwards them to the Outpost gateway"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "outpost-agent 0.1.0");

  cli::RunOptions run;
  auto* run_cmd = app.add_subcommand("run", "Run the agent");
  run_cmd->add_option("-c,--config", run.config_path, "Configuration file (TOML)")
      ->required()
      ->check(CLI::ExistingFile);
  run_cmd->add_option("--set", run.overrides,
                      "Override a configuration key, e.g. --set buffer.max_bytes=2GiB "
                      "(repeatable)");
  run_cmd->add_option("--buffer-path", run.buffer_path, "Same as --set buffer.path=PATH");
  run_cmd->add_option("--log-level", run.log_level, "Same as --set agent.log_level=LEVEL");
  run_cmd->add_option("--agent-id", run.agent_id, "Same as --set agent.id=ID");

  std::string reload_config = "/etc/outpost/agent.toml";
  auto* reload_cmd = app.add_subcommand(
      "reload",
      "Check the configuration, then make the running agent read it and its TLS files again "
      "(SIGHUP to the agent that holds the configuration's buffer; docs/configuration.md, "
      "\"Reload\")");
  reload_cmd->add_option("-c,--config", reload_config, "The running agent's configuration")
      ->capture_default_str();

  cli::BufferOptionsCli b;
  auto* buffer = app.add_subcommand("buffer", "Inspect or repair the local buffer");
  buffer->require_subcommand(1);
  auto add_path = [&](CLI::App* cmd) {
    cmd->add_option("-p,--path", b.path, "Buffer file (default: buffer.path of --config)");
    cmd->add_option("-c,--config", b.config,
                    "Agent configuration whose buffer.path to use when --path is not given")
        ->capture_default_str();
  };
  auto add_kind = [&](CLI::App* cmd) {
    cmd->add_option("-k,--kind", b.kind, "Only events of this kind")
        ->check(CLI::IsMember({"pixel", "sensor", "json"}));
  };
  auto* stats = buffer->add_subcommand("stats", "Pending events and bytes, drops, file size");
  add_path(stats);
  stats->add_flag("--json", b.json, "Print JSON for programs");
  auto* peek = buffer->add_subcommand("peek", "Show the oldest pending events, decoded");
  add_path(peek);
  add_kind(peek);
  peek->add_option("-n,--limit", b.limit, "How many events")->check(CLI::Range(1, 1000000));
  peek->add_option("--since", b.since, "Only events with a seq above this");
  peek->add_flag("--json", b.json, "One JSON event per line");
  auto add_keys = [&](CLI::App* cmd) {
    cmd->add_option("--key-file", b.key_files,
                    "A key that opens sealed events (repeatable; default: buffer.key_file and "
                    "buffer.old_key_files of --config)");
  };
  add_keys(peek);
  auto* exp = buffer->add_subcommand("export", "Write pending events to stdout");
  add_path(exp);
  add_kind(exp);
  exp->add_option("-f,--format", b.format, "ndjson or protobuf (length-delimited)")
      ->check(CLI::IsMember({"ndjson", "protobuf"}));
  add_keys(exp);
  auto* imp =
      buffer->add_subcommand("import", "Append events read from stdin (the export formats)");
  add_path(imp);
  imp->add_option("-f,--format", b.format, "ndjson or protobuf (length-delimited)")
      ->check(CLI::IsMember({"ndjson", "protobuf"}));
  imp->add_option("--agent-id", b.agent_id,
                  "Agent id of a new buffer file (default: the first imported event's)");
  imp->add_flag("--new-seqs", b.new_seqs,
                "Give every event a new seq. By default an event of the buffer's own agent id "
                "keeps its seq (a salvage: the gateway then drops what it already has), which "
                "needs the agent stopped");
  auto* purge = buffer->add_subcommand("purge", "Delete pending events (counted as purged)");
  add_path(purge);
  add_kind(purge);
  purge->add_option("--older-than", b.older_than, "Only events collected longer ago, e.g. 7d");
  purge->add_flag("--yes", b.yes, "Confirm: the events are deleted, not sent");
  auto* verify = buffer->add_subcommand("verify", "Check the file's integrity");
  add_path(verify);
  auto* quarantine = buffer->add_subcommand(
      "quarantine", "Show messages a source could not turn into events, and why (newest first)");
  add_path(quarantine);
  quarantine->add_option("-n,--limit", b.limit, "How many messages")->check(CLI::Range(1, 1000000));
  quarantine->add_flag("--json", b.json, "One JSON object per line");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "outpost-agent: " << e.what() << "\n";
    // Usage of the innermost command that was named.
    CLI::App* shown = &app;
    for (CLI::App* sub = shown; sub != nullptr;) {
      auto subs = sub->get_subcommands();
      sub = subs.empty() ? nullptr : subs.front();
      if (sub != nullptr) shown = sub;
    }
    std::cerr << shown->help();
    return kExitUsage;
  }

  if (run_cmd->parsed()) return cli::run_agent(run);
  if (reload_cmd->parsed()) return cli::reload_agent(reload_config);
  if (b.path.empty()) {
    auto path = cli::buffer_path_from_config(b.config);
    if (!path) {
      std::cerr << "outpost-agent buffer: " << path.error().message << "\n";
      return kExitUsage;
    }
    b.path = *path;
  }
  if (stats->parsed()) return cli::buffer_stats(b);
  if (peek->parsed()) return cli::buffer_peek(b);
  if (exp->parsed()) return cli::buffer_export(b);
  if (imp->parsed()) return cli::buffer_import(b);
  if (verify->parsed()) return cli::buffer_verify(b);
  if (quarantine->parsed()) return cli::buffer_quarantine(b);
  if (purge->parsed()) {
    if (!b.kind && !b.older_than) {
      std::cerr << "outpost-agent buffer purge: say what to delete: --kind K and/or "
                   "--older-than DURATION\n"
                << purge->help();
      return kExitUsage;
    }
    if (!b.yes) {
      std::cerr << "outpost-agent buffer purge: this deletes events that were never sent; "
                   "add --yes to confirm\n";
      return kExitUsage;
    }
    return cli::buffer_purge(b);
  }
  return kExitUsage;
}

}  // namespace outpost::agent
