#pragma once
// The gateway's network side: the TLS listener for agents (docs/protocol.md) and the plain
// HTTP listener for /healthz, /readyz and /metrics, on one Boost.Asio io_context run by
// `threads` threads. Each connection lives on its own strand.
//
// Thread-safety: start() and shutdown() from one controlling thread. The Sink, Metrics and
// Clock outlive the Server.

#include <chrono>
#include <cstdint>
#include <memory>

#include "common/clock.hpp"
#include "common/result.hpp"
#include "gateway/config.hpp"
#include "gateway/metrics.hpp"
#include "gateway/pipeline/validation.hpp"
#include "gateway/sinks/sink.hpp"

namespace outpost::gateway {

class Server {
 public:
  // Binds both listeners (port 0: a free port) and starts the threads.
  static Result<std::unique_ptr<Server>> start(const GatewayConfig& config,
                                               const ValidationStage& validation, Sink& sink,
                                               Metrics& metrics, const Clock& clock);
  ~Server();

  uint16_t port() const;
  uint16_t http_port() const;

  // Graceful stop: accept nothing new, let each session finish and acknowledge the batches
  // it has in flight, then close; after `grace`, close what is left. Returns how many
  // sessions had to be cut off.
  size_t shutdown(std::chrono::nanoseconds grace);

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::gateway
