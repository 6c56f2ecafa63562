#pragma once
// The HTTP source's protocol rules as pure functions, apart from its connection code
// (http_source.cpp): the pixel's query string and privacy rules, its fixed responses, what the
// events endpoint accepts. No I/O; unit-tested and fuzzed directly (pixel_query_fuzz).
//
// Thread-safety: pure functions.

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace outpost::agent {

enum class IpMode { truncate, hash, drop };

// The pixel's query string: percent-decoded parameters (at most max_params, keys and values
// cut at max_value_bytes, invalid UTF-8 replaced by '?'), and the value of `site_param`.
struct PixelQuery {
  std::string site_id;
  std::vector<std::pair<std::string, std::string>> params;
};
PixelQuery parse_pixel_query(std::string_view query, size_t max_params, size_t max_value_bytes,
                             std::string_view site_param);

// Exposed for unit tests: the privacy rules.
std::string anonymize_ip(const std::string& ip, IpMode mode, const std::string& salt);
// The client address: the peer, or from X-Forwarded-For when the peer is a trusted proxy
// (the rightmost address that is not itself a trusted proxy).
std::string client_address(const std::string& peer, const std::string& forwarded_for,
                           const std::vector<std::string>& trusted_proxies);

// The whole pixel response (status line, headers, image), serialized once.
std::string pixel_response(bool png, bool keep_alive, unsigned version, bool head);
// The value of cookie `name` in a Cookie header ("" when absent or `name` is empty).
std::string cookie_value(const std::string& cookies, const std::string& name);
// A header value as stored: at most `max_bytes`, valid UTF-8. Copies into `storage` only when
// it must change.
std::string_view bounded(std::string_view v, size_t max_bytes, std::string& storage);
// The Content-Types POST /v1/events takes (the body must be JSON either way):
// application/json, and text/plain, which is what navigator.sendBeacon sends a string as.
bool events_media_type_ok(std::string_view content_type);

}  // namespace outpost::agent
