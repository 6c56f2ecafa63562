#pragma once
// The gateway's side of the uplink protocol (docs/protocol.md) as a state machine with no
// socket, no TLS and no sink in it: whoever accepts agents (the gateway's server, or an agent
// that relays for the devices behind it) feeds it the frames it decoded and the sink's answers,
// and carries out what it returns: frames to send, batches to write, refusals to count and
// audit, and when to close. Unit-tested in memory against AgentProtocol
// (tests/unit/uplink/protocol_test.cpp).
//
//   awaiting Hello ─▶ active ─▶ ending (Goodbye sent, or the agent's Goodbye) ─▶ closed
//
// What it decides: the Hello's agent id against the certificate's identity; the Welcome with
// the limits; per batch the event cap, the rate limit (a RateGate the host shares between a
// device's sessions), decompression under the caps and the payload check; acks in batch_seq
// order whatever order the sink answers in; back-pressure (no frames read while the window is
// full); the idle timeout (never while the sink holds a batch); draining at shutdown.
//
// Thread-safety: one thread at a time (the connection's strand). Times are Clock::mono_ns().

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.hpp"
#include "outpost/v1/wire.pb.h"
#include "uplink/frame.hpp"

namespace outpost::uplink {

inline constexpr const char* kGatewayVersion = "0.1.0";

// The URI SAN that makes a certificate a relay's, and the one that puts a device in a site
// (docs/protocol.md, "Relays"). Roles, never taken as an identity.
inline constexpr const char* kRelayUri = "urn:outpost:relay:";
inline constexpr const char* kSiteUri = "urn:outpost:site:";

struct SessionLimits {
  uint32_t max_frame_bytes = 16u << 20;
  uint32_t max_in_flight_batches = 8;
  uint64_t max_decompressed_bytes = 64u << 20;
  int max_window_log = 23;
  uint32_t max_events_per_batch = 100'000;
  int64_t idle_timeout_ns = 120'000'000'000;
};

// Identities become file contents, log fields and metric labels: printable ASCII, 1 to 128.
bool acceptable_identity(const std::string& id);

// Per-device rate limits, shared by every session of the device (one gateway: the server).
class RateGate {
 public:
  virtual ~RateGate() = default;
  // Takes `events` from the device's allowance; false: over its rate, retry later.
  virtual bool admit(const std::string& identity, uint64_t events) = 0;
};

// Whether a relay may send the events of another device (docs/protocol.md, "Relays"): the
// host checks the device's certificate that the relay presents.
class RelayCheck {
 public:
  virtual ~RelayCheck() = default;
  // OK when the relay of `site` may speak for `origin`, whose certificate (DER) it presents;
  // else an error saying why not (for the audit log).
  virtual Result<void> vouch(const std::string& site, const std::string& origin,
                             std::string_view certificate_der) = 0;
};

// A batch that passed every check, for the host's sink. Answer it with on_written(batch_seq).
struct BatchToWrite {
  uint64_t batch_seq = 0;
  wire::DecodedBatch batch;
};

// Something refused, for metrics (`label`), the log and, when `audit`, the audit log.
struct Refusal {
  enum class Kind { session, batch_rejected, batch_rate_limited };
  Kind kind = Kind::session;
  std::string label;
  std::string message;
  bool audit = false;
};

struct GatewayOutput {
  std::vector<v1::Frame> frames;  // send in order
  std::vector<BatchToWrite> writes;
  std::vector<Refusal> refusals;
  std::optional<std::string> established;  // the Hello was accepted: the agent's version
  // Devices a relay began to send for in this session (each once): for the sink, as a new
  // session of each (MarkBook::session_started), before the writes.
  std::vector<std::string> origins_started;
  uint64_t bytes_compressed = 0, bytes_raw = 0;
  enum class End { none, after_send, now };
  End end = End::none;  // after_send: close once `frames` are out (a Goodbye is among them)
};

class GatewayProtocol {
 public:
  // `relay_site`: the site the certificate makes this peer a relay for (its URI SAN
  // urn:outpost:relay:SITE), or empty: it may send only its own events. `relays` checks the
  // devices a relay speaks for (needed when relay_site is set).
  GatewayProtocol(SessionLimits limits, std::string identity, RateGate& rates,
                  std::string relay_site = {}, RelayCheck* relays = nullptr);

  // A frame the agent sent (its payload may be moved out).
  void on_frame(v1::Frame& frame, int64_t now);
  // The stream could not be parsed into frames (wire_errc): the session ends.
  void on_stream_error(const Error& error);
  // The sink's answer for a batch of writes: OK, or retry-later with the error's words.
  void on_written(uint64_t batch_seq, const Result<void>& result);
  // Bytes came in (any: TLS records too): the idle timeout starts again.
  void on_activity(int64_t now) { last_activity_ = now; }
  // The idle timer fired: ends an idle session unless the sink holds one of its batches.
  void on_timer(int64_t now);
  // Shutdown: read nothing more, end once the batches in the sink are answered.
  void drain();
  // A newer session of the same device took over.
  void replaced();

  GatewayOutput take_output();
  // Whether the host should read more frames now (false while the window is full: the next
  // read resumes after an ack).
  bool wants_frames() const;
  bool open() const { return state_ == State::awaiting_hello || state_ == State::active; }
  uint32_t in_flight() const { return in_flight_; }

 private:
  enum class State { awaiting_hello, active, ended };
  void on_hello(const v1::Frame& f);
  void on_batch(v1::Batch& b);
  void reject_batch(uint64_t batch_seq, const std::string& label, const std::string& why,
                    bool audit = false);
  // The device whose events the batch holds (the session's identity, or one a relay may speak
  // for); nullopt when the batch was rejected.
  std::optional<std::string> origin_of(const v1::Batch& b);
  void answer(uint64_t batch_seq, v1::Frame frame);
  void goodbye(const std::string& reason);
  void refuse(Refusal::Kind kind, std::string label, std::string message, bool audit = false);

  SessionLimits limits_;
  std::string identity_;
  RateGate& rates_;
  std::string relay_site_;
  RelayCheck* relays_;
  State state_ = State::awaiting_hello;
  bool draining_ = false;
  GatewayOutput out_;
  uint32_t in_flight_ = 0;
  // Per device (the identity, or a relay's origins): the first seq of its first batch in this
  // session. A relay's vouched origins are its keys other than the identity.
  std::unordered_map<std::string, uint64_t> session_first_seq_;
  uint64_t last_batch_seq_ = 0;  // acks go out in batch_seq order only if these never go back
  int64_t last_activity_ = 0;
  struct Answer {
    uint64_t batch_seq;
    std::optional<v1::Frame> frame;  // nullopt while the sink writes the batch
  };
  std::deque<Answer> answers_;
};

}  // namespace outpost::uplink
