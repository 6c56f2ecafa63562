#include "uplink/server/metrics.hpp"

#include <sstream>

namespace outpost::uplink {

namespace {
constexpr const char* kGatewayPrefix = "outpost_gateway";
}  // namespace

void ServerMetrics::reject(const std::string& reason) {
  std::lock_guard lock(mu_);
  ++rejects_[reason];
}

void ServerMetrics::sink_error(const std::string& code) {
  std::lock_guard lock(mu_);
  ++sink_errors_[code];
}

void ServerMetrics::observe_sink_latency(double seconds) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) ++bucket_counts_[i];
  }
  ++latency_count_;
  latency_sum_ += seconds;
}

std::string ServerMetrics::render_prometheus() const {
  std::ostringstream o;
  auto counter = [&](const char* name, const char* help, const std::string& labels, uint64_t value,
                     bool header) {
    if (header) o << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n";
    o << name << labels << " " << value << "\n";
  };
  o << "# HELP outpost_gateway_connections Open connections.\n"
    << "# TYPE outpost_gateway_connections gauge\n"
    << "outpost_gateway_connections " << connections_open.load() << "\n";
  counter("outpost_gateway_connections_accepted_total", "TCP connections accepted.", "",
          connections_accepted, true);
  counter("outpost_gateway_sessions_total", "Sessions by outcome.", "{result=\"established\"}",
          sessions_established, true);
  counter("outpost_gateway_sessions_total", "", "{result=\"replaced\"}", sessions_replaced, false);
  counter("outpost_gateway_relayed_devices_total",
          "Devices a relay began to send for, once per relay session (docs/protocol.md).", "",
          relayed_devices, true);
  counter("outpost_gateway_batches_total", "Batches by result.", "{result=\"ok\"}", batches_ok,
          true);
  counter("outpost_gateway_batches_total", "", "{result=\"duplicate\"}", batches_duplicate, false);
  counter("outpost_gateway_batches_total", "", "{result=\"retry_later\"}", batches_retry_later,
          false);
  counter("outpost_gateway_batches_total", "", "{result=\"rejected\"}", batches_rejected, false);
  counter("outpost_gateway_events_total", "Events by result.", "{result=\"written\"}",
          events_written, true);
  counter("outpost_gateway_events_total", "", "{result=\"duplicate\"}", events_duplicate, false);
  counter("outpost_gateway_events_total", "", "{result=\"dead_letter\"}", events_dead_letter,
          false);
  counter("outpost_gateway_events_total", "", "{result=\"gap_lost\"}", events_gap_lost, false);
  counter("outpost_gateway_dedupe_hits_total", "Events not written again (already written).", "",
          events_duplicate, true);
  counter("outpost_gateway_bytes_total", "Batch payload bytes received.", "{form=\"compressed\"}",
          bytes_compressed, true);
  counter("outpost_gateway_bytes_total", "", "{form=\"raw\"}", bytes_raw, false);
  counter("outpost_gateway_tls_reloads_total",
          "Changes of the TLS files (certificate, key, CA, CRL) read while running, by result: "
          "ok (in use for new handshakes) or refused (the files in use stay).",
          "{result=\"ok\"}", tls_reloads_ok, true);
  counter("outpost_gateway_tls_reloads_total", "", "{result=\"refused\"}", tls_reloads_refused,
          false);
  std::lock_guard lock(mu_);
  o << "# HELP outpost_gateway_rejects_total Refusals by reason.\n"
    << "# TYPE outpost_gateway_rejects_total counter\n";
  for (const auto& [reason, n] : rejects_) {
    o << "outpost_gateway_rejects_total{reason=\"" << reason << "\"} " << n << "\n";
  }
  o << "# HELP outpost_gateway_sink_errors_total Batches the sink failed (answered retry-later), "
       "by cause.\n"
    << "# TYPE outpost_gateway_sink_errors_total counter\n";
  for (const auto& [code, n] : sink_errors_) {
    o << "outpost_gateway_sink_errors_total{code=\"" << code << "\"} " << n << "\n";
  }
  o << "# HELP outpost_gateway_sink_latency_seconds Sink write latency.\n"
    << "# TYPE outpost_gateway_sink_latency_seconds histogram\n";
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    o << "outpost_gateway_sink_latency_seconds_bucket{le=\"" << kBuckets[i] << "\"} "
      << bucket_counts_[i] << "\n";
  }
  o << "outpost_gateway_sink_latency_seconds_bucket{le=\"+Inf\"} " << latency_count_ << "\n"
    << "outpost_gateway_sink_latency_seconds_sum " << latency_sum_ << "\n"
    << "outpost_gateway_sink_latency_seconds_count " << latency_count_ << "\n";
  // Written with the gateway's names (the ones docs/gateway.md lists), renamed for another
  // prefix.
  std::string text = o.str();
  if (prefix_ == kGatewayPrefix) return text;
  const std::string from = std::string(kGatewayPrefix) + "_", to = prefix_ + "_";
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

}  // namespace outpost::uplink
