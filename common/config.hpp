#pragma once
// ConfigDoc: a TOML configuration file plus command-line overrides, read through typed getters
// that validate as they read. Every error names the file, the key, the value and what is
// allowed, so an operator can fix it without reading code. Keys that no getter asked for are
// reported by check_no_unknown_keys() (typos must not be ignored silently).
//
// Keys are dotted paths ("buffer.max_bytes"). Overrides ("buffer.max_bytes=1GiB") take the
// value as TOML when it parses as a TOML value (42, true, "text"), otherwise as a string.
//
// Thread-safety: none; build the program's configuration once at start-up.

#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace outpost {

class ConfigDoc {
 public:
  static Result<ConfigDoc> parse_file(const std::string& path);
  static Result<ConfigDoc> parse_string(std::string_view text, std::string source_name);
  static ConfigDoc empty(std::string source_name);

  ConfigDoc(ConfigDoc&&) noexcept;
  ConfigDoc& operator=(ConfigDoc&&) noexcept;
  ~ConfigDoc();

  // "key.path=value", as given to --set.
  Result<void> set_override(std::string_view assignment);

  Result<std::string> string(std::string_view key, std::string_view fallback);
  Result<int64_t> integer(std::string_view key, int64_t fallback, int64_t min, int64_t max);
  Result<bool> boolean(std::string_view key, bool fallback);
  // Written as "250ms", "7d"; returns nanoseconds within [min_ns, max_ns].
  Result<int64_t> duration_ns(std::string_view key, std::string_view fallback, int64_t min_ns,
                              int64_t max_ns);
  // Written as "512MiB" or a plain integer; returns bytes within [min, max].
  Result<uint64_t> bytes(std::string_view key, std::string_view fallback, uint64_t min,
                         uint64_t max);
  // Written as "HOST:PORT" ("[::]:7443" for IPv6; port 0: any free port). An empty value
  // (when `allow_empty`) returns an empty host and port 0: the listener is off.
  Result<std::pair<std::string, uint16_t>> host_port(std::string_view key,
                                                     std::string_view fallback,
                                                     bool allow_empty = false);
  Result<std::string> choice(std::string_view key, std::string_view fallback,
                             std::initializer_list<std::string_view> allowed);

  // Names of the sub-tables of `key` (e.g. the kinds under "buffer.kinds").
  std::vector<std::string> table_keys(std::string_view key) const;
  // Every value under the table `key`, flattened to dotted names ("security.protocol" from a
  // quoted key or from nested tables) and written as text: for settings passed through to a
  // library (the gateway's [kafka] table → librdkafka). An array is an error.
  Result<std::vector<std::pair<std::string, std::string>>> passthrough(std::string_view key) const;

  // Every value set (in the file or by --set), by dotted key, written as TOML: what a reload
  // compares (changed_settings()).
  std::map<std::string, std::string> settings() const;

  Result<void> check_no_unknown_keys() const;
  const std::string& source_name() const;
  // Where the value of `key` comes from, to start an error about it: "--set KEY", or
  // "config FILE, line N" ("config FILE" when the key is not in it).
  std::string where(std::string_view key) const;

 private:
  struct Impl;
  explicit ConfigDoc(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The keys whose value differs between two configurations (set in one only counts too), among
// those under one of `scopes` (a key, "agent.id", or a table, "buffer"); every key when
// `scopes` is empty. Sorted.
// (Both as ConfigDoc::settings() returns them.)
using ConfigSettings = std::map<std::string, std::string>;
std::vector<std::string> changed_settings(const ConfigSettings& running, const ConfigSettings& next,
                                          const std::vector<std::string>& scopes = {});

// A reload (SIGHUP; docs/configuration.md, "Reload"): what runs afterwards and what changed.
template <typename Config>
struct ConfigReload {
  // The new configuration, except the settings that take a restart: they keep their running
  // values.
  Config config;
  std::vector<std::string> changed;       // every key whose value changed since the last read
  std::vector<std::string> restart_only;  // changed keys that take a restart (values kept)
};

}  // namespace outpost
