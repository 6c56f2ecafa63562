#include "agent/sources/http/http_source.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <array>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "common/errc.hpp"
#include "common/json/json_reader.hpp"
#include "common/json/json_writer.hpp"
#include "common/log.hpp"
#include "common/net/listener.hpp"
#include "common/tls/digest.hpp"
#include "common/utf8.hpp"
#include "outpost/v1/event.pb.h"
#include "proto/event_codec.hpp"

namespace outpost::agent {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
// The io_context's own executor type rather than the polymorphic any_io_executor: each
// asynchronous operation then avoids wrapping and unwrapping it (a few per request).
using Socket = asio::basic_stream_socket<tcp, asio::io_context::executor_type>;
using Stream = beast::basic_stream<tcp, asio::io_context::executor_type>;

std::string header(const http::request<http::string_body>& req, std::string_view name) {
  auto it = req.find(boost::beast::string_view(name.data(), name.size()));
  return it == req.end() ? std::string() : std::string(it->value());
}

std::string_view field(const http::request<http::string_body>& req, http::field name) {
  auto it = req.find(name);
  return it == req.end() ? std::string_view()
                         : std::string_view(it->value().data(), it->value().size());
}

}  // namespace

namespace {
class Connection;

// What the buffer's callbacks reach. They run on the buffer's writer thread, possibly after
// the HttpSource is gone (the buffer outlives it and runs its queued callbacks when it
// closes), so they hold this, never the source or a connection.
struct CallbackShared {
  HttpSourceCounters counters;
  std::mutex mu;
  bool open = true;  // false once ~HttpSource began: nothing more is posted to its io_context
};
}  // namespace

struct HttpSource::Impl {
  HttpSourceOptions opt;
  Buffer& buffer;
  const Clock& clock;
  std::shared_ptr<spdlog::logger> log = log::get("http-source");
  std::shared_ptr<CallbackShared> shared = std::make_shared<CallbackShared>();
  HttpSourceCounters& counters = shared->counters;

  // Pixel responses for HTTP/1.0 and 1.1, indexed by pixel_slot(). Declared before `io`, as
  // is `connections`: both outlive every handler, which the io_context destroys last.
  std::array<std::string, 16> pixel_responses;
  std::atomic<uint32_t> connections{0};
  asio::io_context io;  // the acceptor's, and the first thread's connections
  tcp::acceptor acceptor{io};
  std::thread thread;
  // With sources.http.threads > 1: the other threads, each with its own io_context, that the
  // acceptor hands connections to in turn.
  struct Worker {
    asio::io_context io;
    asio::executor_work_guard<asio::io_context::executor_type> busy{io.get_executor()};
    std::thread thread;
  };
  std::vector<std::unique_ptr<Worker>> workers;
  size_t next_worker = 0;  // acceptor's thread only
  // Connections waiting for a ?sync=true append to be durable. The buffer's callback holds
  // only a weak reference, so that a connection is never destroyed on the buffer's thread or
  // after its io_context. Released before the io_contexts.
  std::mutex waiting_mu;
  std::set<std::shared_ptr<Connection>> waiting_for_buffer;
  void wait_for_buffer(std::shared_ptr<Connection> c) {
    std::lock_guard lock(waiting_mu);
    waiting_for_buffer.insert(std::move(c));
  }
  void done_waiting(const std::shared_ptr<Connection>& c) {
    std::lock_guard lock(waiting_mu);
    waiting_for_buffer.erase(c);
  }

  Impl(HttpSourceOptions o, Buffer& b, const Clock& c) : opt(std::move(o)), buffer(b), clock(c) {
    for (unsigned slot = 0; slot < pixel_responses.size(); ++slot) {
      pixel_responses[slot] =
          pixel_response(slot & 1, slot & 2, slot & 4 ? 11 : 10, static_cast<bool>(slot & 8));
    }
  }
  static unsigned pixel_slot(bool png, bool keep_alive, bool http11, bool head) {
    return (png ? 1 : 0) | (keep_alive ? 2 : 0) | (http11 ? 4 : 0) | (head ? 8 : 0);
  }
  void accept();
};

namespace {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(HttpSource::Impl& s, Socket socket) : s_(s), stream_(std::move(socket)) {
    boost::system::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    peer_ = ec ? "" : ep.address().to_string();
    if (ep.address().is_v6() && ep.address().to_v6().is_v4_mapped()) {
      peer_ = asio::ip::make_address_v4(asio::ip::v4_mapped, ep.address().to_v6()).to_string();
    }
  }
  ~Connection() { --s_.connections; }

  void read(bool first) {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(s_.opt.max_header_bytes));
    parser_->body_limit(s_.opt.max_body_bytes);
    stream_.expires_after(
        std::chrono::nanoseconds(first ? s_.opt.header_timeout_ns : s_.opt.idle_timeout_ns));
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

