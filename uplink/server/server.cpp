#include "uplink/server/server.hpp"

#include <thread>

#include "common/net/listener.hpp"
#include "common/units.hpp"
#include "uplink/server/session.hpp"

namespace outpost::uplink {

Result<std::unique_ptr<Server>> Server::start(ServerOptions options, Sink& sink,
                                              ServerMetrics& metrics, const Clock& clock) {
  auto impl = std::make_unique<Impl>(std::move(options), sink, metrics, clock);
  const ServerOptions& config = impl->config;
  tls::ContextOptions o;
  o.role = tls::Role::server;
  o.files = {config.ca_file, config.cert_file, config.key_file, config.crl_file};
  auto source = tls::ContextSource::create(o);
  if (!source) return source.error();
  impl->tls = std::move(*source);
  if (auto r = net::open_listener(impl->acceptor, config.listen_address, config.listen_port,
                                  config.listen_key);
      !r) {
    return r.error();
  }
  if (config.http) {
    if (auto r = net::open_listener(impl->http_acceptor, config.http_address, config.http_port,
                                    config.http_key);
        !r) {
      return r.error();
    }
    impl->accept_http();
  }
  impl->accept();
  impl->give_memory_back();
  impl->watch_tls();
  for (int i = 0; i < config.threads; ++i) {
    impl->threads.emplace_back([raw = impl.get()] { raw->io.run(); });
  }
  impl->log->info("listening for agents on {}:{} (TLS)",
                  impl->acceptor.local_endpoint().address().to_string(),
                  impl->acceptor.local_endpoint().port());
  if (config.http) {
    impl->log->info("HTTP on {}:{}", impl->http_acceptor.local_endpoint().address().to_string(),
                    impl->http_acceptor.local_endpoint().port());
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Result<std::string> Server::Impl::refresh_tls(bool force) {
  auto r = tls->refresh(force);
  if (r.refused) {
    metrics.tls_reload(false);
    log->error("TLS files changed but cannot be used; the ones in use stay: {}",
               r.refused->describe());
    return *r.refused;
  }
  if (!r.changed) return std::string("TLS files unchanged");
  metrics.tls_reload(true);
  const auto& c = *r.context;
  std::string what = "TLS files read: certificate serial " + c.serial() + ", expires " +
                     format_time_ns(c.not_after() * 1'000'000'000);
  if (c.has_crl()) {
    what += "; CRL with " + std::to_string(c.crl_entries()) + " revoked, next update " +
            format_time_ns(c.crl_next_update() * 1'000'000'000);
    std::vector<std::shared_ptr<Session>> live;
    {
      std::lock_guard lock(mu);
      live.assign(sessions.begin(), sessions.end());
    }
    for (auto& s : live) s->check_revoked(r.context);
  }
  log->info("{}", what);
  return what;
}

void Server::Impl::watch_tls() {
  if (config.tls_reload_interval_ns <= 0) return;
  tls_timer.expires_after(std::chrono::nanoseconds(config.tls_reload_interval_ns));
  tls_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec || draining) return;
    (void)refresh_tls(false);
    watch_tls();
  });
}

Result<std::string> Server::reload_tls() { return impl_->refresh_tls(true); }

void Server::set_limits(const ServerLimits& limits) {
  std::lock_guard lock(impl_->mu);
  impl_->config.limits = limits;
  impl_->rate_limited = limits.device_events_per_second > 0;
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  if (!impl_->io.stopped()) shutdown(std::chrono::seconds(0));
}

uint16_t Server::port() const { return impl_->acceptor.local_endpoint().port(); }
uint16_t Server::http_port() const {
  return impl_->http_acceptor.is_open() ? impl_->http_acceptor.local_endpoint().port() : 0;
}

size_t Server::shutdown(std::chrono::nanoseconds grace) {
  Impl& m = *impl_;
  m.draining = true;
  asio::post(m.io, [&m] {
    boost::system::error_code ignored;
    m.acceptor.close(ignored);
    m.tls_timer.cancel();
  });
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard lock(m.mu);
    live.assign(m.sessions.begin(), m.sessions.end());
  }
  for (auto& s : live) s->drain();
  live.clear();
  // Wait for the sessions to end, until the grace period is over; then cut the rest.
  const int64_t deadline = m.clock.mono_ns() + grace.count();
  size_t cut = 0;
  {
    std::unique_lock lock(m.mu);
    while (!m.sessions.empty() && m.clock.mono_ns() < deadline) {
      m.clock.wait_until(lock, m.sessions_gone, deadline);
    }
    live.assign(m.sessions.begin(), m.sessions.end());
    cut = live.size();
  }
  if (!live.empty()) {
    for (auto& s : live) s->cut();
    live.clear();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the cuts run on the io threads
  }
  asio::post(m.io, [&m] {
    boost::system::error_code ignored;
    m.http_acceptor.close(ignored);
  });
  m.io.stop();
  for (auto& t : m.threads) {
    if (t.joinable()) t.join();
  }
  {
    std::lock_guard lock(m.mu);
    m.sessions.clear();
    m.by_identity.clear();
  }
  return cut;
}

}  // namespace outpost::uplink
