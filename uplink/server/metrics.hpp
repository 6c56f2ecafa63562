#pragma once
// The counters of a server that accepts agents (server.hpp): the gateway's, rendered as
// Prometheus text on its GET /metrics under the prefix outpost_gateway (names and labels listed
// in docs/gateway.md, "Metrics": an interface, add, never rename), or a relaying agent's, under
// outpost_agent_relay.
//
// Thread-safety: every member may be updated from any thread.

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace outpost::uplink {

class ServerMetrics {
 public:
  // `prefix` starts every series name: "outpost_gateway", "outpost_agent_relay".
  explicit ServerMetrics(std::string prefix) : prefix_(std::move(prefix)) {}

  std::atomic<int64_t> connections_open{0};
  std::atomic<uint64_t> connections_accepted{0};
  std::atomic<uint64_t> sessions_established{0};
  std::atomic<uint64_t> sessions_replaced{0};
  std::atomic<uint64_t> relayed_devices{0};  // (relay session, device) pairs vouched for
  std::atomic<uint64_t> batches_ok{0};
  std::atomic<uint64_t> batches_duplicate{0};  // every event of it was a duplicate
  std::atomic<uint64_t> batches_retry_later{0};
  std::atomic<uint64_t> batches_rejected{0};
  std::atomic<uint64_t> events_written{0};
  std::atomic<uint64_t> events_duplicate{0};
  std::atomic<uint64_t> events_dead_letter{0};  // bad events written to the dead-letter place
  std::atomic<uint64_t> events_gap_lost{0};     // seqs no agent can send again (pipeline/marks.hpp)
  std::atomic<uint64_t> bytes_compressed{0};
  std::atomic<uint64_t> bytes_raw{0};
  std::atomic<uint64_t> tls_reloads_ok{0};       // the TLS files changed and are in use
  std::atomic<uint64_t> tls_reloads_refused{0};  // they changed and could not be used

  // Refused connections, handshakes, sessions and batches, by reason.
  void reject(const std::string& reason);
  void tls_reload(bool ok) { (ok ? tls_reloads_ok : tls_reloads_refused)++; }
  // A batch the sink failed, by its sink_errc name (outpost_gateway_sink_errors_total).
  void sink_error(const std::string& code);
  // Seconds from handing a batch to the sink to its completion.
  void observe_sink_latency(double seconds);

  std::string render_prometheus() const;
  const std::string& prefix() const { return prefix_; }

 private:
  static constexpr std::array<double, 12> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                      0.05,   0.1,   0.25,   0.5,   1,    5};
  std::string prefix_;
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> rejects_;
  std::map<std::string, uint64_t> sink_errors_;
  std::array<uint64_t, kBuckets.size()> bucket_counts_{};
  uint64_t latency_count_ = 0;
  double latency_sum_ = 0;
};

}  // namespace outpost::uplink