 private:
  void on_read(beast::error_code ec) {
    if (ec == http::error::header_limit)
      return error(http::status::request_header_fields_too_large,
                   "request headers exceed " + std::to_string(s_.opt.max_header_bytes) + " bytes",
                   false);
    if (ec == http::error::body_limit)
      return error(http::status::payload_too_large,
                   "request body exceeds " + std::to_string(s_.opt.max_body_bytes) + " bytes",
                   false);
    if (ec) {
      // A timeout (slow or idle client), the client closing, or a request that does not
      // parse: close. A malformed request gets a 400 first.
      if (ec != beast::error::timeout && ec != http::error::end_of_stream &&
          ec != asio::error::eof && ec != asio::error::connection_reset &&
          ec != asio::error::operation_aborted) {
        error(http::status::bad_request, "malformed HTTP request: " + ec.message(), false);
        return;
      }
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      return;
    }
    req_ = parser_->release();
    handle();
  }

  void handle() {
    const std::string_view target(req_.target().data(), req_.target().size());
    const size_t q = target.find('?');
    const std::string_view path = target.substr(0, q);
    const std::string_view query = q == std::string::npos ? "" : target.substr(q + 1);
    const auto& o = s_.opt;
    const bool pixel =
        std::find(o.pixel_paths.begin(), o.pixel_paths.end(), path) != o.pixel_paths.end();
    if (pixel) {
      if (req_.method() != http::verb::get && req_.method() != http::verb::head) {
        return error(http::status::method_not_allowed, "the pixel answers GET", req_.keep_alive());
      }
      return on_pixel(path, query);
    }
    if (path == o.events_path) {
      if (req_.method() == http::verb::options) return on_preflight();
      if (req_.method() != http::verb::post) {
        return error(http::status::method_not_allowed, "events are POSTed as JSON",
                     req_.keep_alive());
      }
      return on_events(query);
    }
    error(http::status::not_found,
          "not found: the pixel is at " + o.pixel_paths.front() + ", events are POSTed to " +
              o.events_path,
          req_.keep_alive());
  }

  void on_pixel(std::string_view path, std::string_view query) {
    const auto& o = s_.opt;
    const bool png = path.size() >= 4 && path.substr(path.size() - 4) == ".png";
    const bool head = req_.method() == http::verb::head;
    const bool suppressed =
        o.honor_privacy_signals && (header(req_, "DNT") == "1" || header(req_, "Sec-GPC") == "1");
    if (suppressed) {
      ++s_.counters.pixel_suppressed;
    } else {
      record_hit(path, query);
    }
    const bool keep_alive = req_.keep_alive();
    if (req_.version() == 10 || req_.version() == 11) {
      const std::string& bytes = s_.pixel_responses[HttpSource::Impl::pixel_slot(
          png, keep_alive, req_.version() == 11, head)];
      return write_bytes(asio::buffer(bytes), keep_alive, nullptr);
    }
    auto bytes =
        std::make_shared<const std::string>(pixel_response(png, keep_alive, req_.version(), head));
    write_bytes(asio::buffer(*bytes), keep_alive, bytes);
  }

  void record_hit(std::string_view path, std::string_view query) {
    const auto& o = s_.opt;
    PixelQuery parsed =
        parse_pixel_query(query, o.max_query_params, o.max_value_bytes, o.site_param);
    std::string ua, referer, language, cookie;  // storage, used only for repaired values
    const std::string cookie_id = cookie_value(header(req_, "Cookie"), o.cookie_name);
    const std::string forwarded_for = header(req_, "X-Forwarded-For");
    if (forwarded_for.empty() && !anonymized_peer_) {  // the same for every request
      anonymized_peer_ = anonymize_ip(peer_, o.ip_mode, o.ip_salt);
    }
    const std::string client_ip =
        forwarded_for.empty()
            ? *anonymized_peer_
            : anonymize_ip(client_address(peer_, forwarded_for, o.trusted_proxies), o.ip_mode,
                           o.ip_salt);
    proto::PixelHitFields hit;
    hit.event_time_ns = s_.clock.now_ns();
    hit.path = path;
    hit.site_id = parsed.site_id;
    hit.query = &parsed.params;
    hit.user_agent = bounded(field(req_, http::field::user_agent), o.max_value_bytes, ua);
    hit.referer = bounded(field(req_, http::field::referer), o.max_value_bytes, referer);
    hit.accept_language =
        bounded(field(req_, http::field::accept_language), o.max_value_bytes, language);
    hit.client_ip = client_ip;
    hit.cookie_id = bounded(cookie_id, o.max_value_bytes, cookie);
    std::vector<NewEvent> events(1);
    events[0].kind = EventKind::pixel;
    events[0].event_time_ns = hit.event_time_ns;
    events[0].body = proto::encode_pixel_event(hit);
    ++s_.counters.pixel_hits;
    // Never waits: the image is already on its way, so a refusal is a loss: counted here and,
    // by reason, by the buffer (Acceptance::given).
    s_.buffer.append(std::move(events), [shared = s_.shared](const Result<AppendResult>& r) {
      if (!r) ++shared->counters.refused_by_buffer;
    });
  }

