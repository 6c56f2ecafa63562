#pragma once
// The agent's side of the uplink protocol (docs/protocol.md) as a state machine with no socket,
// no buffer and no clock in it: the forwarder feeds it the gateway's frames and the time, asks
// it whether a batch may go, and sends the frames it returns. So the protocol's decisions (the
// window, acks in order, retry-later, the ack timeout, pings) are unit-tested in memory against
// GatewayProtocol on virtual time (tests/unit/uplink/protocol_test.cpp).
//
//   start() ─▶ Hello ─▶ awaiting Welcome ─▶ active ─▶ (an error: the session is over)
//
// Batches cover contiguous seq ranges starting above the buffer's acked seq, so the gateway can
// tell a gap (an earlier batch not written) from a duplicate. A retry-later abandons every batch
// in flight: they are sent again from the last acknowledged seq after the pause, and acks of the
// abandoned ones are ignored.
//
// Thread-safety: one thread at a time (the forwarder's). Times are Clock::mono_ns() values.

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "outpost/v1/wire.pb.h"

namespace outpost::uplink {

struct AgentProtocolOptions {
  std::string agent_id;
  std::string software_version = "0.1.0";
  uint32_t window = 8;                // batches in flight, at most (the gateway may lower it)
  size_t batch_max_events = 1000;     // per batch, at most (likewise)
  size_t batch_max_bytes = 1u << 20;  // raw bytes per batch, at most (likewise)
  int64_t setup_timeout_ns = 10'000'000'000;  // Hello to Welcome
  int64_t ack_timeout_ns = 30'000'000'000;    // a batch not acknowledged by then ends the session
  int64_t ping_interval_ns = 15'000'000'000;  // a Ping after this long without sending
  int64_t min_retry_pause_ns = 100'000'000;   // the least pause a retry-later asks for
};

// A batch the gateway acknowledged: the buffer may delete everything up to last_seq.
struct AckedBatch {
  uint64_t batch_seq = 0;
  uint64_t last_seq = 0;
  uint32_t events = 0;
};

// What the driver must do after a call: send `frames` in order, apply `acked` to the buffer.
struct AgentOutput {
  std::vector<v1::Frame> frames;
  std::vector<AckedBatch> acked;
  bool connected = false;            // the Welcome came in this call
  std::optional<std::string> pause;  // a retry-later came in: its reason, for the log
};

class AgentProtocol {
 public:
  // `acked_seq`: the last seq the buffer knows to be acknowledged; batches start above it.
  AgentProtocol(AgentProtocolOptions options, uint64_t acked_seq);

  // Queues the Hello; the Welcome is due by now + setup_timeout_ns.
  void start(int64_t now);
  // A frame from the gateway. An error ends the session (its message says why).
  Result<void> on_frame(const v1::Frame& frame, int64_t now);
  // Time passed: an error when a deadline was missed; may queue a Ping.
  Result<void> on_timer(int64_t now);
  // When on_timer() has something to decide next (a deadline or the next Ping).
  int64_t next_timer(int64_t now) const;

  // True when a batch may be sent now: welcomed, the window open, no retry-later pause.
  bool may_send(int64_t now) const;
  // The next batch covers seqs above this...
  uint64_t cursor() const { return cursor_; }
  // ...with at most these many events and raw bytes (the agent's and the gateway's limits).
  size_t max_events() const { return max_events_; }
  size_t max_bytes() const { return max_bytes_; }
  // The Batch frame for the events (cursor(), last_seq], now in flight. `payload` is the
  // encoded events (compressed as `codec` says), `raw_bytes` their size before compression.
  v1::Frame batch(uint64_t last_seq, uint32_t event_count, v1::Codec codec, std::string payload,
                  uint64_t raw_bytes, int64_t now);

  AgentOutput take_output();
  bool active() const { return state_ == State::active; }
  const v1::Welcome& welcome() const { return welcome_; }
  uint32_t window() const { return window_; }
  size_t in_flight() const { return in_flight_.size(); }

 private:
  enum class State { idle, awaiting_welcome, active };
  struct InFlight {
    uint64_t batch_seq;
    uint64_t last_seq;
    uint32_t events;
    int64_t sent_at;
  };
  Result<void> on_welcome(const v1::Frame& frame);
  Result<void> on_ack(const v1::Ack& ack, int64_t now);
  void send(v1::Frame frame, int64_t now);

  AgentProtocolOptions opt_;
  State state_ = State::idle;
  AgentOutput out_;
  v1::Welcome welcome_;
  uint32_t window_ = 1;
  size_t max_events_ = 1;
  size_t max_bytes_ = 4096;
  int64_t setup_deadline_ = 0;
  std::deque<InFlight> in_flight_;
  uint64_t next_batch_seq_ = 1;
  uint64_t ignore_below_ = 0;  // acks of batches abandoned by a retry-later
  uint64_t acked_;             // the last seq the gateway acknowledged
  uint64_t cursor_;            // the last seq sent
  int64_t last_sent_ = 0;
  int64_t resume_at_ = 0;  // after a retry-later: send no batch before this
};

}  // namespace outpost::uplink
