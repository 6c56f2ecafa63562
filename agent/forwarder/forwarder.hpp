#pragma once
// The agent's forwarder: reads the oldest events from the buffer in batches, compresses them,
// sends them to a gateway over mutual TLS with a window of batches in flight, and deletes a
// batch from the buffer only when the gateway acknowledged it with `ok` (docs/protocol.md).
// Reconnects with exponential backoff and jitter, fails over across the configured
// gateways, and can cap its upload rate for metered links.
//
// Thread-safety: start(), stop() and reconfigure() from the owning thread; status() from any
// thread. The
// Buffer and the Clock outlive the Forwarder; stop() (or the destructor) joins its thread.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/buffer/buffer.hpp"
#include "agent/forwarder/lanes.hpp"
#include "common/clock.hpp"

namespace outpost::agent {

struct ForwarderOptions {
  std::vector<std::string> endpoints;  // "host:port", tried in order, failing over
  std::string server_name;             // name the gateway certificate must carry; "" = host
  std::string ca_file, cert_file, key_file;
  std::string agent_id;
  size_t batch_max_events = 2000;
  size_t batch_max_bytes = 1u << 20;  // uncompressed event bytes per batch
  uint32_t window = 8;                // batches in flight (the gateway may lower it)
  int zstd_level = 1;
  int64_t connect_timeout_ns = 10'000'000'000;
  int64_t ack_timeout_ns = 60'000'000'000;
  int64_t backoff_initial_ns = 250'000'000;
  int64_t backoff_max_ns = 30'000'000'000;
  uint64_t rate_limit_bytes_per_s = 0;  // compressed bytes on the wire; 0: no limit
  int64_t ping_interval_ns = 30'000'000'000;
  // How often the certificate, key and CA files are looked at for a change; 0: only on
  // reload_tls(). A change is used for the next handshake: the session in use finishes the
  // batches it has in flight and reconnects with the new files.
  int64_t tls_reload_interval_ns = 5'000'000'000;
  int certificate_warn_days = 30;  // a (re)read certificate nearer its expiry is warned about
  // The live lane (lanes.hpp; docs/protocol.md, "Lanes"); off unless kinds or a priority are
  // chosen. Not with a relaying agent's batches of other devices.
  LiveLaneOptions live_lane;
  // A relaying agent (agent/relay/): the certificate (DER) of a device whose events it sends,
  // as the device presented it; nullopt when none is kept.
  std::function<std::optional<std::string>(const std::string& device)> device_certificate;
  // A relaying agent: the gateway acknowledged `events` of the device (`bytes` of bodies).
  std::function<void(const std::string& device, uint64_t events, uint64_t bytes)> on_relayed_ack;
};

struct ForwarderStatus {
  bool connected = false;
  std::string endpoint;    // current or last
  std::string last_error;  // "" when none since the last successful session
  uint64_t batches_acked = 0;
  uint64_t events_acked = 0;
  uint64_t bytes_sent = 0;  // compressed
  uint64_t connects = 0;
  int64_t last_ack_ns = 0;
  int64_t certificate_not_after = 0;  // of the certificate in use (Unix time); 0: none read yet
  uint64_t tls_reloads_ok = 0;        // the TLS files changed and are in use
  uint64_t tls_reloads_refused = 0;   // they changed and could not be used
  bool live_lane = false;             // the live lane is on
  // Per lane (bulk, live): when the oldest event it has in flight, or sent last, was collected
  // (Unix ns); 0 when the lane has nothing to send.
  std::array<int64_t, 2> lane_oldest_collected_ns{};
};

class Forwarder {
 public:
  Forwarder(ForwarderOptions options, Buffer& buffer, const Clock& clock);
  ~Forwarder();
  Forwarder(const Forwarder&) = delete;
  Forwarder& operator=(const Forwarder&) = delete;

  void start();
  void stop();
  ForwarderStatus status() const;
  // Reads the TLS files again at the forwarder's next step (SIGHUP), even if they look
  // unchanged.
  void reload_tls();
  // New settings (a configuration reload; the relaying callbacks stay). The upload cap, the
  // expiry warning and the TLS files' look interval apply at once; anything else (gateways,
  // files, batch sizes, window, timeouts) makes the session in use stop filling its window,
  // wait for its batches in flight to be acknowledged and committed, and reconnect with the
  // new settings, to the first of the new gateways. Nothing is failed or sent twice.
  void reconfigure(ForwarderOptions next);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::agent
