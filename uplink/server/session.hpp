#pragma once
// One agent connection on the server: the socket, the TLS handshake and its timer, reading
// and writing, and carrying out what the protocol (uplink/gateway_protocol.hpp: Hello/Welcome,
// batches to acks, refusals, the ways a session ends) decides: metrics, the audit log, the
// sink. Runs on the connection's strand; the Server::Impl outlives it.
#include <utility>

#include <boost/asio.hpp>

#include <cstring>
#include <optional>
#include <string>

#include "common/tls/tls.hpp"
#include "uplink/frame.hpp"
#include "uplink/gateway_protocol.hpp"
#include "uplink/server/server_impl.hpp"

namespace outpost::uplink {

constexpr size_t kReadChunk = 64 * 1024;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Server::Impl& server, tcp::socket socket, std::string ip)
      : s_(server),
        limits_(server.config.limits),  // made under the server's lock: a reload changes them
        socket_(std::move(socket)),
        handshake_timer_(socket_.get_executor()),
        idle_timer_(socket_.get_executor()),
        decoder_(limits_.max_frame_bytes),
        ip_(std::move(ip)) {}

  void start() {
    auto self = shared_from_this();
    handshake_timer_.expires_after(std::chrono::nanoseconds(limits_.handshake_timeout_ns));
    handshake_timer_.async_wait([self](const boost::system::error_code& ec) {
      if (!ec && self->state_ == State::handshake) {
        self->s_.metrics.reject("handshake_timeout");
        self->s_.audit_line(self->ip_, "", "", "no TLS handshake within the handshake timeout");
        self->finish();
      }
    });
    read();
  }

  // Another session for the same device replaced this one.
  void replaced() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      if (self->state_ != State::open || !self->protocol_ || !self->protocol_->open()) return;
      self->s_.metrics.sessions_replaced++;
      self->protocol_->replaced();
      self->carry_out();
    });
  }

  // Graceful shutdown: read nothing more; close once in-flight batches are acknowledged.
  void drain() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      self->draining_ = true;
      if (self->state_ == State::closed || self->state_ == State::closing) return;
      if (!self->protocol_) {
        self->finish();
        return;
      }
      self->protocol_->drain();
      self->carry_out();
    });
  }

  // The TLS files were read again: a session whose peer the new CRL revokes ends now, and
  // nothing it sent after this is acknowledged (batches the sink finishes later are not
  // acknowledged either: the session is closing).
  void check_revoked(std::shared_ptr<tls::TlsContext> context) {
    asio::post(socket_.get_executor(), [self = shared_from_this(), context] {
      if (self->state_ != State::open || self->peer_der_.empty() ||
          !context->revoked(self->peer_der_)) {
        return;
      }
      self->s_.metrics.reject("revoked");
      self->s_.audit_line(self->ip_, self->subject_, self->serial_,
                          "certificate revoked (tls.crl) while connected: session closed, "
                          "nothing more acknowledged");
      self->goodbye("certificate revoked");
    });
  }

  void cut() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->finish(); });
  }

 private:
  enum class State { handshake, open, closing, closed };

  void read() {
    if (reading_ || state_ == State::closing || state_ == State::closed || draining_) return;
    if (protocol_ && !protocol_->wants_frames()) return;  // resumes on an ack
    reading_ = true;
    if (!tls_) {
      // Nothing is allocated for a connection that has sent nothing yet: the TLS engine
      // (mbedTLS's record buffers, ~40 KB) and the read buffer come with its first bytes, so
      // a flood of idle connections costs little more than their sockets.
      socket_.async_wait(
          tcp::socket::wait_read, [self = shared_from_this()](const boost::system::error_code& ec) {
            self->reading_ = false;
            if (ec) {
              self->on_read(ec, 0);
              return;
            }
            if (self->state_ == State::closing || self->state_ == State::closed) return;
            boost::system::error_code avail_ec;
            if (self->socket_.available(avail_ec) == 0) {  // readable with nothing: closed
              self->on_read(avail_ec ? avail_ec : asio::error::eof, 0);
              return;
            }
            self->tls_.emplace(self->s_.tls->current());
            self->buf_.resize(16 * 1024);
            self->read();
          });
      return;
    }
    socket_.async_read_some(asio::buffer(buf_), [self = shared_from_this()](
                                                    const boost::system::error_code& ec, size_t n) {
      self->reading_ = false;
      self->on_read(ec, n);
    });
  }

  void on_read(const boost::system::error_code& ec, size_t n) {
    if (state_ == State::closed || state_ == State::closing) return;
    if (ec) {
      if (state_ == State::handshake) {
        s_.metrics.reject("closed_during_handshake");
        s_.audit_line(ip_, "", "", "connection closed before the TLS handshake completed");
      } else if (auto end = decoder_.finish(); !end) {
        s_.metrics.reject("truncated_frame");
        s_.log->warn("{} ({}): {}", identity_, ip_, end.error().describe());
      }
      finish();
      return;
    }
    touch();
    tls_->feed(std::string_view(buf_.data(), n));
    if (state_ == State::handshake && !handshake()) return;
    // Application data: decrypt everything there is, then parse frames.
    while (true) {
      auto got = tls_->read(plain_, kReadChunk);
      if (!got) {
        if (got.error().code != tls::tls_errc::closed) {
          s_.metrics.reject("tls");
          s_.log->warn("{} ({}): {}", identity_, ip_, got.error().describe());
        }
        finish();
        return;
      }
      if (*got == 0) break;
      decoder_.feed(plain_);
      plain_.clear();
      if (!process_frames()) return;
    }
    read();
  }

  // The TLS handshake went on with the bytes just fed: false when the session cannot go on
  // now (it failed, or needs more bytes and a read was started).
  bool handshake() {
    auto done = tls_->handshake();
    if (!done) {
      auto peer = tls_->peer();
      s_.metrics.reject(done.error().code == tls::tls_errc::peer_verify ? "certificate"
                                                                        : "handshake");
      s_.audit_line(ip_, peer.subject, peer.serial, done.error().describe());
      flush();
      finish_after_flush();
      return false;
    }
    flush();
    if (!*done) {
      read();
      return false;
    }
    handshake_timer_.cancel();
    auto peer = tls_->peer();
    // Outpost's own URIs (urn:outpost:relay:SITE, urn:outpost:site:SITE) are roles, never the
    // identity.
    std::string relay_site;
    std::string first_uri;
    for (const std::string& uri : peer.uri_sans) {
      if (uri.rfind(kRelayUri, 0) == 0) relay_site = uri.substr(std::strlen(kRelayUri));
      if (first_uri.empty() && uri.rfind("urn:outpost:", 0) != 0) first_uri = uri;
    }
    identity_ = s_.config.identity_from_uri_san ? first_uri : peer.common_name;
    subject_ = peer.subject;
    serial_ = peer.serial;
    peer_der_ = peer.der;  // a copy: admit_peer (a relay keeps it) reads peer below
    state_ = State::open;
    s_.handshake_over();
    if (!acceptable_identity(identity_)) {
      s_.metrics.reject("identity");
      s_.audit_line(ip_, subject_, serial_,
                    std::string("the certificate carries no usable identity (") +
                        (s_.config.identity_from_uri_san ? "URI SAN" : "CN") +
                        ": printable ASCII, 1 to 128 characters)");
      goodbye("certificate identity not usable");
      return false;
    }
    if (s_.config.admit_peer) {
      if (auto refused = s_.config.admit_peer(identity_, peer)) {
        s_.metrics.reject("peer_refused");
        s_.audit_line(ip_, subject_, serial_, *refused);
        goodbye(*refused);
        return false;
      }
    }
    if (!s_.config.allow_relays) relay_site.clear();
    const auto& l = limits_;
    protocol_.emplace(
        SessionLimits{l.max_frame_bytes, l.max_in_flight_batches, l.max_decompressed_bytes,
                      l.max_window_log, l.max_events_per_batch, l.idle_timeout_ns},
        identity_, s_, relay_site, &s_);
    protocol_->on_activity(s_.clock.mono_ns());
    return true;
  }

  // False when the session is ending.
  bool process_frames() {
    while (state_ == State::open && protocol_->open()) {
      auto frame = decoder_.next();
      if (!frame) {
        protocol_->on_stream_error(frame.error());
      } else if (!*frame) {
        return true;
      } else {
        protocol_->on_frame(**frame, s_.clock.mono_ns());
      }
      if (!carry_out()) return false;
    }
    return false;
  }

  // Does what the protocol decided. False when the session is ending.
  bool carry_out() {
    GatewayOutput out = protocol_->take_output();
    s_.metrics.bytes_compressed += out.bytes_compressed;
    s_.metrics.bytes_raw += out.bytes_raw;
    for (const Refusal& r : out.refusals) {
      s_.metrics.reject(r.label);
      if (r.kind == Refusal::Kind::batch_rejected) s_.metrics.batches_rejected++;
      if (r.kind == Refusal::Kind::batch_rate_limited) {
        s_.metrics.batches_retry_later++;
        continue;  // one per batch over the rate: not worth a log line each
      }
      if (r.audit) {
        s_.audit_line(ip_, subject_, serial_, r.message);
      } else {
        s_.log->warn("{} ({}): {}", identity_, ip_, r.message);
      }
    }
    if (out.established) {
      established_ = true;
      if (s_.config.on_session) s_.config.on_session(identity_, true);
      s_.metrics.sessions_established++;
      register_identity();
      s_.sink.session_started(identity_);
      s_.log->info("session {} from {} ({}, {}), certificate serial {}, agent {}", identity_, ip_,
                   tls_->version(), tls_->cipher_suite(), serial_, *out.established);
    }
    for (const std::string& origin : out.origins_started) {
      s_.metrics.relayed_devices++;
      s_.log->info("relay {} ({}) sends for {}", identity_, ip_, origin);
      s_.sink.session_started(origin);
    }
    for (BatchToWrite& w : out.writes) write(std::move(w));
    for (const v1::Frame& f : out.frames) {
      if (auto r = tls_->write(wire::encode_frame(f)); !r) {
        finish();
        return false;
      }
    }
    switch (out.end) {
      case GatewayOutput::End::now:
        finish();
        return false;
      case GatewayOutput::End::after_send:
        tls_->close();
        flush();
        finish_after_flush();
        return false;
      case GatewayOutput::End::none:
        flush();
        return state_ == State::open;
    }
    return false;
  }

  void write(BatchToWrite w) {
    const uint64_t batch_seq = w.batch_seq;
    const int64_t started = s_.clock.mono_ns();
    if (s_.config.prepare) s_.config.prepare(w.batch);  // the gateway's validation
    auto self = shared_from_this();
    s_.sink.write(std::move(w.batch), [self, batch_seq, started](const Result<SinkResult>& r) {
      const double seconds = static_cast<double>(self->s_.clock.mono_ns() - started) / 1e9;
      asio::post(self->socket_.get_executor(),
                 [self, batch_seq, r, seconds] { self->on_written(batch_seq, r, seconds); });
    });
  }

  void on_written(uint64_t batch_seq, const Result<SinkResult>& r, double seconds) {
    s_.metrics.observe_sink_latency(seconds);
    if (r) {
      s_.metrics.events_written += r->written;
      s_.metrics.events_dead_letter += r->dead_lettered;
      s_.metrics.events_duplicate += r->duplicates;
      if (r->gap_lost > 0) {
        s_.metrics.events_gap_lost += r->gap_lost;
        s_.audit->error(
            "gap peer={} subject=\"{}\" serial={} agent={} seqs {}..{} ({} events) are below "
            "what the agent still has and above the sink's mark: they cannot be sent again and "
            "are counted as lost ({}_events_total{{result=\"gap_lost\"}}); was the sink's "
            "state rolled back or replaced?",
            ip_, subject_, serial_, identity_, r->gap_first, r->gap_first + r->gap_lost - 1,
            r->gap_lost, s_.metrics.prefix());
      }
      (r->written == 0 && r->dead_lettered == 0 && r->duplicates > 0 ? s_.metrics.batches_duplicate
                                                                     : s_.metrics.batches_ok)++;
    } else {
      s_.metrics.batches_retry_later++;
      s_.metrics.reject("sink");
      s_.metrics.sink_error(sink_error_name(r.error().code));
      s_.log->debug("{} ({}): batch {} not written: {}", identity_, ip_, batch_seq,
                    describe_sink_error(r.error()));
    }
    protocol_->on_written(
        batch_seq, r ? Result<void>()
                     : Result<void>(make_error(r.error().code, describe_sink_error(r.error()))));
    if (state_ == State::closed || state_ == State::closing) return;  // the agent resends
    if (carry_out()) read();
  }

  void register_identity() {
    std::shared_ptr<Session> old;
    {
      std::lock_guard lock(s_.mu);
      auto& slot = s_.by_identity[identity_];
      old = slot.lock();
      slot = shared_from_this();
    }
    if (old && old.get() != this) old->replaced();
  }

  void send(const v1::Frame& f) {
    auto r = tls_->write(wire::encode_frame(f));
    if (!r) {
      finish();
      return;
    }
    flush();
  }

  void goodbye(const std::string& reason) {
    v1::Frame g;
    g.mutable_goodbye()->set_reason(reason);
    if (tls_ && tls_->handshake_done()) (void)tls_->write(wire::encode_frame(g));
    if (tls_) tls_->close();
    flush();
    finish_after_flush();
  }

  void flush() {
    if (tls_ && tls_->has_output()) out_ += tls_->take_output();
    if (writing_ || out_.empty() || state_ == State::closed) return;
    writing_ = true;
    auto data = std::make_shared<std::string>(std::exchange(out_, std::string()));
    asio::async_write(
        socket_, asio::buffer(*data),
        [self = shared_from_this(), data](const boost::system::error_code& ec, size_t) {
          self->writing_ = false;
          if (ec) {
            self->finish();
            return;
          }
          if (!self->out_.empty()) {
            self->flush();
          } else if (self->state_ == State::closing) {
            self->finish();
          }
        });
  }

  void finish_after_flush() {
    if (state_ == State::closed) return;
    if (state_ == State::handshake) s_.handshake_over();
    state_ = State::closing;
    handshake_timer_.cancel();
    idle_timer_.cancel();
    if (!writing_ && out_.empty()) finish();
  }

  void finish() {
    if (state_ == State::closed) return;
    if (state_ == State::handshake) s_.handshake_over();
    state_ = State::closed;
    handshake_timer_.cancel();
    idle_timer_.cancel();
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    s_.release(ip_, shared_from_this());
    if (established_ && s_.config.on_session) s_.config.on_session(identity_, false);
    if (!identity_.empty()) {
      std::lock_guard lock(s_.mu);
      auto it = s_.by_identity.find(identity_);
      if (it != s_.by_identity.end() && it->second.lock().get() == this) s_.by_identity.erase(it);
    }
  }

  void touch() {
    if (protocol_) protocol_->on_activity(s_.clock.mono_ns());
    idle_timer_.expires_after(std::chrono::nanoseconds(limits_.idle_timeout_ns));
    idle_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->state_ != State::open || !self->protocol_) return;
      self->protocol_->on_timer(self->s_.clock.mono_ns());
      if (self->protocol_->open()) {
        self->touch();  // the sink holds a batch: a slow sink is not an idle agent
        return;
      }
      self->carry_out();
    });
  }

  Server::Impl& s_;
  const ServerLimits
      limits_;  // the server's when the connection came: a reload applies to new ones
  tcp::socket socket_;
  asio::steady_timer handshake_timer_;
  asio::steady_timer idle_timer_;
  std::optional<tls::TlsSession> tls_;  // made when the first bytes arrive (read())
  wire::FrameDecoder decoder_;
  std::string ip_;
  std::string identity_, subject_, serial_;
  std::string peer_der_;  // the peer's certificate, checked again when a new CRL is read
  State state_ = State::handshake;
  std::optional<GatewayProtocol> protocol_;  // made when the handshake is done
  std::vector<char> buf_;                    // likewise
  std::string plain_;
  std::string out_;
  bool reading_ = false;
  bool writing_ = false;
  bool draining_ = false;
  bool established_ = false;  // the Hello was accepted
};

}  // namespace outpost::uplink
