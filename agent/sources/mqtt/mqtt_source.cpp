#include "agent/sources/mqtt/mqtt_source.hpp"

// Paho C++ 1.2 shows a message's packet id only through c_struct(), which its headers
// declare under UNIT_TESTS. The macro adds inline accessors and nothing else (no member, no
// layout change), so defining it here is safe; the packet id is part of a message's identity.
#define UNIT_TESTS 1
#include <mqtt/async_client.h>
#undef UNIT_TESTS

#include <charconv>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/errc.hpp"
#include "common/json/json_reader.hpp"
#include "common/log.hpp"
#include "common/utf8.hpp"
#include "outpost/v1/event.pb.h"
#include "proto/event_codec.hpp"

namespace outpost::agent {
namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t at = 0;
  while (true) {
    size_t next = s.find(sep, at);
    out.push_back(s.substr(at, next == std::string::npos ? std::string::npos : next - at));
    if (next == std::string::npos) return out;
    at = next + 1;
  }
}

std::optional<double> as_number(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\n')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\n')) text.remove_suffix(1);
  double v = 0;
  auto r = std::from_chars(text.data(), text.data() + text.size(), v);
  if (r.ec != std::errc() || r.ptr != text.data() + text.size() || !std::isfinite(v)) {
    return std::nullopt;
  }
  return v;
}

}  // namespace

std::string message_identity(int packet_id, std::string_view topic, std::string_view payload) {
  // FNV-1a 64 of the payload: stable across builds and versions (the identities outlive a
  // restart and an upgrade), and only compared between copies of one packet id and topic.
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : payload) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  std::string id = "mqtt:" + std::to_string(packet_id) + ":";
  id.append(topic);
  id.push_back('\0');
  for (int i = 0; i < 8; ++i) id.push_back(static_cast<char>(h >> (8 * i)));
  id += ":" + std::to_string(payload.size());
  return id;
}

void mark_retained(NewEvent& event) {
  // Field 11 (sensor) once more with only `retained`: protobuf merges repeated occurrences of
  // a message field, so this is the reading with retained = true, without re-encoding it.
  event.body += std::string("\x5a\x02\x40\x01", 4);
}

std::optional<int64_t> reading_time_ns(std::string_view ts, MqttMapping::TsUnit unit,
                                       std::string* why) {
  using Unit = MqttMapping::TsUnit;
  auto t = as_number(ts);
  if (!t) {
    *why = "\"ts\" is not a number: " + utf8::repaired(std::string(ts.substr(0, 64)));
    return std::nullopt;
  }
  if (*t <= 0) {
    *why = "\"ts\" " + std::string(ts.substr(0, 64)) + " is not a positive time since the epoch";
    return std::nullopt;
  }
  if (unit == Unit::automatic) {
    unit = *t < 1e11 ? Unit::s : *t < 1e14 ? Unit::ms : *t < 1e17 ? Unit::us : Unit::ns;
  }
  const int64_t scale = unit == Unit::s    ? 1'000'000'000
                        : unit == Unit::ms ? 1'000'000
                        : unit == Unit::us ? 1'000
                                           : 1;
  // An integer is scaled exactly (a double holds ns only to 2^53); a fraction through double.
  int64_t whole = 0;
  const auto parsed = std::from_chars(ts.data(), ts.data() + ts.size(), whole);
  if (parsed.ec == std::errc() && parsed.ptr == ts.data() + ts.size()) {
    int64_t ns = 0;
    if (!__builtin_mul_overflow(whole, scale, &ns)) return ns;
  } else if (*t * static_cast<double>(scale) < 9.2e18) {
    return static_cast<int64_t>(*t * static_cast<double>(scale));
  }
  *why = "\"ts\" " + std::string(ts.substr(0, 64)) +
         " is beyond the year 2262 in the unit it was read in (sources.mqtt.ts_unit)";
  return std::nullopt;
}

