#pragma once
// The agent's own HTTP endpoints (agent.http_listen, plain HTTP, loopback by default):
//   GET /healthz  200 when the buffer is healthy; 503 with the reason otherwise
//   GET /readyz   200 while the buffer takes events; 503 with the reason while it refuses
//                 them (disk full, buffer full for `reject` kinds, corruption)
//   GET /metrics  Prometheus text: backlog (events, bytes, oldest pending age), drops, the
//                 uplink's state, send rate, drain ETA and last error (docs/configuration.md)
// One Asio thread of its own; it samples the forwarder every second for the send rate.
//
// Thread-safety: start()/stop() from the owning thread. The Buffer, the Forwarder (optional)
// and the Clock outlive the StatusServer.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "agent/buffer/buffer.hpp"
#include "agent/forwarder/forwarder.hpp"
#include "common/clock.hpp"
#include "common/result.hpp"

namespace outpost::agent {

class StatusServer {
 public:
  // Binds HOST:PORT (port 0: a free port) and starts serving.
  // `more_metrics`, when set, appends more Prometheus text to /metrics (edge validation's).
  static Result<std::unique_ptr<StatusServer>> start(
      const std::string& host, uint16_t port, Buffer& buffer, const Forwarder* forwarder,
      const Clock& clock, std::function<void(std::string&)> more_metrics = {});
  ~StatusServer();
  uint16_t port() const;

  struct Impl;

 private:
  explicit StatusServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::agent
