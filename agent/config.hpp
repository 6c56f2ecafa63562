#pragma once
// The agent's configuration (agent.toml), every key documented in docs/configuration.md with
// a commented example in deploy/agent.toml. load_agent_config() validates everything at
// start-up and names the key, the value and what is allowed when something is wrong.
//
// Thread-safety: plain values.

#include <cstdint>
#include <string>
#include <vector>

#include "agent/buffer/buffer.hpp"
#include "agent/forwarder/forwarder.hpp"
#include "agent/sources/http/http_source.hpp"
#include "agent/sources/mqtt/mqtt_source.hpp"
#include "agent/sources/spool/spool_source.hpp"
#include "common/config.hpp"
#include "proto/contracts_config.hpp"
#include "uplink/server/server.hpp"

namespace outpost::agent {

struct GeneratorConfig {
  bool enabled = false;
  uint64_t events = 0;   // 0: until the agent stops
  uint64_t rate = 1000;  // events per second
  bool stop_when_done = false;
  bool operator==(const GeneratorConfig&) const = default;
};

struct HttpSourceConfig {
  bool enabled = false;
  HttpSourceOptions options;
  bool operator==(const HttpSourceConfig&) const = default;
};

struct MqttSourceConfig {
  bool enabled = false;
  MqttSourceOptions options;
  bool operator==(const MqttSourceConfig&) const = default;
};

struct SpoolSourceConfig {
  bool enabled = false;
  SpoolSourceOptions options;
  bool operator==(const SpoolSourceConfig&) const = default;
};

// [relay]: the agent accepts the uplinks of its site's devices (agent/relay/).
struct RelayConfig {
  bool enabled = false;
  uplink::ServerOptions server;
  std::string site;  // from the certificate's URI SAN urn:outpost:relay:SITE
  // Per device, its events in this agent's buffer at most (0: only buffer.max_bytes).
  uint64_t device_max_bytes = 0;
};

struct UplinkConfig {
  bool enabled = false;  // true when uplink.endpoints is set
  ForwarderOptions forwarder;
  // The log warns at start when the device certificate expires within this many days.
  int certificate_warn_days = 30;
};

struct AgentConfig {
  std::string agent_id;
  std::string log_level = "info";
  std::string http_host = "127.0.0.1";  // agent.http_listen: /healthz, /metrics
  uint16_t http_port = 9091;
  bool http_enabled = true;
  BufferOptions buffer;
  GeneratorConfig generator;
  UplinkConfig uplink;
  HttpSourceConfig http;
  MqttSourceConfig mqtt;
  SpoolSourceConfig spool;
  RelayConfig relay;
  // [contracts]: validate = "edge" checks events on the device (agent/contracts/).
  bool validate_at_edge = false;
  proto::ContractsConfig contracts;
};

// Reads every key (applying defaults) and rejects unknown ones.
Result<AgentConfig> load_agent_config(ConfigDoc& doc);
// [buffer] encryption, key_file, old_key_files, cipher: the keys read and checked (the
// buffer's tools use it too, to open sealed events).
Result<BufferEncryption> load_buffer_encryption(ConfigDoc& doc);

// A reload: the sources, [uplink] and the log level change; the rest keeps its running values.
using AgentReload = ConfigReload<AgentConfig>;
// `started`: the configuration the agent started with (restart-only settings are compared with
// it, so a reload keeps saying that they wait for a restart); `last`: the one read last.
AgentReload plan_agent_reload(const ConfigSettings& started, const AgentConfig& running,
                              const ConfigSettings& last, const ConfigSettings& next_settings,
                              AgentConfig next);

}  // namespace outpost::agent
