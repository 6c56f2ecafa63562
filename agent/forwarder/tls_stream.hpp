#pragma once
// The agent's end of the uplink's transport: a TCP connection with a deadline on every
// operation (STYLE rule 5), mutual TLS over it (common/tls), and the frame codec
// (uplink/frame.hpp). It implements uplink::FrameTransport, so the forwarder's session is the
// protocol (uplink/agent_protocol.hpp) driven over this stream.
//
// Thread-safety: one thread at a time (the forwarder's). The Clock and the TLS context
// outlive the stream.

#include <memory>
#include <string>

#include "common/clock.hpp"
#include "common/tls/tls.hpp"
#include "uplink/transport.hpp"

namespace outpost::agent {

class TlsFrameStream final : public uplink::FrameTransport {
 public:
  // Connects to host:port and completes the TLS handshake, both by `deadline`.
  static Result<std::unique_ptr<TlsFrameStream>> connect(const std::string& host,
                                                         const std::string& port,
                                                         std::shared_ptr<tls::TlsContext> context,
                                                         const Clock& clock, int64_t deadline);
  ~TlsFrameStream() override;

  Result<void> send(const v1::Frame& frame, int64_t deadline) override;
  Result<std::optional<v1::Frame>> receive(int64_t deadline) override;
  void close(int64_t deadline) override;
  // The largest frame accepted from the peer (the gateway sends only small frames).
  void set_max_frame_bytes(size_t n);
  std::string tls_version() const;
  std::string cipher_suite() const;

  struct Impl;
  explicit TlsFrameStream(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::agent
