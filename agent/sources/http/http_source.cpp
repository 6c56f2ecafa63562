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
#include "common/json_writer.hpp"
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

// The smallest transparent images: a 1x1 GIF89a (43 bytes) and a 1x1 RGBA PNG (67 bytes).
const std::string kGif(
    "GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\x21\xf9\x04\x01\x00\x00\x00\x00"
    "\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b",
    43);
const std::string kPng(
    "\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    "\x1f\x15\xc4\x89\x00\x00\x00\x0aIDAT\x78\x9c\x63\x00\x01\x00\x00\x05\x00\x01\x0d\x0a\x2d"
    "\xb4\x00\x00\x00\x00IEND\xae\x42\x60\x82",
    67);

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%' && i + 2 < s.size() &&
               std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

std::string header(const http::request<http::string_body>& req, std::string_view name) {
  auto it = req.find(boost::beast::string_view(name.data(), name.size()));
  return it == req.end() ? std::string() : std::string(it->value());
}

std::string_view field(const http::request<http::string_body>& req, http::field name) {
  auto it = req.find(name);
  return it == req.end() ? std::string_view()
                         : std::string_view(it->value().data(), it->value().size());
}

// A header value as stored: at most `max_bytes`, valid UTF-8. Copies only when it must change.
std::string_view bounded(std::string_view v, size_t max_bytes, std::string& storage) {
  if (v.size() > max_bytes) v = v.substr(0, max_bytes);
  if (utf8::valid(v)) return v;
  storage = utf8::repaired(std::string(v));
  return storage;
}

// The whole pixel response, serialized once by Beast: a hit is answered with one write of
// these bytes instead of building and serializing a response message each time.
std::string pixel_response(bool png, bool keep_alive, unsigned version, bool head) {
  http::response<http::string_body> res(http::status::ok, version);
  res.set(http::field::content_type, png ? "image/png" : "image/gif");
  res.set(http::field::cache_control, "no-store, max-age=0");
  res.body() = png ? kPng : kGif;
  res.keep_alive(keep_alive);
  res.prepare_payload();
  std::ostringstream out;
  if (head) {
    out << res.base();  // HEAD: the same headers (Content-Length included), no body
  } else {
    out << res;
  }
  return out.str();
}

std::string cookie_value(const std::string& cookies, const std::string& name) {
  if (name.empty()) return "";
  size_t at = 0;
  while (at < cookies.size()) {
    size_t end = cookies.find(';', at);
    std::string_view pair = std::string_view(cookies).substr(
        at, end == std::string::npos ? std::string::npos : end - at);
    while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
    if (pair.substr(0, name.size()) == name && pair.size() > name.size() &&
        pair[name.size()] == '=') {
      return std::string(pair.substr(name.size() + 1));
    }
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return "";
}

}  // namespace

PixelQuery parse_pixel_query(std::string_view query, size_t max_params, size_t max_value_bytes,
                             std::string_view site_param) {
  PixelQuery out;
  size_t at = 0;
  while (at < query.size() && out.params.size() < max_params) {
    size_t amp = query.find('&', at);
    std::string_view pair =
        query.substr(at, amp == std::string_view::npos ? std::string_view::npos : amp - at);
    at = amp == std::string_view::npos ? query.size() : amp + 1;
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::string key = percent_decode(pair.substr(0, eq));
    std::string value = eq == std::string_view::npos ? "" : percent_decode(pair.substr(eq + 1));
    if (key.size() > max_value_bytes) key.resize(max_value_bytes);
    if (value.size() > max_value_bytes) value.resize(max_value_bytes);
    key = utf8::repaired(std::move(key));
    value = utf8::repaired(std::move(value));
    if (key == site_param) out.site_id = value;
    out.params.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

std::string anonymize_ip(const std::string& ip, IpMode mode, const std::string& salt) {
  if (mode == IpMode::drop || ip.empty()) return "";
  if (mode == IpMode::hash) return tls::sha256_hex(salt + ip).substr(0, 32);
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(ip, ec);
  if (ec) return "";
  if (addr.is_v6() && addr.to_v6().is_v4_mapped()) {
    addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
  }
  if (addr.is_v4()) {
    auto bytes = addr.to_v4().to_bytes();
    bytes[3] = 0;  // /24
    return asio::ip::address_v4(bytes).to_string();
  }
  auto bytes = addr.to_v6().to_bytes();
  std::fill(bytes.begin() + 6, bytes.end(), 0);  // /48
  return asio::ip::address_v6(bytes).to_string();
}

std::string client_address(const std::string& peer, const std::string& forwarded_for,
                           const std::vector<std::string>& trusted_proxies) {
  auto trusted = [&](const std::string& a) {
    return std::find(trusted_proxies.begin(), trusted_proxies.end(), a) != trusted_proxies.end();
  };
  if (forwarded_for.empty() || !trusted(peer)) return peer;
  std::vector<std::string> hops;
  size_t at = 0;
  while (at <= forwarded_for.size()) {
    size_t comma = forwarded_for.find(',', at);
    std::string hop =
        forwarded_for.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    hop.erase(0, hop.find_first_not_of(' '));
    hop.erase(hop.find_last_not_of(' ') + 1);
    hops.push_back(hop);
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  for (auto it = hops.rbegin(); it != hops.rend(); ++it) {
    if (trusted(*it)) continue;
    boost::system::error_code ec;
    asio::ip::make_address(*it, ec);
    return ec ? peer : *it;  // a forged or malformed entry: fall back to the peer
  }
  return peer;
}

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
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::thread thread;
  // Connections waiting for a ?sync=true append to be durable. The buffer's callback holds
  // only a weak reference, so that a connection is never destroyed on the buffer's thread or
  // after the io_context. Used on the io thread; released before the io_context.
  std::set<std::shared_ptr<Connection>> waiting_for_buffer;

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
    res.set(http::field::access_control_allow_origin, any ? "*" : origin);
    res.set(http::field::vary, "Origin");
    return true;
  }

  void on_events(std::string_view query) {
    const auto& o = s_.opt;
    std::string type = header(req_, "Content-Type");
    std::transform(type.begin(), type.end(), type.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (type.rfind("application/json", 0) != 0) {
      return error(
          http::status::unsupported_media_type,
          "Content-Type must be application/json, not \"" + header(req_, "Content-Type") + "\"",
          req_.keep_alive());
    }
    auto objects = proto::split_json_events(req_.body(), o.max_events_per_request);
    if (!objects)
      return error(http::status::bad_request, objects.error().message, req_.keep_alive());
    const int64_t now = s_.clock.now_ns();
    std::vector<NewEvent> events;
    events.reserve(objects->size());
    for (size_t i = 0; i < objects->size(); ++i) {
      std::string_view obj = (*objects)[i];
      auto schema = proto::json_string_member(obj, o.schema_field);
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
    if (sync) s_.waiting_for_buffer.insert(shared_from_this());
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
              self->s_.waiting_for_buffer.erase(self);
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
      if (sync) s_.waiting_for_buffer.erase(shared_from_this());
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
  acceptor.async_accept(io, [this](const boost::system::error_code& ec, Socket socket) {
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
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint16_t HttpSource::port() const { return impl_->acceptor.local_endpoint().port(); }

const HttpSourceCounters& HttpSource::counters() const { return impl_->counters; }

}  // namespace outpost::agent
