#include "gateway/config.hpp"

#include <unistd.h>

#include <climits>

#include "common/errc.hpp"
#include "proto/contracts_config.hpp"

namespace outpost::gateway {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1'000 * kMs;
constexpr int64_t kHour = 3'600 * kSecond;

}  // namespace

Result<GatewayConfig> load_gateway_config(ConfigDoc& doc) {
  GatewayConfig c;
  char host[HOST_NAME_MAX + 1] = {};
  ::gethostname(host, sizeof host - 1);
  OUTPOST_TRY_ASSIGN(c.gateway_id, doc.string("gateway.id", host[0] ? host : "outpost-gateway"));
  OUTPOST_TRY_ASSIGN(c.log_level, doc.choice("gateway.log_level", "info",
                                             {"trace", "debug", "info", "warn", "error", "off"}));
  std::pair<std::string, uint16_t> listen, http;
  OUTPOST_TRY_ASSIGN(listen, doc.host_port("gateway.listen", "0.0.0.0:7443"));
  OUTPOST_TRY_ASSIGN(http, doc.host_port("gateway.http_listen", "127.0.0.1:9090"));
  c.listen_address = listen.first;
  c.listen_port = listen.second;
  c.http_address = http.first;
  c.http_port = http.second;
  int64_t n = 0;
  OUTPOST_TRY_ASSIGN(n, doc.integer("gateway.threads", 2, 1, 256));
  c.threads = static_cast<int>(n);
  OUTPOST_TRY_ASSIGN(c.shutdown_grace_ns,
                     doc.duration_ns("gateway.shutdown_grace", "20s", 0, kHour));

  OUTPOST_TRY_ASSIGN(c.pid_file, doc.string("gateway.pid_file", ""));
  OUTPOST_TRY_ASSIGN(c.ca_file, doc.string("tls.ca_file", "/etc/outpost/certs/ca.crt"));
  OUTPOST_TRY_ASSIGN(c.cert_file, doc.string("tls.cert_file", "/etc/outpost/certs/gateway.crt"));
  OUTPOST_TRY_ASSIGN(c.key_file, doc.string("tls.key_file", "/etc/outpost/certs/gateway.key"));
  OUTPOST_TRY_ASSIGN(c.crl_file, doc.string("tls.crl", ""));
  OUTPOST_TRY_ASSIGN(c.tls_reload_interval_ns,
                     doc.duration_ns("tls.reload_interval", "5s", 0, kHour));
  if (c.tls_reload_interval_ns > 0 && c.tls_reload_interval_ns < 100 * kMs) {
    return make_error(common_errc::config_invalid,
                      doc.where("tls.reload_interval") +
                          ": tls.reload_interval is 0 (only on reload) or at least 100ms");
  }
  std::string identity;
  OUTPOST_TRY_ASSIGN(identity, doc.choice("tls.identity", "cn", {"cn", "uri_san"}));
  c.identity_from_uri_san = identity == "uri_san";

  OUTPOST_TRY_ASSIGN(c.contracts, proto::read_contracts_config(doc));

  Limits& l = c.limits;
  OUTPOST_TRY_ASSIGN(n, doc.integer("limits.max_connections", 10'000, 1, 1'000'000));
  l.max_connections = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("limits.max_connections_per_ip", 256, 1, 1'000'000));
  l.max_connections_per_ip = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("limits.max_pending_handshakes", 1024, 1, 1'000'000));
  l.max_pending_handshakes = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(l.handshake_timeout_ns,
                     doc.duration_ns("limits.handshake_timeout", "10s", 10 * kMs, kHour));
  OUTPOST_TRY_ASSIGN(l.idle_timeout_ns,
                     doc.duration_ns("limits.idle_timeout", "120s", 100 * kMs, 24 * kHour));
  uint64_t bytes = 0;
  OUTPOST_TRY_ASSIGN(bytes, doc.bytes("limits.max_frame_bytes", "16MiB", 4096, 1ULL << 30));
  l.max_frame_bytes = static_cast<uint32_t>(bytes);
  OUTPOST_TRY_ASSIGN(l.max_decompressed_bytes,
                     doc.bytes("limits.max_decompressed_bytes", "64MiB", 4096, 1ULL << 32));
  OUTPOST_TRY_ASSIGN(n, doc.integer("limits.max_window_log", 23, 10, 27));
  l.max_window_log = static_cast<int>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("limits.max_events_per_batch", 100'000, 1, 10'000'000));
  l.max_events_per_batch = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("limits.max_in_flight_batches", 8, 1, 1024));
  l.max_in_flight_batches = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("limits.device_events_per_second", 0, 0, 1'000'000'000));
  l.device_events_per_second = static_cast<uint64_t>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("limits.device_burst_events", 0, 0, 1'000'000'000));
  l.device_burst_events = static_cast<uint64_t>(n);
  if (l.device_events_per_second > 0 && l.device_burst_events == 0) {
    l.device_burst_events = std::max<uint64_t>(l.device_events_per_second, 10'000);
  }

  OUTPOST_TRY_ASSIGN(c.sink, doc.choice("sink.type", "file", {"file", "kafka"}));
  FileSinkOptions& f = c.file_sink;
  OUTPOST_TRY_ASSIGN(f.dir, doc.string("sink.file.dir", "/var/lib/outpost-gateway/events"));
  OUTPOST_TRY_ASSIGN(f.rotate_bytes,
                     doc.bytes("sink.file.rotate_bytes", "64MiB", 4096, 1ULL << 40));
  OUTPOST_TRY_ASSIGN(f.rotate_age_ns,
                     doc.duration_ns("sink.file.rotate_age", "5m", kSecond, kHour));
  std::string format;
  OUTPOST_TRY_ASSIGN(format, doc.choice("sink.file.format", "ndjson", {"ndjson", "protobuf"}));
  f.protobuf = format == "protobuf";
  OUTPOST_TRY_ASSIGN(n, doc.integer("sink.file.zstd_level", 1, 1, 19));
  f.zstd_level = static_cast<int>(n);

  KafkaSinkOptions& k = c.kafka_sink;
  OUTPOST_TRY_ASSIGN(k.brokers, doc.string("sink.kafka.brokers", "127.0.0.1:9092"));
  const char* default_topics[] = {"outpost.pixel", "outpost.sensor", "outpost.events"};
  for (EventKind kind : kAllKinds) {
    const std::string name(kind_name(kind));
    const int i = kind_index(kind);
    OUTPOST_TRY_ASSIGN(k.topics[i], doc.string("sink.kafka.topic_" + name, default_topics[i]));
    std::string value;
    OUTPOST_TRY_ASSIGN(value,
                       doc.choice("sink.kafka.value_" + name, "protobuf", {"protobuf", "json"}));
    k.json_values[i] = value == "json";
  }
  OUTPOST_TRY_ASSIGN(k.dead_letter_topic, doc.string("sink.kafka.topic_bad", "outpost.bad"));
  OUTPOST_TRY_ASSIGN(k.offsets_topic,
                     doc.string("sink.kafka.offsets_topic", "outpost.agent-offsets"));
  OUTPOST_TRY_ASSIGN(k.transactional_id,
                     doc.string("sink.kafka.transactional_id", "outpost-" + c.gateway_id));
  OUTPOST_TRY_ASSIGN(k.create_topics, doc.boolean("sink.kafka.create_topics", false));
  OUTPOST_TRY_ASSIGN(k.transactions, doc.boolean("sink.kafka.transactions", true));
  OUTPOST_TRY_ASSIGN(n, doc.integer("sink.kafka.partitions", 6, 1, 10'000));
  k.partitions = static_cast<int>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("sink.kafka.replication", 1, 1, 32));
  k.replication = static_cast<int>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("sink.kafka.batches_per_transaction", 64, 1, 100'000));
  k.max_batches_per_transaction = static_cast<size_t>(n);
  OUTPOST_TRY_ASSIGN(k.linger_ns, doc.duration_ns("sink.kafka.linger", "5ms", 0, kSecond));
  OUTPOST_TRY_ASSIGN(k.transaction_timeout_ns, doc.duration_ns("sink.kafka.transaction_timeout",
                                                               "30s", kSecond, 900 * kSecond));
  auto passthrough = doc.passthrough("kafka");
  if (!passthrough) return passthrough.error();
  k.properties = std::move(*passthrough);
  if (auto r = doc.check_no_unknown_keys(); !r) return r.error();
  return c;
}

}  // namespace outpost::gateway