  void on_preflight() {
    auto res = std::make_shared<http::response<http::string_body>>(http::status::no_content,
                                                                   req_.version());
    if (!cors(*res)) return error(http::status::forbidden, "origin not allowed", req_.keep_alive());
    res->set(http::field::access_control_allow_methods, "POST, OPTIONS");
    res->set(http::field::access_control_allow_headers, "Content-Type");
    res->set(http::field::access_control_max_age, "600");
    res->keep_alive(req_.keep_alive());
    res->prepare_payload();
    write(res);
  }

  // Sets Access-Control-Allow-Origin when the request's Origin is allowed; false otherwise.
  bool cors(http::response<http::string_body>& res) {
    const std::string origin = header(req_, "Origin");
    const auto& allowed = s_.opt.cors_origins;
    if (origin.empty()) return true;
    const bool any = std::find(allowed.begin(), allowed.end(), "*") != allowed.end();
    if (!any && std::find(allowed.begin(), allowed.end(), origin) == allowed.end()) return false;
    // The Origin itself, never "*": a beacon (navigator.sendBeacon) is sent with credentials,
    // and a browser drops a credentialed answer whose allowed origin is "*".
    res.set(http::field::access_control_allow_origin, origin);
    res.set(http::field::access_control_allow_credentials, "true");
    res.set(http::field::vary, "Origin");
    return true;
  }

  void on_events(std::string_view query) {
    const auto& o = s_.opt;
    if (!events_media_type_ok(field(req_, http::field::content_type))) {
      return error(http::status::unsupported_media_type,
                   "Content-Type must be application/json or text/plain (a beacon), not \"" +
                       header(req_, "Content-Type") + "\"; the body is JSON either way",
                   req_.keep_alive());
    }
    auto objects = json::split_json_events(req_.body(), o.max_events_per_request);
    if (!objects)
      return error(http::status::bad_request, objects.error().message, req_.keep_alive());
    const int64_t now = s_.clock.now_ns();
    std::vector<NewEvent> events;
    events.reserve(objects->size());
    for (size_t i = 0; i < objects->size(); ++i) {
      std::string_view obj = (*objects)[i];
      auto schema = json::json_string_member(obj, o.schema_field);
      v1::Event e;
      e.set_kind(v1::EVENT_KIND_JSON);
      e.set_schema(schema && !schema->empty() && schema->size() <= 128 ? utf8::repaired(*schema)
                                                                       : o.default_schema);
      e.set_event_time(now);
      e.set_json(std::string(obj));
      NewEvent ne;
      ne.kind = EventKind::json;
      ne.event_time_ns = now;
      ne.body = e.SerializeAsString();
      events.push_back(std::move(ne));
    }
    const bool sync = ("&" + std::string(query) + "&").find("&sync=true&") != std::string::npos;
    const size_t count = events.size();
    struct State {
      std::mutex mu;
      bool in_call = true;
      std::optional<Result<AppendResult>> result;
    };
    auto state = std::make_shared<State>();
    if (sync) s_.wait_for_buffer(shared_from_this());
    s_.buffer.append(
        std::move(events),
        [state, shared = s_.shared, weak = weak_from_this(), executor = stream_.get_executor(),
         sync, count](const Result<AppendResult>& r) {
          if (!r) shared->counters.refused_by_buffer += count;
          {
            std::lock_guard lock(state->mu);
            if (state->in_call) {
              state->result = r;
              return;
            }
          }
          if (!sync) return;
          std::lock_guard lock(shared->mu);
          if (!shared->open) return;  // the source is closing: the connection closes unanswered
          asio::post(executor, [weak, r, count] {
            if (auto self = weak.lock()) {
              self->s_.done_waiting(self);
              self->answer_append(r, count, true);
            }
          });
        },
        Commit::grouped, sync ? Acceptance::on_commit : Acceptance::unless_refused);
    std::optional<Result<AppendResult>> now_result;
    {
      std::lock_guard lock(state->mu);
      state->in_call = false;
      now_result = state->result;
    }
    if (now_result) {  // refused at once (or fast)
      if (sync) s_.done_waiting(shared_from_this());
      return answer_append(*now_result, count, sync);
    }
    if (!sync) answer_append(AppendResult{}, count, false);  // queued
  }

