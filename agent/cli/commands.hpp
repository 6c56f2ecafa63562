#pragma once
// Internal to agent/cli: the options of each command and the functions that run them.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace outpost::agent::cli {

struct RunOptions {
  std::string config_path;
  std::vector<std::string> overrides;  // --set key=value
  std::optional<std::string> buffer_path;
  std::optional<std::string> log_level;
  std::optional<std::string> agent_id;
};
int run_agent(const RunOptions& o);

// `outpost-agent reload`: SIGHUP to the agent running on the configuration's buffer (the pid
// its buffer lock names).
int reload_agent(const std::string& config_path);

struct BufferOptionsCli {
  std::string path;  // empty: buffer.path of `config`
  std::string config = "/etc/outpost/agent.toml";
  bool json = false;
  // peek / export / purge
  std::optional<std::string> kind;
  uint64_t limit = 10;
  uint64_t since = 0;
  std::string format = "ndjson";
  std::optional<std::string> older_than;
  bool yes = false;
  std::optional<std::string> agent_id;  // import into a new file
  bool new_seqs = false;                // import: give every event a new seq
  std::vector<std::string> key_files;   // peek / export: keys for sealed events
};
// The buffer file of a configuration (buffer.path), for `buffer …` without --path.
Result<std::string> buffer_path_from_config(const std::string& config_path);
int buffer_stats(const BufferOptionsCli& o);
int buffer_peek(const BufferOptionsCli& o);
int buffer_export(const BufferOptionsCli& o);
int buffer_import(const BufferOptionsCli& o);
int buffer_purge(const BufferOptionsCli& o);
int buffer_verify(const BufferOptionsCli& o);
int buffer_quarantine(const BufferOptionsCli& o);

}  // namespace outpost::agent::cli
