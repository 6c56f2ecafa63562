#pragma once
// A server for agents' uplinks (docs/protocol.md): the TLS listener, each connection a session
// of uplink::GatewayProtocol whose batches go to a Sink, with the limits, refusals, audit log
// and per-device rate limits; and, when asked, a plain HTTP listener for /healthz, /readyz and
// /metrics. One Boost.Asio io_context run by `threads` threads; each connection on its own
// strand. The gateway runs one in front of its sinks; an agent relaying for the devices of its
// site runs one in front of its buffer (agent/relay/).
//
// Thread-safety: start() and shutdown() from one controlling thread. The Sink, the metrics and
// the Clock outlive the Server.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/clock.hpp"
#include "common/result.hpp"
#include "common/tls/tls.hpp"
#include "uplink/server/metrics.hpp"
#include "uplink/sink.hpp"

namespace outpost::uplink {

struct ServerLimits {
  uint32_t max_connections = 10'000;
  uint32_t max_connections_per_ip = 256;
  // Connections that have not finished their TLS handshake, from all addresses together: a
  // handshake in progress holds the TLS engine's buffers (~40 KB).
  uint32_t max_pending_handshakes = 1024;
  int64_t handshake_timeout_ns = 10'000'000'000;
  int64_t idle_timeout_ns = 120'000'000'000;
  uint32_t max_frame_bytes = 16u << 20;
  uint64_t max_decompressed_bytes = 64u << 20;
  int max_window_log = 23;
  uint32_t max_events_per_batch = 100'000;
  uint32_t max_in_flight_batches = 8;
  // Per device: events per second (0: no limit) and the burst above it. Over the limit a
  // batch is answered retry-later, never dropped.
  uint64_t device_events_per_second = 0;
  uint64_t device_burst_events = 0;
  bool operator==(const ServerLimits&) const = default;
};

struct ServerOptions {
  std::string name = "gateway";               // the log's name, and what errors call the listener
  std::string listen_key = "gateway.listen";  // the configuration key, for errors
  std::string listen_address = "0.0.0.0";
  uint16_t listen_port = 7443;
  bool http = true;  // the HTTP listener for /healthz, /readyz, /metrics
  std::string http_key = "gateway.http_listen";
  std::string http_address = "127.0.0.1";
  uint16_t http_port = 9090;
  int threads = 2;
  std::string ca_file, cert_file, key_file;
  std::string crl_file;  // "" for none: no certificate is refused as revoked
  // How often the TLS files are looked at for a change (a rotated certificate, a new CRL);
  // 0: only on reload_tls(). A device revoked while connected is disconnected within this
  // interval and a second (docs/install.md, "Rotating and revoking certificates").
  int64_t tls_reload_interval_ns = 5'000'000'000;
  bool identity_from_uri_san = false;  // the identity is the first URI SAN, not the CN
  ServerLimits limits;
  // Whether a certificate with the relay role (urn:outpost:relay:SITE) may send other devices'
  // events (docs/protocol.md, "Relays"): the gateway's yes; a relaying agent's no (one tier).
  bool allow_relays = true;
  // After the handshake, with the peer's identity and certificate: a refusal (for the audit
  // log and the Goodbye), or nullopt to go on. A relaying agent checks that the device is of
  // its site and keeps its certificate.
  std::function<std::optional<std::string>(const std::string& identity,
                                           const tls::PeerCertificate& peer)>
      admit_peer;
  // A session was established (true) or, having been established, ended (false).
  std::function<void(const std::string& identity, bool open)> on_session;
  // On the connection's strand, before a batch goes to the sink (the gateway's validation).
  std::function<void(SinkBatch&)> prepare;
  // More Prometheus text for GET /metrics (the validation's counters).
  std::function<void(std::string&)> append_metrics;
};

class Server {
 public:
  // Binds the listeners (port 0: a free port) and starts the threads.
  static Result<std::unique_ptr<Server>> start(ServerOptions options, Sink& sink,
                                               ServerMetrics& metrics, const Clock& clock);
  ~Server();

  uint16_t port() const;
  uint16_t http_port() const;  // 0 without the HTTP listener

  // Reads the TLS files again now (SIGHUP): new handshakes use them, sessions already open go
  // on, and a session whose certificate the new CRL revokes is closed. What it did, for the
  // log, or why the files were refused (the ones in use stay).
  Result<std::string> reload_tls();

  // New limits (a configuration reload): the per-device rate limit and the connection limits
  // apply at once; the others (frame and batch sizes, window, timeouts) to sessions that start
  // afterwards, as the Welcome announced them to the ones already open.
  void set_limits(const ServerLimits& limits);

  // Graceful stop: accept nothing new, let each session finish and acknowledge the batches
  // it has in flight, then close; after `grace`, close what is left. Returns how many
  // sessions had to be cut off.
  size_t shutdown(std::chrono::nanoseconds grace);

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::uplink
