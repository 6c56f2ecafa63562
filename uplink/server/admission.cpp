// Admission: accepting agent connections within the global and per-IP limits, releasing
// them, the per-device rate limit, and the audit log of refusals.
#include <malloc.h>

#include <algorithm>

#include "uplink/server/session.hpp"

namespace outpost::uplink {

void Server::Impl::accept() {
  acceptor.async_accept(
      asio::make_strand(io), [this](const boost::system::error_code& ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
        if (!ec) {
          boost::system::error_code peer_ec;
          auto remote = socket.remote_endpoint(peer_ec);
          std::string ip = peer_ec ? "?" : remote.address().to_string();
          std::shared_ptr<Session> session;
          std::string refused;
          {
            std::lock_guard lock(mu);
            if (sessions.size() >= config.limits.max_connections) {
              refused = "max_connections";
            } else if (per_ip[ip] >= config.limits.max_connections_per_ip) {
              refused = "max_connections_per_ip";
            } else if (pending_handshakes >= config.limits.max_pending_handshakes) {
              refused = "max_pending_handshakes";
            } else {
              ++per_ip[ip];
              ++pending_handshakes;
              session = std::make_shared<Session>(*this, std::move(socket), ip);
              sessions.insert(session);
              sessions_peak = std::max(sessions_peak, sessions.size());
            }
          }
          if (session) {
            metrics.connections_accepted++;
            metrics.connections_open++;
            session->start();
          } else {
            metrics.reject(refused);
            audit_line(ip, "", "", "connection refused: " + refused);
            boost::system::error_code ignored;
            socket.close(ignored);
          }
        } else {
          log->warn("accept: {}", ec.message());
        }
        accept();
      });
}

void Server::Impl::release(const std::string& ip, const std::shared_ptr<Session>& s) {
  std::lock_guard lock(mu);
  if (sessions.erase(s) == 0) return;
  if (sessions.empty()) sessions_gone.notify_all();
  metrics.connections_open--;
  auto it = per_ip.find(ip);
  if (it != per_ip.end() && --it->second == 0) per_ip.erase(it);
}

// After a flood (thousands of connections gone), malloc keeps the freed memory in its arenas
// unless asked to return it, and the gateway stayed at its peak for good. Checked once a
// second, after the sessions are destroyed (release() runs while one still exists).
void Server::Impl::give_memory_back() {
  trim_timer.expires_after(std::chrono::seconds(1));
  trim_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    bool trim = false;
    {
      std::lock_guard lock(mu);
      if (sessions_peak >= sessions.size() + 256) {  // hundreds of sessions gone since
        trim = true;
        sessions_peak = sessions.size();
      }
    }
    if (trim) ::malloc_trim(0);
    give_memory_back();
  });
}

void Server::Impl::handshake_over() {
  std::lock_guard lock(mu);
  if (pending_handshakes > 0) --pending_handshakes;
}

void Server::Impl::audit_line(const std::string& ip, const std::string& subject,
                              const std::string& serial, const std::string& reason) {
  const int64_t now = clock.now_ns();
  uint64_t suppressed = 0;
  {
    std::lock_guard lock(mu);
    AuditWindow& w = audit_windows[ip];
    if (now - w.start_ns > 60'000'000'000) {
      suppressed = w.suppressed;
      w = AuditWindow{now, 0, 0};
    }
    if (++w.lines > 10) {
      if (w.suppressed++ == 0) {
        audit->warn(
            "refused peer={}: more than 10 refusals within a minute; further audit "
            "lines for it are suppressed (and counted) until the minute is over",
            ip);
      }
      return;
    }
    if (audit_windows.size() > 100'000) audit_windows.clear();  // bounded memory
  }
  audit->warn("refused peer={} subject=\"{}\" serial={} reason=\"{}\"{}", ip, subject,
              serial.empty() ? "-" : serial, reason,
              suppressed ? " (" + std::to_string(suppressed) + " lines suppressed)" : "");
}

bool Server::Impl::admit(const std::string& identity, uint64_t events) {
  if (!rate_limited) return true;
  std::lock_guard lock(mu);
  const auto& l = config.limits;  // guarded: set_limits() changes them
  if (l.device_events_per_second == 0) return true;
  const int64_t now = clock.mono_ns();
  Bucket& b = buckets[identity];
  if (b.last_ns == 0) b.tokens = static_cast<double>(l.device_burst_events);
  b.tokens = std::min<double>(static_cast<double>(l.device_burst_events),
                              b.tokens + static_cast<double>(now - b.last_ns) / 1e9 *
                                             static_cast<double>(l.device_events_per_second));
  b.last_ns = now;
  if (b.tokens < static_cast<double>(events) &&
      !(events > l.device_burst_events && b.tokens >= static_cast<double>(l.device_burst_events))) {
    return false;
  }
  b.tokens -= static_cast<double>(events);
  return true;
}

}  // namespace outpost::uplink

namespace outpost::uplink {

Result<void> Server::Impl::vouch(const std::string& site, const std::string& origin,
                                 std::string_view certificate_der) {
  auto cert = tls->current()->verify_certificate(certificate_der);
  if (!cert) return make_error(cert.error().code, "its certificate: " + cert.error().message);
  std::string named = cert->common_name;
  bool in_site = false;
  if (config.identity_from_uri_san) named.clear();
  for (const std::string& uri : cert->uri_sans) {
    if (uri == kSiteUri + site) in_site = true;
    if (config.identity_from_uri_san && named.empty() && uri.rfind("urn:outpost:", 0) != 0) {
      named = uri;
    }
  }
  if (named != origin) {
    return make_error(tls::tls_errc::peer_verify,
                      "the certificate it presents names \"" + named.substr(0, 128) + "\"");
  }
  if (!in_site) {
    return make_error(tls::tls_errc::peer_verify,
                      "the device's certificate (serial " + cert->serial + ") has no URI SAN " +
                          kSiteUri + site + ": it is not a device of the relay's site");
  }
  return {};
}

}  // namespace outpost::uplink
