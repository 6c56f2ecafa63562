#pragma once
// The server's internals, shared by the files that implement it (one responsibility each):
// server.cpp (start, graceful shutdown), admission.cpp (accepting connections, limits per IP
// and globally, per-device rate limits, relays' devices, the audit log), session.hpp (the
// protocol session of one agent connection), status_http.cpp (/healthz, /readyz, /metrics).
// Only those files include it.
#include <utility>

#include <boost/asio.hpp>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/log.hpp"
#include "common/tls/context_source.hpp"
#include "common/tls/tls.hpp"
#include "uplink/gateway_protocol.hpp"
#include "uplink/server/server.hpp"

namespace outpost::uplink {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

class Session;

struct Server::Impl final : RateGate, RelayCheck {
  ServerOptions config;
  Sink& sink;
  ServerMetrics& metrics;
  const Clock& clock;
  std::shared_ptr<spdlog::logger> log = log::get(config.name);
  std::shared_ptr<spdlog::logger> audit = log::get("audit");
  std::unique_ptr<tls::ContextSource> tls;  // new sessions take tls->current()

  asio::io_context io;
  tcp::acceptor acceptor{io};
  tcp::acceptor http_acceptor{io};
  std::vector<std::thread> threads;
  std::atomic<bool> draining{false};
  // Whether config.limits has a per-device rate: without one, admit() takes no lock.
  std::atomic<bool> rate_limited{config.limits.device_events_per_second > 0};

  std::mutex mu;  // guards everything below
  std::unordered_map<std::string, uint32_t> per_ip;
  uint32_t pending_handshakes = 0;  // sessions not past the TLS handshake
  size_t sessions_peak = 0;         // highest count since memory was last given back
  std::unordered_map<std::string, std::weak_ptr<Session>> by_identity;
  std::set<std::shared_ptr<Session>> sessions;
  std::condition_variable sessions_gone;  // notified when `sessions` becomes empty
  struct Bucket {
    double tokens = 0;
    int64_t last_ns = 0;
  };
  std::unordered_map<std::string, Bucket> buckets;
  struct AuditWindow {
    int64_t start_ns = 0;
    uint32_t lines = 0;
    uint64_t suppressed = 0;
  };
  std::unordered_map<std::string, AuditWindow> audit_windows;

  Impl(ServerOptions c, Sink& s, ServerMetrics& m, const Clock& cl)
      : config(std::move(c)), sink(s), metrics(m), clock(cl) {}

  void accept();
  void accept_http();
  // Looks at the TLS files (every tls_reload_interval, and on reload_tls()); when the new
  // context has a CRL, each open session checks its peer against it.
  Result<std::string> refresh_tls(bool force);
  void watch_tls();
  // Logs a refused handshake or identity mismatch, at most 10 lines per source IP a minute.
  void audit_line(const std::string& ip, const std::string& subject, const std::string& serial,
                  const std::string& reason);
  // The device's token bucket (RateGate): takes `events`; false: over its rate.
  bool admit(const std::string& identity, uint64_t events) override;
  // RelayCheck: the device's certificate verifies against the CA, names `origin` and
  // puts it in the relay's site.
  Result<void> vouch(const std::string& site, const std::string& origin,
                     std::string_view certificate_der) override;
  void release(const std::string& ip, const std::shared_ptr<Session>& s);
  void handshake_over();
  asio::steady_timer trim_timer{io};
  asio::steady_timer tls_timer{io};  // watch_tls()
  void give_memory_back();           // a session left the handshake state (done or closed)
};

}  // namespace outpost::uplink
