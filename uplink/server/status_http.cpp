// The server's plain HTTP endpoints: /healthz, /readyz (the sink's readiness, draining) and
// /metrics (the server's counters, the host's and the sink's own).
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "uplink/server/server_impl.hpp"

namespace outpost::uplink {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;

class HttpConnection : public std::enable_shared_from_this<HttpConnection> {
 public:
  HttpConnection(Server::Impl& s, tcp::socket socket) : s_(s), stream_(std::move(socket)) {}

  void start() {
    stream_.expires_after(std::chrono::seconds(5));
    http::async_read(stream_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (!ec) self->respond();
                     });
  }

 private:
  void respond() {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(request_.version());
    res->keep_alive(false);
    res->set(http::field::content_type, "text/plain; charset=utf-8");
    const auto target = request_.target();
    // Why the server takes no batches now (/readyz, PREFIX_ready), or nullopt.
    auto not_ready = [this]() -> std::optional<std::string> {
      if (s_.draining) return "shutting down";
      return s_.sink.not_ready_reason();
    };
    if (request_.method() != http::verb::get) {
      res->result(http::status::method_not_allowed);
      res->body() = "only GET is served here\n";
    } else if (target == "/healthz") {
      res->result(http::status::ok);
      res->body() = "ok\n";
    } else if (target == "/readyz") {
      const auto why = not_ready();
      res->result(why ? http::status::service_unavailable : http::status::ok);
      res->body() = why ? "not ready: " + *why + "\n" : "ready\n";
    } else if (target == "/metrics") {
      res->result(http::status::ok);
      res->set(http::field::content_type, "text/plain; version=0.0.4");
      res->body() = s_.metrics.render_prometheus();
      const bool ready = !not_ready();
      const std::string& p = s_.metrics.prefix();
      res->body() += "# HELP " + p + "_ready 1 while the " + s_.config.name +
                     " takes batches (/readyz answers 200).\n# TYPE " + p + "_ready gauge\n" + p +
                     "_ready " + (ready ? "1" : "0") + "\n";
      const auto tls = s_.tls->current();
      if (tls->not_after() != 0) {
        res->body() += "# HELP " + p + "_certificate_expiry_timestamp_seconds When the " +
                       s_.config.name + "'s certificate expires (notAfter, Unix time).\n# TYPE " +
                       p + "_certificate_expiry_timestamp_seconds gauge\n" + p +
                       "_certificate_expiry_timestamp_seconds " + std::to_string(tls->not_after()) +
                       "\n";
      }
      if (tls->has_crl()) {
        res->body() += "# HELP " + p + "_crl_next_update_timestamp_seconds When the CRL in use " +
                       "(tls.crl) must be replaced: past it, every certificate is refused.\n" +
                       "# TYPE " + p + "_crl_next_update_timestamp_seconds gauge\n" + p +
                       "_crl_next_update_timestamp_seconds " +
                       std::to_string(tls->crl_next_update()) + "\n";
      }
      if (s_.config.append_metrics) s_.config.append_metrics(res->body());
      s_.sink.append_metrics(res->body());
    } else {
      res->result(http::status::not_found);
      res->body() = "not found; try /healthz, /readyz or /metrics\n";
    }
    res->prepare_payload();
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code, size_t) {
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  }

  Server::Impl& s_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
};

}  // namespace

void Server::Impl::accept_http() {
  http_acceptor.async_accept(
      asio::make_strand(io), [this](const boost::system::error_code& ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted || !http_acceptor.is_open()) return;
        if (!ec) std::make_shared<HttpConnection>(*this, std::move(socket))->start();
        accept_http();
      });
}

}  // namespace outpost::uplink
