#pragma once
// Opening a listening TCP socket with an error a person can act on: every listener (the
// gateway's TLS and HTTP ports, the agent's HTTP source and status endpoints) goes through
// here, so they behave the same (reuse_address, the system's backlog, the config key named).
//
// Thread-safety: call before the acceptor's io_context runs.

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/socket_base.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/errc.hpp"
#include "common/result.hpp"

namespace outpost::net {

inline Result<void> open_listener(boost::asio::ip::tcp::acceptor& acceptor, const std::string& host,
                                  uint16_t port, std::string_view config_key) {
  namespace asio = boost::asio;
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
  if (ec) {
    return make_error(common_errc::config_invalid,
                      std::string(config_key) + ": \"" + host + "\" is not an IP address");
  }
  const asio::ip::tcp::endpoint ep(addr, port);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return make_error(common_errc::config_invalid, std::string(config_key) + ": cannot listen on " +
                                                       addr.to_string() + ":" +
                                                       std::to_string(port) + ": " + ec.message());
  }
  return {};
}

}  // namespace outpost::net