std::optional<NewEvent> map_reading(const std::string& topic, std::string_view payload,
                                    const MqttMapping& mapping, int64_t now_ns, std::string* why) {
  const std::string& pattern = mapping.pattern;
  if (payload.size() > mapping.max_payload_bytes) {
    *why = "payload of " + std::to_string(payload.size()) + " bytes exceeds " +
           "sources.mqtt.max_payload_bytes (" + std::to_string(mapping.max_payload_bytes) + ")";
    return std::nullopt;
  }
  if (!mapping.keep_binary && !utf8::valid(payload)) {
    *why =
        "payload is not UTF-8 text (set sources.mqtt.keep_binary = true to keep binary "
        "payloads as raw readings)";
    return std::nullopt;
  }
  const auto levels = split(topic, '/');
  const auto parts = split(pattern, '/');
  if (levels.size() != parts.size()) {
    *why = "topic \"" + topic + "\" does not match the pattern \"" + pattern + "\"";
    return std::nullopt;
  }
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_SENSOR);
  e.set_schema("sensor.reading.v1");
  e.set_event_time(now_ns);
  auto* r = e.mutable_sensor();
  r->set_topic(topic);
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i] == "{device}") {
      r->set_device(levels[i]);
    } else if (parts[i] == "{metric}") {
      r->set_metric(levels[i]);
    } else if (parts[i] != levels[i]) {
      *why = "topic \"" + topic + "\" does not match the pattern \"" + pattern + "\"";
      return std::nullopt;
    }
  }
  if (!utf8::valid(topic)) {
    *why = "topic is not valid UTF-8";
    return std::nullopt;
  }
  if (auto n = as_number(payload)) {
    r->set_number(*n);
  } else if (!payload.empty() && payload.front() == '{' && json::split_json_events(payload, 1)) {
    // {"value": 21.5, "unit": "Cel", "ts": 1790000000.25}  (ts: reading_time_ns)
    auto value = json::json_member(payload, "value");
    auto number = value ? as_number(*value) : std::nullopt;
    if (number) {
      r->set_number(*number);
    } else {
      r->set_raw(std::string(payload));
      r->set_raw_payload(true);
    }
    if (auto unit = json::json_string_member(payload, "unit")) r->set_unit(*unit);
    if (auto ts = json::json_member(payload, "ts")) {
      auto t = reading_time_ns(*ts, mapping.ts_unit, why);
      if (!t) return std::nullopt;
      e.set_event_time(*t);
    }
  } else {
    r->set_raw(std::string(payload));  // kept as it came, flagged
    r->set_raw_payload(true);
  }
  NewEvent out;
  out.kind = EventKind::sensor;
  out.event_time_ns = e.event_time();
  out.body = e.SerializeAsString();
  return out;
}

struct MqttSource::Impl {
  MqttSourceOptions opt;
  Buffer& buffer;
  const Clock& clock;
  std::shared_ptr<spdlog::logger> log = log::get("mqtt-source");
  MqttSourceCounters counters;
  std::unique_ptr<mqtt::async_client> client;
  std::atomic<bool> is_connected{false};
  std::atomic<int64_t> last_quarantine_log_ns{0};
  mqtt::connect_options connect_opts;
  // Paho reconnects by itself only after a connection was lost; the first connection (a
  // broker that starts after the agent) is retried here, with backoff.
  std::thread supervisor;
  std::mutex mu;
  std::condition_variable wake;
  bool stopping = false;
  std::condition_variable commits_done;  // grouped: an append's callback ran
  uint32_t uncommitted = 0;

  void supervise() {
    int64_t backoff = opt.reconnect_min_ns;
    std::unique_lock lock(mu);
    while (!stopping) {
      if (!is_connected && !client->is_connected()) {
        lock.unlock();
        try {
          client->connect(connect_opts)->wait_for(std::chrono::seconds(10));
          backoff = opt.reconnect_min_ns;
        } catch (const mqtt::exception& e) {
          log->warn("cannot connect to {}: {}; retrying", opt.broker, e.what());
          backoff = std::min(opt.reconnect_max_ns, backoff * 2);
        }
        lock.lock();
      }
      wake.wait_for(lock, std::chrono::nanoseconds(backoff), [this] { return stopping; });
    }
  }

  Impl(MqttSourceOptions o, Buffer& b, const Clock& c) : opt(std::move(o)), buffer(b), clock(c) {}

  void on_message(const mqtt::const_message_ptr& msg) {
    std::string why;
    const std::string& topic = msg->get_topic();
    const std::string& payload = msg->get_payload_str();
    auto event = map_reading(topic, payload, opt.mapping, clock.now_ns(), &why);
    if (!event) {
      quarantine(topic, payload, why);
      return;
    }
    if (msg->is_retained()) {
      // A retained message comes again at every subscription (each agent start) with a new
      // packet id: its identity is the topic and payload alone, and it is always checked, so
      // an unchanged retained value is stored once; a changed one is a new reading.
      event->identity = message_identity(-1, topic, payload);
      event->maybe_duplicate = true;
      mark_retained(*event);
    } else {
      event->identity = message_identity(msg->c_struct().msgid, topic, payload);
      event->maybe_duplicate = msg->is_duplicate();
    }
    std::vector<NewEvent> events;
    events.push_back(std::move(*event));
    if (opt.commit == MqttCommit::each) {
      // Committed before the callback returns: Paho has already sent the PUBACK.
      committed(buffer.append(std::move(events), Commit::now).get());
      return;
    }
    Commit when = Commit::grouped;
    {
      // Bounded: beyond max_uncommitted the callback waits, and so does Paho's reading of
      // the socket (the broker holds the rest). The append that fills the window is
      // committed at once: the next callback will wait for it, so lingering for more
      // appends would only stall the stream (with a small window, below `each`'s rate).
      std::unique_lock lock(mu);
      commits_done.wait(lock, [this] { return uncommitted < opt.max_uncommitted; });
      if (++uncommitted >= opt.max_uncommitted) when = Commit::now;
    }
    buffer.append(
        std::move(events),
        [this](const Result<AppendResult>& r) {
          committed(r);
          {
            std::lock_guard lock(mu);
            --uncommitted;
          }
          commits_done.notify_all();
        },
        when);
  }

