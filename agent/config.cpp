#include "agent/config.hpp"

#include "common/tls/certificate.hpp"
#include "uplink/gateway_protocol.hpp"

#include <unistd.h>

#include <climits>
#include <cstring>

#include "common/errc.hpp"

namespace outpost::agent {
namespace {

// doc.bytes() for a size held in memory: its max (at most 1 GiB here) fits size_t on 32-bit
// devices (armhf) too.
Result<size_t> memory_bytes(ConfigDoc& doc, std::string_view key, std::string_view fallback,
                            uint64_t min, uint32_t max) {
  auto r = doc.bytes(key, fallback, min, max);
  if (!r) return r.error();
  return static_cast<size_t>(*r);
}

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1'000 * kMs;
constexpr int64_t kDay = 86'400 * kSecond;

std::string host_name() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "outpost-agent";
  return buf;
}

// Defaults by kind: browsers cannot be pushed back, so pixel hits make room by dropping the
// oldest; sensors (no PUBACK) and programs (503) can retry, so they are refused instead.
FullPolicy default_policy(EventKind k) {
  return k == EventKind::pixel ? FullPolicy::drop_oldest : FullPolicy::reject;
}

// A comma-separated list, each item trimmed; empty items dropped.
std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t comma = text.find(',', at);
    std::string item = text.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (!item.empty()) out.push_back(item);
    at = comma == std::string::npos ? text.size() : comma + 1;
  }
  return out;
}

