#pragma once
// outpost-gateway's configuration: the TOML file (docs/configuration.md, "Gateway"; example
// deploy/gateway.toml) with --set overrides, validated at start.

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.hpp"
#include "common/result.hpp"
#include "gateway/pipeline/validation.hpp"
#include "gateway/sinks/file_sink.hpp"
#include "gateway/sinks/kafka_sink.hpp"
#include "uplink/server/server.hpp"

namespace outpost::gateway {

// The server's limits (uplink/server/server.hpp), as [limits] sets them.
using Limits = uplink::ServerLimits;

struct GatewayConfig {
  std::string gateway_id;
  std::string log_level = "info";
  std::string listen_address = "0.0.0.0";
  uint16_t listen_port = 7443;
  std::string http_address = "127.0.0.1";
  uint16_t http_port = 9090;
  int threads = 2;
  std::string ca_file, cert_file, key_file;
  std::string crl_file;                // tls.crl: "" for none
  int64_t tls_reload_interval_ns = 0;  // tls.reload_interval
  bool identity_from_uri_san = false;  // tls.identity = "uri_san"; default "cn"
  Limits limits;
  int64_t shutdown_grace_ns = 20'000'000'000;
  std::string pid_file;  // gateway.pid_file: "" for none (`outpost-gateway reload` then uses
                         // the file sink's directory lock)
  // [contracts]: the payload contracts and the validation policy (docs/contracts.md).
  ValidationConfig contracts;
  std::string sink = "file";
  FileSinkOptions file_sink;
  KafkaSinkOptions kafka_sink;
};

Result<GatewayConfig> load_gateway_config(ConfigDoc& doc);

// A reload: the log level, the shutdown grace, the [limits] and the file sink's rotation
// change; the rest keeps its running values.
using GatewayReload = ConfigReload<GatewayConfig>;
// `started`: the settings the gateway started with; `last`: those read last.
GatewayReload plan_gateway_reload(const ConfigSettings& started, const GatewayConfig& running,
                                  const ConfigSettings& last, const ConfigSettings& next_settings,
                                  const GatewayConfig& next);

}  // namespace outpost::gateway
