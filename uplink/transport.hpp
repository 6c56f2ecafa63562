#pragma once
// The seam between a protocol session (agent_protocol.hpp, gateway_protocol.hpp) and what
// carries its frames: the agent's TLS stream over a socket implements it
// (agent/forwarder/tls_stream.hpp); a test can join two sessions in memory.
//
// Thread-safety: one thread at a time. Deadlines are Clock::mono_ns() values.

#include <cstdint>
#include <optional>

#include "common/result.hpp"
#include "outpost/v1/wire.pb.h"

namespace outpost::uplink {

class FrameTransport {
 public:
  virtual ~FrameTransport() = default;
  // Sends one frame, all of it by the deadline or an error.
  virtual Result<void> send(const v1::Frame& frame, int64_t deadline) = 0;
  // The next frame: one already received if there is one, else waits until the deadline
  // (nullopt then; a deadline in the past only looks). An error when the stream is unusable.
  virtual Result<std::optional<v1::Frame>> receive(int64_t deadline) = 0;
  // Ends the stream politely (best effort, by the deadline).
  virtual void close(int64_t deadline) = 0;
};

}  // namespace outpost::uplink
