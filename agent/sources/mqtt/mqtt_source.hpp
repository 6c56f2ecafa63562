#pragma once
// The MQTT source (docs/sources.md): subscribes to topic filters on a broker (normally a
// local mosquitto) with QoS 1 and a persistent session (fixed client id, clean session off),
// so that readings published while the agent is down are delivered when it returns. Maps a
// topic pattern such as "sensors/{device}/{metric}" to a SensorReading.
//
// Each message is committed to the buffer before the message callback returns. Paho sends
// the PUBACK before the callback finishes (DESIGN.md, Known traps): a kill in between can
// lose that one message; the window is one buffer commit. The other way round, a kill after
// the commit can lose the PUBACK, and the broker then sends the message again with its DUP
// flag: its identity (packet id, topic, payload digest) is already in the buffer, which
// stores it only once. Messages that cannot become a reading (too large, topic off the
// pattern, binary payload unless keep_binary) go to the buffer's quarantine table with the
// reason; they are acknowledged to the broker and never retried.
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

// How a message becomes a SensorReading.
struct MqttMapping {
  std::string pattern = "sensors/{device}/{metric}";
  size_t max_payload_bytes = 64 * 1024;
  // A payload that is not UTF-8 text: kept as raw bytes (flagged) when true, quarantined
  // when false (a sensor that sends binary must be declared, not guessed at).
  bool keep_binary = false;
  // The unit of a JSON payload's "ts": by magnitude (auto: below 1e11 seconds, below 1e14
  // milliseconds, below 1e17 microseconds, else nanoseconds), or as configured.
  enum class TsUnit { automatic, s, ms, us, ns } ts_unit = TsUnit::automatic;
  bool operator==(const MqttMapping&) const = default;
};

// A reading's "ts" in ns since the epoch, or nullopt with the reason (`why`): not a number,
// not positive, or beyond what an int64 of ns holds (after year 2262).
// Marks a mapped reading as delivered retained (SensorReading.retained).
void mark_retained(NewEvent& event);

std::optional<int64_t> reading_time_ns(std::string_view ts, MqttMapping::TsUnit unit,
                                       std::string* why);

// TLS to the broker (an ssl:// broker URI). Empty files: the system's trust store, no
// client certificate.
struct MqttTls {
  std::string ca_file, cert_file, key_file;
  bool verify_host = true;  // the broker certificate must name the host in the URI
  bool operator==(const MqttTls&) const = default;
};

// When a message is committed, relative to Paho's callback (which runs after Paho has sent the
// PUBACK). `each`: before the callback returns — a kill loses at most the one message in the
// callback, and the rate is bounded by one commit per message. `grouped`: the callback queues
// the reading and returns; the buffer commits in groups (buffer.commit_interval) — a kill
// loses at most the readings not yet committed (at most max_uncommitted, typically one
// commit_interval's worth), for many times the rate. docs/sources.md has the measurements.
enum class MqttCommit { each, grouped };

struct MqttSourceOptions {
  std::string broker = "tcp://127.0.0.1:1883";
  MqttCommit commit = MqttCommit::each;
  uint32_t max_uncommitted = 1000;  // grouped: the callback waits beyond this many
  std::string client_id;  // fixed: the broker keeps the session (and queued readings) by it
  std::vector<std::string> topics = {"sensors/#"};
  MqttMapping mapping;
  std::string username, password;
  MqttTls tls;
  int64_t reconnect_min_ns = 1'000'000'000;
  int64_t reconnect_max_ns = 60'000'000'000;
  bool operator==(const MqttSourceOptions&) const = default;
};

struct MqttSourceCounters {
  std::atomic<uint64_t> readings{0};  // committed to the buffer
  std::atomic<uint64_t> refused_by_buffer{0};
  std::atomic<uint64_t> quarantined{0};  // too large, topic off the pattern, binary
  std::atomic<uint64_t> duplicates{0};   // redelivered (DUP) messages already stored
  std::atomic<uint64_t> connects{0};
};

// What a topic and payload become; nullopt with `why` set when the message cannot be mapped.
std::optional<NewEvent> map_reading(const std::string& topic, std::string_view payload,
                                    const MqttMapping& mapping, int64_t now_ns, std::string* why);

// The identity the buffer de-duplicates redeliveries by: packet id, topic, payload digest.
std::string message_identity(int packet_id, std::string_view topic, std::string_view payload);

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
