#pragma once
// A hand-driven uplink client for tests: a blocking TCP socket with deadlines, optionally
// TLS (common/tls), and helpers to send crafted frames — what a misbehaving or malicious
// agent would do.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>

#include "common/codec/zstd_codec.hpp"
#include "common/tls/tls.hpp"
#include "outpost/v1/event.pb.h"
#include "proto/event_codec.hpp"
#include "uplink/frame.hpp"

namespace outpost::test {

class UplinkClient {
 public:
  ~UplinkClient() { close(); }

  bool connect(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool send_raw(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  // Bytes received within `ms`; nullopt when the peer closed (or reset) the connection.
  std::optional<std::string> receive_raw(int ms) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, ms) <= 0) return std::string();
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return std::nullopt;
    return std::string(buf, static_cast<size_t>(n));
  }
  // True when the peer closes the connection within `ms` (reading and discarding data).
  bool closed_within(int ms) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end) {
      auto r = receive_raw(50);
      if (!r) return true;
    }
    return false;
  }

  // The TLS handshake; the error when it fails (the server's refusal shows up here or at the
  // first read, as TLS 1.2 client finishes before the server verifies the client).
  Result<void> handshake(std::shared_ptr<tls::TlsContext> ctx, int ms = 5000) {
    tls_.emplace(std::move(ctx));
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end) {
      auto done = tls_->handshake();
      if (tls_->has_output()) send_raw(tls_->take_output());
      if (!done) return done.error();
      if (*done) return {};
      auto in = receive_raw(100);
      if (!in) return make_error(tls::tls_errc::closed, "closed during the handshake");
      tls_->feed(*in);
    }
    return make_error(tls::tls_errc::handshake, "handshake timed out");
  }

  // After the handshake: the server's certificate, as the client verified it.
  tls::PeerCertificate server_certificate() const { return tls_->peer(); }

  bool send_plain(std::string_view bytes) {
    if (!tls_->write(bytes)) return false;
    return send_raw(tls_->take_output());
  }
  bool send_frame(const v1::Frame& f) { return send_plain(wire::encode_frame(f)); }

  // The next frame within `ms`: nullopt on timeout; an error string when the connection
  // ended (closed, TLS alert) or the bytes were not a frame.
  Result<std::optional<v1::Frame>> next_frame(int ms) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (true) {
      auto f = decoder_.next();
      if (!f || *f) return f;
      if (std::chrono::steady_clock::now() >= end) return std::optional<v1::Frame>();
      auto in = receive_raw(50);
      if (!in) return make_error(tls::tls_errc::closed, "connection closed");
      if (in->empty()) continue;
      tls_->feed(*in);
      std::string plain;
      Result<size_t> n = size_t{0};
      while ((n = tls_->read(plain, 65536)) && *n > 0) {
      }
      decoder_.feed(plain);  // what came before a close_notify still counts
      if (!n) {
        auto last = decoder_.next();
        if (last && *last) return last;
        return n.error();
      }
    }
  }

  // Hello, then the Welcome (or the Goodbye that refuses it).
  Result<v1::Frame> hello(const std::string& agent_id) {
    v1::Frame h;
    h.mutable_hello()->set_agent_id(agent_id);
    h.mutable_hello()->add_codecs(v1::CODEC_ZSTD);
    if (!send_frame(h)) return make_error(tls::tls_errc::closed, "send failed");
    auto f = next_frame(5000);
    if (!f) return f.error();
    if (!*f) return make_error(tls::tls_errc::closed, "no answer to Hello");
    return **f;
  }

 private:
  int fd_ = -1;
  std::optional<tls::TlsSession> tls_;
  wire::FrameDecoder decoder_{1u << 20};
};

// A Batch frame of n JSON events {"n": SEQ} with seqs first..first+n-1, zstd-compressed.
inline v1::Frame json_batch_frame(const std::string& agent, uint64_t batch_seq, uint64_t first,
                                  uint64_t n) {
  std::string payload;
  for (uint64_t s = first; s < first + n; ++s) {
    v1::Event e;
    e.set_agent_id(agent);
    e.set_seq(s);
    e.set_kind(v1::EVENT_KIND_JSON);
    e.set_json("{\"n\":" + std::to_string(s) + "}");
    proto::append_delimited(payload, e.SerializeAsString());
  }
  codec::Compressor c(1);
  v1::Frame f;
  auto* b = f.mutable_batch();
  b->set_batch_seq(batch_seq);
  b->set_first_seq(first);
  b->set_last_seq(first + n - 1);
  b->set_event_count(static_cast<uint32_t>(n));
  b->set_codec(v1::CODEC_ZSTD);
  b->set_payload(*c.compress(payload));
  return f;
}

}  // namespace outpost::test
