#pragma once
// The HTTP source (docs/sources.md): the tracking pixel (GET /p.gif, /p.png) and JSON events
// from local programs (POST /v1/events), into the buffer. Boost.Beast on one thread of its
// own.
//
// The pixel answers at once, before the hit is durable: a page's load time must not depend
// on the disk. POST answers 202 once the events are queued for the buffer, or with
// ?sync=true only after they are durable (201), or 503 with Retry-After when the buffer
// refuses them.
//
// Privacy: the client IP is truncated (IPv4 /24, IPv6 /48), salted-hashed or dropped;
// X-Forwarded-For counts only from trusted proxies; DNT / Sec-GPC can suppress the event.
// Nothing else from the request is stored.
//
// Thread-safety: start() and the destructor from the owning thread; counters() from any.
// The Buffer and the Clock outlive the HttpSource.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/buffer/buffer.hpp"
#include "agent/sources/http/request_rules.hpp"
#include "common/clock.hpp"
#include "common/result.hpp"

namespace outpost::agent {

struct HttpSourceOptions {
  std::string host = "0.0.0.0";
  uint16_t port = 8080;
  std::vector<std::string> pixel_paths = {"/p.gif", "/p.png"};
  std::string events_path = "/v1/events";
  std::string site_param = "site";   // the query parameter holding the site / property id
  size_t max_query_params = 50;      // more are ignored (and counted)
  size_t max_value_bytes = 1024;     // longer query values are cut
  size_t max_header_bytes = 8192;    // over it: 431
  size_t max_body_bytes = 1u << 20;  // over it: 413
  size_t max_events_per_request = 1000;
  int64_t header_timeout_ns = 10'000'000'000;  // a request must arrive within this
  int64_t idle_timeout_ns = 60'000'000'000;    // keep-alive between requests
  uint32_t max_connections = 1024;
  // Threads serving connections (sources.http.threads). One accepts and hands each connection
  // to the next in turn; every appended event goes through the one buffer and its group commit.
  uint32_t threads = 1;
  IpMode ip_mode = IpMode::truncate;
  std::string ip_salt;                       // for IpMode::hash
  std::vector<std::string> trusted_proxies;  // exact addresses
  bool honor_privacy_signals = false;        // DNT: 1 / Sec-GPC: 1 -> no event
  std::string cookie_name;                   // "" -> no cookie id
  std::string schema_field = "schema";       // JSON member naming the event's schema
  std::string default_schema = "json";
  std::vector<std::string> cors_origins;  // allowed Origins for POST ("*": any)
  bool operator==(const HttpSourceOptions&) const = default;
};

struct HttpSourceCounters {
  std::atomic<uint64_t> pixel_hits{0};        // recorded (queued for the buffer)
  std::atomic<uint64_t> pixel_suppressed{0};  // DNT / GPC
  std::atomic<uint64_t> events_accepted{0};
  std::atomic<uint64_t> refused_by_buffer{0};  // hits and events the buffer did not take
  std::atomic<uint64_t> bad_requests{0};       // every 4xx
  std::atomic<uint64_t> connections_refused{0};
};

class HttpSource {
 public:
  static Result<std::unique_ptr<HttpSource>> start(HttpSourceOptions options, Buffer& buffer,
                                                   const Clock& clock);
  ~HttpSource();
  uint16_t port() const;
  const HttpSourceCounters& counters() const;

  struct Impl;

 private:
  explicit HttpSource(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::agent
