#pragma once
// The MQTT source (docs/sources.md): subscribes to topic filters on a broker (normally a
// local mosquitto) with QoS 1 and a persistent session (fixed client id, clean session off),
// so that readings published while the agent is down are delivered when it returns. Maps a
// topic pattern such as "sensors/{device}/{metric}" to a SensorReading.
//
// Each message is committed to the buffer before the message callback returns. Paho sends
// the PUBACK before the callback finishes (DESIGN.md, Known traps): a kill in between can
// lose that one message; the window is one buffer commit.
//
// Thread-safety: start() and the destructor from the owning thread; counters() from any.
// The Buffer and the Clock outlive the MqttSource.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/buffer/buffer.hpp"
#include "common/clock.hpp"
#include "common/result.hpp"

namespace outpost::agent {

struct MqttSourceOptions {
  std::string broker = "tcp://127.0.0.1:1883";
  std::string client_id;  // fixed: the broker keeps the session (and queued readings) by it
  std::vector<std::string> topics = {"sensors/#"};
  std::string pattern = "sensors/{device}/{metric}";
  std::string username, password;
  size_t max_payload_bytes = 64 * 1024;
  int64_t reconnect_min_ns = 1'000'000'000;
  int64_t reconnect_max_ns = 60'000'000'000;
};

struct MqttSourceCounters {
  std::atomic<uint64_t> readings{0};  // committed to the buffer
  std::atomic<uint64_t> refused_by_buffer{0};
  std::atomic<uint64_t> unmappable{0};  // topic not matching the pattern, or too large
  std::atomic<uint64_t> connects{0};
};

// What a topic and payload become; nullopt with `why` set when the message cannot be mapped.
std::optional<NewEvent> map_reading(const std::string& topic, std::string_view payload,
                                    const std::string& pattern, size_t max_payload_bytes,
                                    int64_t now_ns, std::string* why);

class MqttSource {
 public:
  static Result<std::unique_ptr<MqttSource>> start(MqttSourceOptions options, Buffer& buffer,
                                                   const Clock& clock);
  ~MqttSource();
  const MqttSourceCounters& counters() const;
  bool connected() const;

  struct Impl;

 private:
  explicit MqttSource(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::agent