  void answer_append(const Result<AppendResult>& r, size_t count, bool sync) {
    auto res =
        std::make_shared<http::response<http::string_body>>(http::status::ok, req_.version());
    res->set(http::field::content_type, "application/json");
    cors(*res);
    JsonWriter w;
    w.begin_object();
    if (r) {
      s_.counters.events_accepted += count;
      res->result(sync ? http::status::created : http::status::accepted);
      w.key("accepted").value(static_cast<uint64_t>(count));
      w.key("durable").value(sync);
      if (sync) w.key("first_seq").value(r->first_seq).key("last_seq").value(r->last_seq);
    } else {
      const auto code = r.error().code;
      const bool retry = code == buffer_errc::full || code == buffer_errc::queue_full ||
                         code == buffer_errc::disk_full;
      res->result(retry ? http::status::service_unavailable : http::status::internal_server_error);
      if (retry) res->set(http::field::retry_after, "1");
      w.key("error").value(r.error().describe());
    }
    w.end_object();
    res->body() = w.str() + "\n";
    res->keep_alive(req_.keep_alive());
    res->prepare_payload();
    write(res);
  }

  void error(http::status status, const std::string& message, bool keep_alive) {
    ++s_.counters.bad_requests;
    auto res = std::make_shared<http::response<http::string_body>>(
        status, req_.version() ? req_.version() : 11);
    res->set(http::field::content_type, "application/json");
    JsonWriter w;
    w.begin_object().key("error").value(message).end_object();
    res->body() = w.str() + "\n";
    res->keep_alive(keep_alive);
    res->prepare_payload();
    write(res);
  }

  // `owner` keeps the bytes alive when they are not one of the source's fixed responses.
  void write_bytes(asio::const_buffer bytes, bool keep_alive,
                   std::shared_ptr<const std::string> owner) {
    stream_.expires_after(std::chrono::seconds(10));
    asio::async_write(stream_, bytes,
                      [self = shared_from_this(), keep_alive, owner = std::move(owner)](
                          beast::error_code ec, size_t) { self->on_written(ec, keep_alive); });
  }

  void on_written(beast::error_code ec, bool keep_alive) {
    if (ec || !keep_alive) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      return;
    }
    read(false);
  }

  void write(const std::shared_ptr<http::response<http::string_body>>& res) {
    stream_.expires_after(std::chrono::seconds(10));
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res](beast::error_code ec, size_t) {
                        self->on_written(ec, res->keep_alive());
                      });
  }

  HttpSource::Impl& s_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> req_;
  std::string peer_;
  std::optional<std::string> anonymized_peer_;  // the client IP of a hit with no X-Forwarded-For
};

}  // namespace

void HttpSource::Impl::accept() {
  // The next connection's io_context: this thread's, then each worker's in turn.
  const size_t turn = next_worker++ % (workers.size() + 1);
  asio::io_context& target = turn == 0 ? io : workers[turn - 1]->io;
  acceptor.async_accept(target, [this](const boost::system::error_code& ec, Socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      if (connections.load() >= opt.max_connections) {
        ++counters.connections_refused;
        boost::system::error_code ignored;
        socket.close(ignored);
      } else {
        ++connections;
        std::make_shared<Connection>(*this, std::move(socket))->read(true);
      }
    }
    accept();
  });
}

Result<std::unique_ptr<HttpSource>> HttpSource::start(HttpSourceOptions options, Buffer& buffer,
                                                      const Clock& clock) {
  auto impl = std::make_unique<Impl>(std::move(options), buffer, clock);
  if (auto r =
          net::open_listener(impl->acceptor, impl->opt.host, impl->opt.port, "sources.http.listen");
      !r) {
    return r.error();
  }
  for (uint32_t i = 1; i < impl->opt.threads; ++i) {
    auto& w = impl->workers.emplace_back(std::make_unique<Impl::Worker>());
    Impl::Worker* worker = w.get();
    w->thread = std::thread([worker] { worker->io.run(); });
  }
  impl->accept();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->io.run(); });
  return std::unique_ptr<HttpSource>(new HttpSource(std::move(impl)));
}

HttpSource::HttpSource(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpSource::~HttpSource() {
  {
    std::lock_guard lock(impl_->shared->mu);
    impl_->shared->open = false;
  }
  impl_->io.stop();
  for (auto& w : impl_->workers) w->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  for (auto& w : impl_->workers) {
    if (w->thread.joinable()) w->thread.join();
  }
  // Before the io_contexts: the waiting connections' sockets belong to them.
  std::lock_guard lock(impl_->waiting_mu);
  impl_->waiting_for_buffer.clear();
}

uint16_t HttpSource::port() const { return impl_->acceptor.local_endpoint().port(); }

const HttpSourceCounters& HttpSource::counters() const { return impl_->counters; }

}  // namespace outpost::agent
