#include "agent/sources/http/request_rules.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <cctype>
#include <sstream>

#include "common/tls/digest.hpp"
#include "common/utf8.hpp"

namespace outpost::agent {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;

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

}  // namespace

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

bool events_media_type_ok(std::string_view content_type) {
  std::string type(content_type.substr(0, content_type.find(';')));
  std::transform(type.begin(), type.end(), type.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  while (!type.empty() && type.back() == ' ') type.pop_back();
  // text/plain: what navigator.sendBeacon sends a string as, and the one type a page may POST
  // across origins without a preflight. The body must still be JSON.
  return type == "application/json" || type == "text/plain";
}

}  // namespace outpost::agent