Result<void> load_http_source(ConfigDoc& doc, HttpSourceConfig& c) {
  HttpSourceOptions& h = c.options;
  OUTPOST_TRY_ASSIGN(c.enabled, doc.boolean("sources.http.enabled", false));
  std::pair<std::string, uint16_t> listen;
  OUTPOST_TRY_ASSIGN(listen, doc.host_port("sources.http.listen", "0.0.0.0:8080"));
  h.host = listen.first;
  h.port = listen.second;
  std::string text;
  OUTPOST_TRY_ASSIGN(text, doc.string("sources.http.pixel_paths", "/p.gif,/p.png"));
  h.pixel_paths = split_list(text);
  OUTPOST_TRY_ASSIGN(h.events_path, doc.string("sources.http.events_path", "/v1/events"));
  for (const std::string& p : h.pixel_paths) {
    if (p.empty() || p[0] != '/' || p == h.events_path) {
      return make_error(common_errc::config_invalid,
                        doc.where("sources.http.pixel_paths") + ": sources.http.pixel_paths: \"" +
                            p +
                            "\" is not allowed: paths start with / and differ from events_path");
    }
  }
  OUTPOST_TRY_ASSIGN(h.site_param, doc.string("sources.http.site_param", "site"));
  int64_t n = 0;
  OUTPOST_TRY_ASSIGN(n, doc.integer("sources.http.max_query_params", 50, 0, 10'000));
  h.max_query_params = static_cast<size_t>(n);
  OUTPOST_TRY_ASSIGN(h.max_value_bytes,
                     memory_bytes(doc, "sources.http.max_value_bytes", "1KiB", 16, 1u << 20));
  OUTPOST_TRY_ASSIGN(h.max_header_bytes,
                     memory_bytes(doc, "sources.http.max_header_bytes", "8KiB", 1024, 1u << 20));
  OUTPOST_TRY_ASSIGN(h.max_body_bytes,
                     memory_bytes(doc, "sources.http.max_body_bytes", "1MiB", 1024, 64u << 20));
  OUTPOST_TRY_ASSIGN(n, doc.integer("sources.http.max_events_per_request", 1000, 1, 100'000));
  h.max_events_per_request = static_cast<size_t>(n);
  OUTPOST_TRY_ASSIGN(h.header_timeout_ns, doc.duration_ns("sources.http.header_timeout", "10s",
                                                          100 * kMs, 600 * kSecond));
  OUTPOST_TRY_ASSIGN(h.idle_timeout_ns, doc.duration_ns("sources.http.idle_timeout", "60s",
                                                        100 * kMs, 3600 * kSecond));
  OUTPOST_TRY_ASSIGN(n, doc.integer("sources.http.max_connections", 1024, 1, 1'000'000));
  h.max_connections = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("sources.http.threads", 1, 1, 64));
  h.threads = static_cast<uint32_t>(n);
  std::string mode;
  OUTPOST_TRY_ASSIGN(
      mode, doc.choice("sources.http.client_ip", "truncate", {"truncate", "hash", "drop"}));
  h.ip_mode = mode == "hash" ? IpMode::hash : mode == "drop" ? IpMode::drop : IpMode::truncate;
  OUTPOST_TRY_ASSIGN(h.ip_salt, doc.string("sources.http.ip_salt", ""));
  if (h.ip_mode == IpMode::hash && h.ip_salt.size() < 16) {
    return make_error(common_errc::config_invalid,
                      doc.where("sources.http.client_ip") +
                          ": sources.http.client_ip = \"hash\" needs sources.http.ip_salt of at "
                          "least 16 characters (an unsalted hash of an IPv4 address is easy to "
                          "reverse)");
  }
  OUTPOST_TRY_ASSIGN(text, doc.string("sources.http.trusted_proxies", ""));
  h.trusted_proxies = split_list(text);
  OUTPOST_TRY_ASSIGN(h.honor_privacy_signals, doc.boolean("sources.http.honor_dnt", false));
  OUTPOST_TRY_ASSIGN(h.cookie_name, doc.string("sources.http.cookie_name", ""));
  OUTPOST_TRY_ASSIGN(h.schema_field, doc.string("sources.http.schema_field", "schema"));
  OUTPOST_TRY_ASSIGN(h.default_schema, doc.string("sources.http.default_schema", "json"));
  OUTPOST_TRY_ASSIGN(text, doc.string("sources.http.cors_origins", ""));
  h.cors_origins = split_list(text);
  return {};
}

Result<void> load_mqtt_source(ConfigDoc& doc, const std::string& agent_id, MqttSourceConfig& c) {
  MqttSourceOptions& m = c.options;
  OUTPOST_TRY_ASSIGN(c.enabled, doc.boolean("sources.mqtt.enabled", false));
  OUTPOST_TRY_ASSIGN(m.broker, doc.string("sources.mqtt.broker", "tcp://127.0.0.1:1883"));
  OUTPOST_TRY_ASSIGN(m.client_id, doc.string("sources.mqtt.client_id", "outpost-" + agent_id));
  std::string text;
  OUTPOST_TRY_ASSIGN(text, doc.string("sources.mqtt.topics", "sensors/#"));
  m.topics = split_list(text);
  std::string& pattern = m.mapping.pattern;
  OUTPOST_TRY_ASSIGN(pattern, doc.string("sources.mqtt.pattern", "sensors/{device}/{metric}"));
  if (pattern.find("{device}") == std::string::npos) {
    return make_error(common_errc::config_invalid,
                      doc.where("sources.mqtt.pattern") + ": sources.mqtt.pattern = \"" + pattern +
                          "\" is not allowed: it needs a {device} level, e.g. "
                          "\"sensors/{device}/{metric}\"");
  }
  OUTPOST_TRY_ASSIGN(m.username, doc.string("sources.mqtt.username", ""));
  OUTPOST_TRY_ASSIGN(m.password, doc.string("sources.mqtt.password", ""));
  OUTPOST_TRY_ASSIGN(m.mapping.max_payload_bytes,
                     memory_bytes(doc, "sources.mqtt.max_payload_bytes", "64KiB", 16, 16u << 20));
  OUTPOST_TRY_ASSIGN(m.mapping.keep_binary, doc.boolean("sources.mqtt.keep_binary", false));
  std::string ts_unit;
  OUTPOST_TRY_ASSIGN(ts_unit,
                     doc.choice("sources.mqtt.ts_unit", "auto", {"auto", "s", "ms", "us", "ns"}));
  using TsUnit = MqttMapping::TsUnit;
  m.mapping.ts_unit = ts_unit == "s"    ? TsUnit::s
                      : ts_unit == "ms" ? TsUnit::ms
                      : ts_unit == "us" ? TsUnit::us
                      : ts_unit == "ns" ? TsUnit::ns
                                        : TsUnit::automatic;
  std::string commit;
  OUTPOST_TRY_ASSIGN(commit, doc.choice("sources.mqtt.commit", "each", {"each", "grouped"}));
  m.commit = commit == "grouped" ? MqttCommit::grouped : MqttCommit::each;
  int64_t n = 0;
  OUTPOST_TRY_ASSIGN(n, doc.integer("sources.mqtt.max_uncommitted", 1000, 1, 1'000'000));
  m.max_uncommitted = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(m.tls.ca_file, doc.string("sources.mqtt.ca_file", ""));
  OUTPOST_TRY_ASSIGN(m.tls.cert_file, doc.string("sources.mqtt.cert_file", ""));
  OUTPOST_TRY_ASSIGN(m.tls.key_file, doc.string("sources.mqtt.key_file", ""));
  OUTPOST_TRY_ASSIGN(m.tls.verify_host, doc.boolean("sources.mqtt.verify_host", true));
  const bool tls = m.broker.rfind("ssl://", 0) == 0 || m.broker.rfind("mqtts://", 0) == 0;
  if (!tls && !(m.tls.ca_file.empty() && m.tls.cert_file.empty() && m.tls.key_file.empty())) {
    return make_error(common_errc::config_invalid,
                      doc.where("sources.mqtt.ca_file") +
                          ": sources.mqtt.ca_file/cert_file/key_file "
                          "are set but sources.mqtt.broker = \"" +
                          m.broker +
                          "\" is not TLS: write it as ssl://HOST:PORT (usually port 8883)");
  }
  if (m.tls.cert_file.empty() != m.tls.key_file.empty()) {
    return make_error(common_errc::config_invalid,
                      doc.where("sources.mqtt.cert_file") +
                          ": sources.mqtt.cert_file and sources.mqtt.key_file go together (the "
                          "client certificate and its key)");
  }
  const std::pair<const char*, const std::string*> files[] = {
      {"sources.mqtt.ca_file", &m.tls.ca_file},
      {"sources.mqtt.cert_file", &m.tls.cert_file},
      {"sources.mqtt.key_file", &m.tls.key_file}};
  for (const auto& [key, f] : files) {
    if (!f->empty() && ::access(f->c_str(), R_OK) != 0) {
      return make_error(
          common_errc::config_invalid,
          doc.where(key) + ": " + key + ": cannot read " + *f + ": " + std::strerror(errno));
    }
  }
  OUTPOST_TRY_ASSIGN(m.reconnect_min_ns,
                     doc.duration_ns("sources.mqtt.reconnect_min", "1s", kSecond, 3600 * kSecond));
  OUTPOST_TRY_ASSIGN(m.reconnect_max_ns,
                     doc.duration_ns("sources.mqtt.reconnect_max", "60s", kSecond, 3600 * kSecond));
  return {};
}

Result<void> load_spool_source(ConfigDoc& doc, SpoolSourceConfig& c) {
  SpoolSourceOptions& o = c.options;
  OUTPOST_TRY_ASSIGN(c.enabled, doc.boolean("sources.spool.enabled", false));
  OUTPOST_TRY_ASSIGN(o.directory, doc.string("sources.spool.directory", "/var/lib/outpost/spool"));
  std::string format;
  OUTPOST_TRY_ASSIGN(
      format, doc.choice("sources.spool.format", "auto", {"auto", "ndjson", "csv", "whole_file"}));
  o.format = format == "csv"          ? SpoolFormat::csv
             : format == "whole_file" ? SpoolFormat::whole_file
             : format == "ndjson"     ? SpoolFormat::ndjson
                                      : SpoolFormat::automatic;
  OUTPOST_TRY_ASSIGN(o.schema, doc.string("sources.spool.schema", ""));
  if (c.enabled && (o.schema.empty() || o.schema.size() > 128)) {
    return make_error(common_errc::config_invalid,
                      doc.where("sources.spool.schema") +
                          ": sources.spool.schema must name the contract of the files' events "
                          "(1 to 128 characters), e.g. \"order.v1\"");
  }
  int64_t n = 0;
  OUTPOST_TRY_ASSIGN(n, doc.integer("sources.spool.priority", 0, -1000, 1000));
  o.priority = static_cast<int32_t>(n);
  std::string done;
  OUTPOST_TRY_ASSIGN(done, doc.choice("sources.spool.on_done", "move", {"move", "delete"}));
  o.delete_done = done == "delete";
  OUTPOST_TRY_ASSIGN(o.rescan_interval_ns, doc.duration_ns("sources.spool.rescan_interval", "10s",
                                                           100 * kMs, 3600 * kSecond));
  OUTPOST_TRY_ASSIGN(o.limits.max_event_bytes,
                     memory_bytes(doc, "sources.spool.max_event_bytes", "1MiB", 16, 64u << 20));
  OUTPOST_TRY_ASSIGN(o.limits.max_file_bytes,
                     memory_bytes(doc, "sources.spool.max_file_bytes", "16MiB", 16, 64u << 20));
  OUTPOST_TRY_ASSIGN(n, doc.integer("sources.spool.batch_events", 1000, 1, 100'000));
  o.batch_events = static_cast<uint32_t>(n);
  return {};
}

}  // namespace

Result<BufferEncryption> load_buffer_encryption(ConfigDoc& doc) {
  BufferEncryption e;
  std::string mode, key_file, old_keys, cipher;
  OUTPOST_TRY_ASSIGN(mode, doc.choice("buffer.encryption", "none", {"none", "aead"}));
  OUTPOST_TRY_ASSIGN(key_file, doc.string("buffer.key_file", ""));
  OUTPOST_TRY_ASSIGN(old_keys, doc.string("buffer.old_key_files", ""));
  OUTPOST_TRY_ASSIGN(cipher, doc.choice("buffer.cipher", "chacha20-poly1305",
                                        {"chacha20-poly1305", "aes-256-gcm"}));
  e.seal = mode == "aead";
  e.cipher = *tls::parse_aead_cipher(cipher);
  if (e.seal && key_file.empty()) {
    return make_error(common_errc::config_invalid,
                      doc.where("buffer.encryption") +
                          ": buffer.encryption = \"aead\" needs buffer.key_file (32 random "
                          "bytes: head -c 32 /dev/urandom > /etc/outpost/buffer.key)");
  }
  if (!e.seal && !key_file.empty()) {
    return make_error(common_errc::config_invalid,
                      doc.where("buffer.key_file") +
                          ": buffer.key_file seals new events only with buffer.encryption = "
                          "\"aead\"; to open old ones without sealing new ones, list it in "
                          "buffer.old_key_files");
  }
  auto read = [&](const std::string& key, const std::string& path) -> Result<void> {
    auto k = tls::AeadKey::read_file(path);
    if (!k) {
      return make_error(common_errc::config_invalid,
                        doc.where(key) + ": " + key + ": " + k.error().message);
    }
    e.keys.push_back(*k);
    return {};
  };
  if (!key_file.empty()) {
    if (auto r = read("buffer.key_file", key_file); !r) return r.error();
  }
  for (size_t at = 0; at < old_keys.size();) {
    const size_t comma = old_keys.find(',', at);
    std::string one =
        old_keys.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    while (!one.empty() && one.front() == ' ') one.erase(0, 1);
    while (!one.empty() && one.back() == ' ') one.pop_back();
    if (!one.empty()) {
      if (auto r = read("buffer.old_key_files", one); !r) return r.error();
    }
    at = comma == std::string::npos ? old_keys.size() : comma + 1;
  }
  return e;
}

namespace {

// [relay] (docs/configuration.md): after [uplink], whose files are its defaults.
Result<void> load_relay(ConfigDoc& doc, AgentConfig& c) {
  RelayConfig& r = c.relay;
  uplink::ServerOptions& o = r.server;
  OUTPOST_TRY_ASSIGN(r.enabled, doc.boolean("relay.enabled", false));
  std::pair<std::string, uint16_t> listen;
  OUTPOST_TRY_ASSIGN(listen, doc.host_port("relay.listen", "0.0.0.0:7443", false));
  o.name = "relay";
  o.listen_key = "relay.listen";
  o.listen_address = listen.first;
  o.listen_port = listen.second;
  o.http = false;  // the agent's own /metrics shows the relay's counters
  o.allow_relays = false;
  const ForwarderOptions& f = c.uplink.forwarder;
  OUTPOST_TRY_ASSIGN(o.ca_file, doc.string("relay.ca_file", f.ca_file));
  OUTPOST_TRY_ASSIGN(o.cert_file, doc.string("relay.cert_file", f.cert_file));
  OUTPOST_TRY_ASSIGN(o.key_file, doc.string("relay.key_file", f.key_file));
  OUTPOST_TRY_ASSIGN(o.crl_file, doc.string("relay.crl", ""));
  o.tls_reload_interval_ns = f.tls_reload_interval_ns;
  std::string identity;
  OUTPOST_TRY_ASSIGN(identity, doc.choice("relay.identity", "cn", {"cn", "uri_san"}));
  o.identity_from_uri_san = identity == "uri_san";
  int64_t n = 0;
  OUTPOST_TRY_ASSIGN(n, doc.integer("relay.threads", 1, 1, 64));
  o.threads = static_cast<int>(n);
  uplink::ServerLimits& l = o.limits;
  OUTPOST_TRY_ASSIGN(n, doc.integer("relay.max_connections", 1000, 1, 100'000));
  l.max_connections = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("relay.max_connections_per_ip", 16, 1, 100'000));
  l.max_connections_per_ip = static_cast<uint32_t>(n);
  l.max_pending_handshakes = std::min<uint32_t>(l.max_pending_handshakes, l.max_connections);
  OUTPOST_TRY_ASSIGN(n, doc.integer("relay.max_in_flight_batches", 8, 1, 1024));
  l.max_in_flight_batches = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("relay.max_events_per_batch", 10'000, 1, 1'000'000));
  l.max_events_per_batch = static_cast<uint32_t>(n);
  size_t frame = 0;
  OUTPOST_TRY_ASSIGN(frame, memory_bytes(doc, "relay.max_frame_bytes", "4MiB", 4096, 256u << 20));
  l.max_frame_bytes = static_cast<uint32_t>(frame);
  OUTPOST_TRY_ASSIGN(l.max_decompressed_bytes,
                     memory_bytes(doc, "relay.max_decompressed_bytes", "16MiB", 4096, 1ULL << 30));
  OUTPOST_TRY_ASSIGN(l.idle_timeout_ns,
                     doc.duration_ns("relay.idle_timeout", "120s", kSecond, 3600 * kSecond));
  OUTPOST_TRY_ASSIGN(l.handshake_timeout_ns,
                     doc.duration_ns("relay.handshake_timeout", "10s", 100 * kMs, 600 * kSecond));
  OUTPOST_TRY_ASSIGN(l.device_events_per_second,
                     doc.integer("relay.device_events_per_second", 0, 0, 100'000'000));
  OUTPOST_TRY_ASSIGN(l.device_burst_events,
                     doc.integer("relay.device_burst_events", 0, 0, 1'000'000'000));
  if (l.device_events_per_second > 0 && l.device_burst_events == 0) {
    l.device_burst_events = l.device_events_per_second;
  }
  OUTPOST_TRY_ASSIGN(r.device_max_bytes, doc.bytes("relay.device_max_bytes", "0", 0, 1ULL << 44));
  if (!r.enabled) return {};
  // The site comes from the relay's own certificate (docs/protocol.md, "Relays").
  auto cert = tls::read_certificate(o.cert_file);
  if (!cert) {
    return make_error(common_errc::config_invalid,
                      doc.where("relay.cert_file") + ": relay.cert_file: " + cert.error().message);
  }
  for (const std::string& uri : cert->uri_sans) {
    if (uri.rfind(uplink::kRelayUri, 0) == 0)
      r.site = uri.substr(std::string_view(uplink::kRelayUri).size());
  }
  if (r.site.empty()) {
    return make_error(common_errc::config_invalid,
                      doc.where("relay.cert_file") + ": relay.cert_file " + o.cert_file +
                          " has no URI SAN " + uplink::kRelayUri +
                          "SITE: the gateway will not take the devices' events from it (make one "
                          "with deploy/certs/make-certs DIR --site SITE)");
  }
  return {};
}

}  // namespace

Result<AgentConfig> load_agent_config(ConfigDoc& doc) {
  AgentConfig c;
  OUTPOST_TRY_ASSIGN(c.agent_id, doc.string("agent.id", host_name()));
  if (c.agent_id.empty() || c.agent_id.size() > 128) {
    return make_error(common_errc::config_invalid,
                      doc.where("agent.id") + ": agent.id = \"" + c.agent_id +
                          "\" is not allowed: expected 1 to 128 characters");
  }
  OUTPOST_TRY_ASSIGN(c.log_level, doc.choice("agent.log_level", "info",
                                             {"trace", "debug", "info", "warn", "error", "off"}));

  std::pair<std::string, uint16_t> http;
  OUTPOST_TRY_ASSIGN(http, doc.host_port("agent.http_listen", "127.0.0.1:9091", true));
  c.http_enabled = !http.first.empty();
  c.http_host = http.first;
  c.http_port = http.second;

  BufferOptions& b = c.buffer;
  b.agent_id = c.agent_id;
  OUTPOST_TRY_ASSIGN(b.path, doc.string("buffer.path", "/var/lib/outpost/buffer.db"));
  OUTPOST_TRY_ASSIGN(b.max_bytes, doc.bytes("buffer.max_bytes", "1GiB", 1ULL << 20, 1ULL << 44));
  OUTPOST_TRY_ASSIGN(b.max_file_bytes, doc.bytes("buffer.max_file_bytes", "0", 0, 1ULL << 44));
  if (b.max_file_bytes != 0 && b.max_file_bytes < b.max_bytes) {
    return make_error(common_errc::config_invalid,
                      doc.where("buffer.max_file_bytes") +
                          ": buffer.max_file_bytes must be 0 (no limit) or at least "
                          "buffer.max_bytes, since the file also holds indexes and free pages");
  }
  OUTPOST_TRY_ASSIGN(b.disk_reserve_bytes, doc.bytes("buffer.disk_reserve", "4MiB", 0, 1ULL << 32));
  std::string sync;
  OUTPOST_TRY_ASSIGN(sync,
                     doc.choice("buffer.synchronous", "full", {"off", "normal", "full", "extra"}));
  b.synchronous = sync == "off"      ? Synchronous::off
                  : sync == "normal" ? Synchronous::normal
                  : sync == "extra"  ? Synchronous::extra
                                     : Synchronous::full;
  int64_t n = 0;
  OUTPOST_TRY_ASSIGN(n, doc.integer("buffer.commit_max_events", 1000, 1, 100'000));
  b.commit_max_events = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(b.commit_interval_ns,
                     doc.duration_ns("buffer.commit_interval", "5ms", 0, 10 * kMs));
  OUTPOST_TRY_ASSIGN(n, doc.integer("buffer.queue_max_events", 100'000, 1'000, 10'000'000));
  b.queue_max_events = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(b.expire_interval_ns,
                     doc.duration_ns("buffer.expire_interval", "1s", 10 * kMs, 3600 * kSecond));
  OUTPOST_TRY_ASSIGN(n, doc.integer("buffer.identity_window", 4096, 0, 1'000'000));
  b.identity_window = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("buffer.quarantine_max_rows", 1000, 1, 1'000'000));
  b.quarantine_max_rows = static_cast<uint32_t>(n);
  uint64_t keep = 0;
  OUTPOST_TRY_ASSIGN(keep, doc.bytes("buffer.quarantine_keep_bytes", "4KiB", 0, 16u << 20));
  b.quarantine_keep_bytes = static_cast<uint32_t>(keep);
  OUTPOST_TRY_ASSIGN(b.encryption, load_buffer_encryption(doc));

  for (const std::string& name : doc.table_keys("buffer.kinds")) {
    if (!kind_from_name(name)) {
      return make_error(common_errc::config_unknown_key,
                        doc.where("buffer.kinds." + name) + ": buffer.kinds." + name +
                            " is not a kind: expected pixel, sensor or json");
    }
  }
  for (EventKind k : kAllKinds) {
    const std::string prefix = "buffer.kinds." + std::string(kind_name(k)) + ".";
    KindLimits& limits = b.kinds[kind_index(k)];
    std::string policy;
    OUTPOST_TRY_ASSIGN(
        policy, doc.choice(prefix + "policy",
                           default_policy(k) == FullPolicy::reject ? "reject" : "drop_oldest",
                           {"reject", "drop_oldest"}));
    limits.policy = policy == "reject" ? FullPolicy::reject : FullPolicy::drop_oldest;
    OUTPOST_TRY_ASSIGN(limits.max_age_ns,
                       doc.duration_ns(prefix + "max_age", "0s", 0, 3650 * kDay));
  }

  OUTPOST_TRY_ASSIGN(c.generator.enabled, doc.boolean("generator.enabled", false));
  OUTPOST_TRY_ASSIGN(n, doc.integer("generator.events", 0, 0, INT64_MAX));
  c.generator.events = static_cast<uint64_t>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("generator.rate", 1000, 1, 10'000'000));
  c.generator.rate = static_cast<uint64_t>(n);
  OUTPOST_TRY_ASSIGN(c.generator.stop_when_done, doc.boolean("generator.stop_when_done", false));

  ForwarderOptions& f = c.uplink.forwarder;
  f.agent_id = c.agent_id;
  std::string endpoints;
  OUTPOST_TRY_ASSIGN(endpoints, doc.string("uplink.endpoints", ""));
  for (size_t at = 0; at < endpoints.size();) {
    size_t comma = endpoints.find(',', at);
    std::string one =
        endpoints.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    one.erase(0, one.find_first_not_of(' '));
    one.erase(one.find_last_not_of(' ') + 1);
    auto colon = one.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == one.size() ||
        one.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
      return make_error(common_errc::config_invalid,
                        doc.where("uplink.endpoints") + ": uplink.endpoints = \"" + endpoints +
                            "\" is not allowed: expected HOST:PORT[,HOST:PORT...], e.g. "
                            "\"gateway.example.com:7443\"");
    }
    f.endpoints.push_back(one);
    at = comma == std::string::npos ? endpoints.size() : comma + 1;
  }
  c.uplink.enabled = !f.endpoints.empty();
  OUTPOST_TRY_ASSIGN(f.server_name, doc.string("uplink.server_name", ""));
  OUTPOST_TRY_ASSIGN(f.ca_file, doc.string("uplink.ca_file", "/etc/outpost/certs/ca.crt"));
  OUTPOST_TRY_ASSIGN(f.cert_file, doc.string("uplink.cert_file", "/etc/outpost/certs/device.crt"));
  OUTPOST_TRY_ASSIGN(f.key_file, doc.string("uplink.key_file", "/etc/outpost/certs/device.key"));
  OUTPOST_TRY_ASSIGN(n, doc.integer("uplink.batch_max_events", 2000, 1, 1'000'000));
  f.batch_max_events = static_cast<size_t>(n);
  OUTPOST_TRY_ASSIGN(f.batch_max_bytes,
                     memory_bytes(doc, "uplink.batch_max_bytes", "1MiB", 1024, 1ULL << 30));
  OUTPOST_TRY_ASSIGN(n, doc.integer("uplink.window", 8, 1, 1024));
  f.window = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("uplink.zstd_level", 1, 1, 19));
  f.zstd_level = static_cast<int>(n);
  OUTPOST_TRY_ASSIGN(f.connect_timeout_ns,
                     doc.duration_ns("uplink.connect_timeout", "10s", 100 * kMs, 600 * kSecond));
  OUTPOST_TRY_ASSIGN(f.ack_timeout_ns,
                     doc.duration_ns("uplink.ack_timeout", "60s", 100 * kMs, 3600 * kSecond));
  OUTPOST_TRY_ASSIGN(f.backoff_initial_ns,
                     doc.duration_ns("uplink.backoff_initial", "250ms", 10 * kMs, 600 * kSecond));
  OUTPOST_TRY_ASSIGN(f.backoff_max_ns,
                     doc.duration_ns("uplink.backoff_max", "30s", 10 * kMs, 3600 * kSecond));
  if (f.backoff_max_ns < f.backoff_initial_ns) f.backoff_max_ns = f.backoff_initial_ns;
  OUTPOST_TRY_ASSIGN(f.rate_limit_bytes_per_s, doc.bytes("uplink.rate_limit", "0", 0, 1ULL << 40));
  OUTPOST_TRY_ASSIGN(f.ping_interval_ns,
                     doc.duration_ns("uplink.ping_interval", "30s", 100 * kMs, 3600 * kSecond));
  OUTPOST_TRY_ASSIGN(n, doc.integer("uplink.certificate_warn_days", 30, 0, 3650));
  c.uplink.certificate_warn_days = static_cast<int>(n);
  f.certificate_warn_days = c.uplink.certificate_warn_days;
  OUTPOST_TRY_ASSIGN(f.tls_reload_interval_ns,
                     doc.duration_ns("uplink.tls_reload_interval", "5s", 0, 3600 * kSecond));
  if (f.tls_reload_interval_ns > 0 && f.tls_reload_interval_ns < 100 * kMs) {
    return make_error(common_errc::config_invalid,
                      doc.where("uplink.tls_reload_interval") +
                          ": uplink.tls_reload_interval is 0 (only on reload) or at least 100ms");
  }
  // The live lane (docs/protocol.md, "Lanes").
  std::string live_kinds;
  OUTPOST_TRY_ASSIGN(live_kinds, doc.string("uplink.live_kinds", ""));
  for (const std::string& k : split_list(live_kinds)) {
    auto kind = kind_from_name(k);
    if (!kind) {
      return make_error(common_errc::config_invalid,
                        doc.where("uplink.live_kinds") + ": uplink.live_kinds: \"" + k +
                            "\" is not a kind: expected pixel, sensor or json");
    }
    f.live_lane.kinds[kind_index(*kind)] = true;
  }
  OUTPOST_TRY_ASSIGN(n, doc.integer("uplink.live_min_priority", 0, 0, 1'000'000));
  f.live_lane.min_priority = static_cast<int32_t>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("uplink.live_share", 20, 1, 90));
  f.live_lane.share_percent = static_cast<uint32_t>(n);

  if (auto r = load_http_source(doc, c.http); !r) return r.error();
  if (auto r = load_mqtt_source(doc, c.agent_id, c.mqtt); !r) return r.error();
  if (auto r = load_spool_source(doc, c.spool); !r) return r.error();
  if (auto r = load_relay(doc, c); !r) return r.error();
  if (c.relay.enabled && f.live_lane.enabled()) {
    // The relay's batches of its devices' events carry their seqs, one device at a time.
    return make_error(common_errc::config_invalid,
                      doc.where("uplink.live_kinds") +
                          ": the live lane (uplink.live_kinds, uplink.live_min_priority) is not "
                          "supported with [relay] yet");
  }
  if (c.relay.enabled && b.encryption.seal) {
    // A relaying agent reads whose each stored event is from its first bytes (the site's
    // per-device drops and backlog); sealed, they are not readable there.
    return make_error(common_errc::config_invalid,
                      doc.where("buffer.encryption") +
                          ": buffer.encryption = \"aead\" is not supported with [relay] yet");
  }

  std::string validate;
  OUTPOST_TRY_ASSIGN(validate, doc.choice("contracts.validate", "gateway", {"gateway", "edge"}));
  c.validate_at_edge = validate == "edge";
  OUTPOST_TRY_ASSIGN(c.contracts, proto::read_contracts_config(doc));
  if (c.validate_at_edge && c.contracts.descriptor_set.empty()) {
    return make_error(common_errc::config_invalid,
                      "contracts.validate = \"edge\" needs contracts.descriptor_set (the "
                      "descriptor set the gateway uses, e.g. /usr/share/outpost/outpost-v1.desc)");
  }

  if (auto r = doc.check_no_unknown_keys(); !r) return r.error();
  return c;
}

}  // namespace outpost::agent
