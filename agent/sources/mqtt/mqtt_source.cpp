#include "agent/sources/mqtt/mqtt_source.hpp"

#include <mqtt/async_client.h>

#include <charconv>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/errc.hpp"
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

std::optional<NewEvent> map_reading(const std::string& topic, std::string_view payload,
                                    const std::string& pattern, size_t max_payload_bytes,
                                    int64_t now_ns, std::string* why) {
  if (payload.size() > max_payload_bytes) {
    *why = "payload of " + std::to_string(payload.size()) + " bytes exceeds " +
           std::to_string(max_payload_bytes);
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
  e.set_schema("sensor.v1");
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
  } else if (!payload.empty() && payload.front() == '{' && proto::split_json_events(payload, 1)) {
    // {"value": 21.5, "unit": "Cel", "ts": 1790000000.25}  (ts: seconds, or ms above 1e11)
    auto value = proto::json_member(payload, "value");
    auto number = value ? as_number(*value) : std::nullopt;
    if (number) {
      r->set_number(*number);
    } else {
      r->set_raw(std::string(payload));
      r->set_raw_payload(true);
    }
    if (auto unit = proto::json_string_member(payload, "unit")) r->set_unit(*unit);
    if (auto ts = proto::json_member(payload, "ts")) {
      if (auto t = as_number(*ts); t && *t > 0) {
        e.set_event_time(static_cast<int64_t>(*t > 1e11 ? *t * 1e6 : *t * 1e9));
      }
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
  std::atomic<int64_t> last_unmappable_log_ns{0};
  mqtt::connect_options connect_opts;
  // Paho reconnects by itself only after a connection was lost; the first connection (a
  // broker that starts after the agent) is retried here, with backoff.
  std::thread supervisor;
  std::mutex mu;
  std::condition_variable wake;
  bool stopping = false;

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
    auto event = map_reading(msg->get_topic(), msg->get_payload_str(), opt.pattern,
                             opt.max_payload_bytes, clock.now_ns(), &why);
    if (!event) {
      ++counters.unmappable;
      const int64_t now = clock.now_ns();
      if (now - last_unmappable_log_ns.exchange(now) > 10'000'000'000) {
        log->warn("dropped an MQTT message that cannot be mapped: {} (counted)", why);
      }
      return;
    }
    std::vector<NewEvent> events;
    events.push_back(std::move(*event));
    // Committed before the callback returns: Paho has already sent the PUBACK.
    auto r = buffer.append(std::move(events), Commit::now).get();
    if (r) {
      ++counters.readings;
    } else {
      ++counters.refused_by_buffer;
      log->error(
          "the buffer refused an MQTT reading ({}); it is lost to the broker's QoS 1 "
          "because Paho acknowledged it before the callback",
          r.error().describe());
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
}

const MqttSourceCounters& MqttSource::counters() const { return impl_->counters; }
bool MqttSource::connected() const { return impl_->is_connected; }

}  // namespace outpost::agent
