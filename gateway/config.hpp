#pragma once
// outpost-gateway's configuration: the TOML file (docs/configuration.md, "Gateway"; example
// deploy/gateway.toml) with --set overrides, validated at start.

#include <cstdint>
#include <string>

#include "common/config.hpp"
#include "common/result.hpp"
#include "gateway/pipeline/validation.hpp"
#include "gateway/sinks/file_sink.hpp"
#include "gateway/sinks/kafka_sink.hpp"

namespace outpost::gateway {

struct Limits {
  uint32_t max_connections = 10'000;
  uint32_t max_connections_per_ip = 256;
  // Connections that have not finished their TLS handshake, from all addresses together: a
  // handshake in progress holds the TLS engine's buffers (~40 KB).
  uint32_t max_pending_handshakes = 1024;
  int64_t handshake_timeout_ns = 10'000'000'000;
  int64_t idle_timeout_ns = 120'000'000'000;
  uint32_t max_frame_bytes = 16u << 20;
  uint64_t max_decompressed_bytes = 64u << 20;
  int max_window_log = 23;
  uint32_t max_events_per_batch = 100'000;
  uint32_t max_in_flight_batches = 8;
  // Per device: events per second (0: no limit) and the burst above it. Over the limit a
  // batch is answered retry-later, never dropped.
  uint64_t device_events_per_second = 0;
  uint64_t device_burst_events = 0;
};

struct GatewayConfig {
  std::string gateway_id;
  std::string log_level = "info";
  std::string listen_address = "0.0.0.0";
  uint16_t listen_port = 7443;
  std::string http_address = "127.0.0.1";
  uint16_t http_port = 9090;
  int threads = 2;
  std::string ca_file, cert_file, key_file;
  bool identity_from_uri_san = false;  // tls.identity = "uri_san"; default "cn"
  Limits limits;
  int64_t shutdown_grace_ns = 20'000'000'000;
  // [contracts]: the payload contracts and the validation policy (docs/contracts.md).
  ValidationConfig contracts;
  std::string sink = "file";
  FileSinkOptions file_sink;
  KafkaSinkOptions kafka_sink;
};

Result<GatewayConfig> load_gateway_config(ConfigDoc& doc);

}  // namespace outpost::gateway
