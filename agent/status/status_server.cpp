#include "agent/status/status_server.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/net/listener.hpp"

namespace outpost::agent {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

}  // namespace

struct StatusServer::Impl {
  Buffer& buffer;
  const Forwarder* forwarder;
  std::function<void(std::string&)> more_metrics;
  const Clock& clock;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::steady_timer sampler{io};
  std::thread thread;

  std::mutex mu;  // the send rate, sampled every second
  uint64_t last_acked = 0;
  int64_t last_sample_ns = 0;
  double events_per_s = 0;

  Impl(Buffer& b, const Forwarder* f, const Clock& c) : buffer(b), forwarder(f), clock(c) {}

  void sample() {
    if (forwarder != nullptr) {
      const uint64_t acked = forwarder->status().events_acked;
      const int64_t now = clock.now_ns();
      std::lock_guard lock(mu);
      if (last_sample_ns != 0 && now > last_sample_ns) {
        const double rate = static_cast<double>(acked - last_acked) /
                            (static_cast<double>(now - last_sample_ns) / 1e9);
        events_per_s = 0.7 * events_per_s + 0.3 * rate;  // smoothed over a few seconds
      }
      last_acked = acked;
      last_sample_ns = now;
    }
    sampler.expires_after(std::chrono::seconds(1));
    sampler.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) sample();
    });
  }

  void accept() {
    acceptor.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) serve(std::move(socket));
      accept();
    });
  }

  std::string metrics() {
    std::ostringstream o;
    auto gauge = [&](const char* name, const char* help, double value) {
      o << "# HELP " << name << " " << help << "\n# TYPE " << name << " gauge\n"
        << name << " " << value << "\n";
    };
    auto stats = buffer.stats();
    if (stats) {
      gauge("outpost_agent_backlog_events", "Events in the buffer not yet acknowledged.",
            static_cast<double>(stats->pending_events));
      gauge("outpost_agent_backlog_bytes", "Bytes of events in the buffer not yet acknowledged.",
            static_cast<double>(stats->pending_bytes));
      const double age =
          stats->oldest_collected_at_ns
              ? static_cast<double>(clock.now_ns() - *stats->oldest_collected_at_ns) / 1e9
              : 0;
      gauge("outpost_agent_oldest_pending_age_seconds", "Age of the oldest pending event.", age);
      o << "# HELP outpost_agent_dropped_events_total Events dropped by the buffer.\n"
        << "# TYPE outpost_agent_dropped_events_total counter\n";
      for (const DropCount& d : stats->dropped) {
        o << "outpost_agent_dropped_events_total{reason=\"" << drop_reason_name(d.reason)
          << "\",kind=\"" << kind_name(d.kind) << "\"} " << d.count << "\n";
      }
      o << "outpost_agent_dropped_events_total{reason=\"corrupt\",kind=\"unknown\"} "
        << stats->corrupt_lost << "\n";
      gauge("outpost_agent_buffer_file_bytes", "Buffer file and WAL size.",
            static_cast<double>(stats->file_bytes));
      gauge("outpost_agent_disk_free_bytes",
            "Free bytes on the file system holding the buffer (for unprivileged writers).",
            static_cast<double>(stats->disk_free_bytes));
      gauge("outpost_agent_disk_size_bytes", "Size of the file system holding the buffer.",
            static_cast<double>(stats->disk_size_bytes));
      o << "# HELP outpost_agent_quarantined_total Messages a source could not turn into events.\n"
        << "# TYPE outpost_agent_quarantined_total counter\n"
        << "outpost_agent_quarantined_total " << stats->quarantined_total << "\n"
        << "# HELP outpost_agent_duplicates_total Redelivered messages not stored again.\n"
        << "# TYPE outpost_agent_duplicates_total counter\n"
        << "outpost_agent_duplicates_total " << stats->duplicates << "\n";
      gauge("outpost_agent_quarantine_rows", "Messages kept in the quarantine table.",
            static_cast<double>(stats->quarantine_rows));
    }
    gauge("outpost_agent_buffer_healthy", "1 while the buffer is usable.", buffer.healthy());
    gauge("outpost_agent_buffer_accepting", "1 while the buffer takes appends (see /readyz).",
          !buffer.refusal_reason());
    if (forwarder != nullptr) {
      ForwarderStatus s = forwarder->status();
      double rate;
      {
        std::lock_guard lock(mu);
        rate = events_per_s;
      }
      gauge("outpost_agent_uplink_connected", "1 while a session with a gateway is up.",
            s.connected);
      o << "# HELP outpost_agent_uplink_events_acked_total Events the gateway acknowledged.\n"
        << "# TYPE outpost_agent_uplink_events_acked_total counter\n"
        << "outpost_agent_uplink_events_acked_total " << s.events_acked << "\n"
        << "# HELP outpost_agent_uplink_bytes_sent_total Compressed batch bytes sent.\n"
        << "# TYPE outpost_agent_uplink_bytes_sent_total counter\n"
        << "outpost_agent_uplink_bytes_sent_total " << s.bytes_sent << "\n"
        << "# HELP outpost_agent_uplink_connects_total Sessions established.\n"
        << "# TYPE outpost_agent_uplink_connects_total counter\n"
        << "outpost_agent_uplink_connects_total " << s.connects << "\n";
      gauge("outpost_agent_uplink_send_rate_events_per_second",
            "Events acknowledged per second, smoothed.", rate);
      const double pending = stats ? static_cast<double>(stats->pending_events) : 0;
      gauge("outpost_agent_uplink_drain_eta_seconds",
            "Backlog divided by the send rate; -1 when nothing is being sent.",
            pending == 0 ? 0 : (rate > 0 ? pending / rate : -1));
      if (s.live_lane) {
        // How far behind collection each lane sends (docs/protocol.md, "Lanes").
        o << "# HELP outpost_agent_uplink_lane_age_seconds Per lane, how long ago the oldest "
             "event it has in flight (or sent last) was collected; 0 when it has nothing to "
             "send.\n# TYPE outpost_agent_uplink_lane_age_seconds gauge\n";
        const int64_t now = clock.now_ns();
        for (Lane l : {kBulkLane, kLiveLane}) {
          const int64_t t = s.lane_oldest_collected_ns[l];
          o << "outpost_agent_uplink_lane_age_seconds{lane=\"" << (l == kLiveLane ? "live" : "bulk")
            << "\"} " << (t == 0 ? 0.0 : static_cast<double>(std::max<int64_t>(0, now - t)) / 1e9)
            << "\n";
        }
      }
      o << "# HELP outpost_agent_uplink_info The gateway endpoint and the last error.\n"
        << "# TYPE outpost_agent_uplink_info gauge\n"
        << "outpost_agent_uplink_info{endpoint=\"" << s.endpoint << "\",last_error=\"";
      for (char c : s.last_error) o << (c == '"' || c == '\\' || c == '\n' ? ' ' : c);
      o << "\"} 1\n";
    }
    std::string text = o.str();
    if (more_metrics) more_metrics(text);
    return text;
  }

  // One request per connection, asynchronous on this thread, with a deadline: a client that
  // connects and sends nothing (or stops reading) is dropped after 5 s instead of holding
  // the thread (Beast's stream timeouts apply to asynchronous operations only).
  struct Exchange {
    beast::tcp_stream stream;
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    http::response<http::string_body> res;
    explicit Exchange(tcp::socket s) : stream(std::move(s)) {}
  };

  void serve(tcp::socket socket) {
    auto x = std::make_shared<Exchange>(std::move(socket));
    x->stream.expires_after(std::chrono::seconds(5));
    http::async_read(x->stream, x->buf, x->req, [this, x](const beast::error_code& ec, size_t) {
      if (ec) return;
      answer(x->req, x->res);
      x->res.prepare_payload();
      http::async_write(x->stream, x->res, [x](const beast::error_code&, size_t) {
        beast::error_code ignored;
        x->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      });
    });
  }

  void answer(const http::request<http::string_body>& req, http::response<http::string_body>& res) {
    res.version(req.version());
    res.keep_alive(false);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    if (req.method() != http::verb::get) {
      res.result(http::status::method_not_allowed);
      res.body() = "only GET is served here\n";
    } else if (req.target() == "/healthz") {
      const bool ok = buffer.healthy();
      res.result(ok ? http::status::ok : http::status::service_unavailable);
      res.body() = ok ? "ok\n" : "not healthy: the buffer hit corruption; the agent restarts\n";
    } else if (req.target() == "/readyz") {
      // Ready while the buffer takes events: a load balancer or a supervisor can tell a
      // device whose events are being refused (disk full, buffer full) from a healthy one.
      const auto refusing = buffer.refusal_reason();
      res.result(refusing ? http::status::service_unavailable : http::status::ok);
      res.body() = refusing ? "not ready: " + *refusing + "\n" : "ready\n";
    } else if (req.target() == "/metrics") {
      res.result(http::status::ok);
      res.set(http::field::content_type, "text/plain; version=0.0.4");
      res.body() = metrics();
    } else {
      res.result(http::status::not_found);
      res.body() = "not found; try /healthz, /readyz or /metrics\n";
    }
  }
};

Result<std::unique_ptr<StatusServer>> StatusServer::start(
    const std::string& host, uint16_t port, Buffer& buffer, const Forwarder* forwarder,
    const Clock& clock, std::function<void(std::string&)> more_metrics) {
  auto impl = std::make_unique<Impl>(buffer, forwarder, clock);
  impl->more_metrics = std::move(more_metrics);
  if (auto r = net::open_listener(impl->acceptor, host, port, "agent.http_listen"); !r) {
    return r.error();
  }
  impl->accept();
  impl->sample();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->io.run(); });
  return std::unique_ptr<StatusServer>(new StatusServer(std::move(impl)));
}

StatusServer::StatusServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StatusServer::~StatusServer() {
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint16_t StatusServer::port() const { return impl_->acceptor.local_endpoint().port(); }

}  // namespace outpost::agent