  void committed(const Result<AppendResult>& r) {
    if (r && r->duplicates > 0) {
      ++counters.duplicates;
    } else if (r) {
      ++counters.readings;
    } else {
      ++counters.refused_by_buffer;
      log->error(
          "the buffer refused an MQTT reading ({}); it is lost to the broker's QoS 1 "
          "because Paho acknowledged it before the callback",
          r.error().describe());
    }
  }

  void quarantine(const std::string& topic, const std::string& payload, const std::string& why) {
    auto r = buffer.quarantine(QuarantineEntry{"mqtt", topic, why, payload});
    if (r) {
      ++counters.quarantined;
    } else {
      ++counters.refused_by_buffer;
    }
    const int64_t now = clock.now_ns();
    if (now - last_quarantine_log_ns.exchange(now) > 10'000'000'000) {
      if (r) {
        log->warn(
            "quarantined an MQTT message on {}: {} (counted; `outpost-agent buffer quarantine` "
            "lists them)",
            utf8::repaired(topic), why);
      } else {
        log->error("could not quarantine an MQTT message on {} ({}): {}", utf8::repaired(topic),
                   why, r.error().describe());
      }
    }
  }

  void subscribe() {
    for (const std::string& t : opt.topics) {
      try {
        client->subscribe(t, 1);
      } catch (const mqtt::exception& e) {
        log->error("subscribe {}: {}", t, e.what());
      }
    }
  }
};

Result<std::unique_ptr<MqttSource>> MqttSource::start(MqttSourceOptions options, Buffer& buffer,
                                                      const Clock& clock) {
  auto impl = std::make_unique<Impl>(std::move(options), buffer, clock);
  Impl* raw = impl.get();
  try {
    impl->client = std::make_unique<mqtt::async_client>(impl->opt.broker, impl->opt.client_id);
    impl->client->set_message_callback([raw](mqtt::const_message_ptr m) { raw->on_message(m); });
    impl->client->set_connected_handler([raw](const std::string&) {
      raw->is_connected = true;
      ++raw->counters.connects;
      raw->log->info("connected to {} as {}", raw->opt.broker, raw->opt.client_id);
      raw->subscribe();
    });
    impl->client->set_connection_lost_handler([raw](const std::string& cause) {
      raw->is_connected = false;
      raw->log->warn("lost the broker {}: {}; reconnecting", raw->opt.broker, cause);
    });
    mqtt::connect_options& c = impl->connect_opts;
    c.set_clean_session(false);
    c.set_keep_alive_interval(30);
    c.set_automatic_reconnect(static_cast<int>(impl->opt.reconnect_min_ns / 1'000'000'000),
                              static_cast<int>(impl->opt.reconnect_max_ns / 1'000'000'000));
    if (!impl->opt.username.empty()) c.set_user_name(impl->opt.username);
    if (!impl->opt.password.empty()) c.set_password(impl->opt.password);
    const MqttTls& tls = impl->opt.tls;
    if (impl->opt.broker.rfind("ssl://", 0) == 0 || impl->opt.broker.rfind("mqtts://", 0) == 0) {
      mqtt::ssl_options ssl;
      if (!tls.ca_file.empty()) ssl.set_trust_store(tls.ca_file);
      if (!tls.cert_file.empty()) ssl.set_key_store(tls.cert_file);
      if (!tls.key_file.empty()) ssl.set_private_key(tls.key_file);
      ssl.set_enable_server_cert_auth(true);
      ssl.set_verify(tls.verify_host);
      ssl.set_ssl_version(MQTT_SSL_VERSION_DEFAULT);
      ssl.set_error_handler([raw](const std::string& msg) {
        raw->log->warn("TLS to the broker {}: {}", raw->opt.broker, msg);
      });
      c.set_ssl(std::move(ssl));
    }
    impl->supervisor = std::thread([raw] { raw->supervise(); });
  } catch (const mqtt::exception& e) {
    return make_error(common_errc::config_invalid,
                      "sources.mqtt: cannot use broker " + impl->opt.broker + ": " + e.what());
  }
  return std::unique_ptr<MqttSource>(new MqttSource(std::move(impl)));
}

MqttSource::MqttSource(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MqttSource::~MqttSource() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  if (impl_->supervisor.joinable()) impl_->supervisor.join();
  try {
    if (impl_->client->is_connected())
      impl_->client->disconnect()->wait_for(std::chrono::seconds(2));
  } catch (const mqtt::exception&) {
  }
  // Grouped commits still to come call back into impl_: wait for them (the buffer outlives
  // the source and commits within commit_interval).
  std::unique_lock lock(impl_->mu);
  impl_->commits_done.wait(lock, [this] { return impl_->uncommitted == 0; });
}

const MqttSourceCounters& MqttSource::counters() const { return impl_->counters; }
bool MqttSource::connected() const { return impl_->is_connected; }

}  // namespace outpost::agent
