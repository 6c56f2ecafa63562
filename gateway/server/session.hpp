#pragma once
// One agent connection on the gateway: the TLS handshake, Hello/Welcome, batches through the
// sink to acks, and the ways a session ends (docs/protocol.md). Runs on the connection's
// strand; the Server::Impl outlives it.
#include <utility>

#include <boost/asio.hpp>

#include <array>
#include <deque>
#include <optional>
#include <string>

#include "common/codec/zstd_codec.hpp"
#include "common/errc.hpp"
#include "common/tls/tls.hpp"
#include "gateway/server/server_impl.hpp"
#include "uplink/frame.hpp"

namespace outpost::gateway {

inline constexpr const char* kVersion = "0.1.0";
constexpr size_t kReadChunk = 64 * 1024;

// Identities become file contents, log fields and metric labels: printable ASCII only.
inline bool acceptable_identity(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (unsigned char c : id) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Server::Impl& server, tcp::socket socket, std::string ip)
      : s_(server),
        socket_(std::move(socket)),
        handshake_timer_(socket_.get_executor()),
        idle_timer_(socket_.get_executor()),
        decoder_(server.config.limits.max_frame_bytes),
        ip_(std::move(ip)) {}

  void start() {
    auto self = shared_from_this();
    handshake_timer_.expires_after(std::chrono::nanoseconds(s_.config.limits.handshake_timeout_ns));
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
      if (self->state_ == State::closed || self->state_ == State::closing) return;
      self->s_.metrics.sessions_replaced++;
      self->goodbye("replaced by a newer session of the same device");
    });
  }

  // Graceful shutdown: read nothing more; close once in-flight batches are acknowledged.
  void drain() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      self->draining_ = true;
      if (self->state_ != State::active) {
        if (self->state_ != State::closed && self->state_ != State::closing) self->finish();
        return;
      }
      if (self->in_flight_ == 0) self->goodbye("the gateway is shutting down");
    });
  }

  void cut() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->finish(); });
  }

 private:
  enum class State { handshake, await_hello, active, closing, closed };

  void read() {
    if (reading_ || state_ == State::closing || state_ == State::closed || draining_) return;
    if (in_flight_ >= s_.config.limits.max_in_flight_batches) return;  // resumes on an ack
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
            self->tls_.emplace(self->s_.tls);
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
      } else if (auto end = decoder_.finish(); !end && state_ != State::handshake) {
        s_.metrics.reject("truncated_frame");
        s_.log->warn("{} ({}): {}", identity_, ip_, end.error().describe());
      }
      finish();
      return;
    }
    touch();
    tls_->feed(std::string_view(buf_.data(), n));
    if (state_ == State::handshake) {
      auto done = tls_->handshake();
      if (!done) {
        auto peer = tls_->peer();
        s_.metrics.reject(done.error().code == tls::tls_errc::peer_verify ? "certificate"
                                                                          : "handshake");
        s_.audit_line(ip_, peer.subject, peer.serial, done.error().describe());
        flush();
        finish_after_flush();
        return;
      }
      flush();
      if (!*done) {
        read();
        return;
      }
      handshake_timer_.cancel();
      auto peer = tls_->peer();
      identity_ = s_.config.identity_from_uri_san
                      ? (peer.uri_sans.empty() ? std::string() : peer.uri_sans.front())
                      : peer.common_name;
      subject_ = peer.subject;
      serial_ = peer.serial;
      if (!acceptable_identity(identity_)) {
        s_.metrics.reject("identity");
        s_.audit_line(ip_, subject_, serial_,
                      std::string("the certificate carries no usable identity (") +
                          (s_.config.identity_from_uri_san ? "URI SAN" : "CN") +
                          ": printable ASCII, 1 to 128 characters)");
        goodbye("certificate identity not usable");
        return;
      }
      state_ = State::await_hello;
      s_.handshake_over();
    }
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

  // False when the session is ending.
  bool process_frames() {
    while (state_ == State::await_hello || state_ == State::active) {
      auto frame = decoder_.next();
      if (!frame) {
        const bool too_large = frame.error().code == wire::wire_errc::frame_too_large;
        s_.metrics.reject(too_large ? "frame_too_large" : "bad_frame");
        s_.log->warn("{} ({}): {}; closing the session", identity_, ip_, frame.error().describe());
        goodbye(frame.error().describe());
        return false;
      }
      if (!*frame) return true;
      if (!handle(**frame)) return false;
    }
    return false;
  }

  bool handle(v1::Frame& f) {
    if (state_ == State::await_hello) {
      if (!f.has_hello()) {
        s_.metrics.reject("protocol");
        goodbye("the first frame must be Hello");
        return false;
      }
      const v1::Hello& h = f.hello();
      if (h.agent_id() != identity_) {
        s_.metrics.reject("agent_id_mismatch");
        s_.audit_line(ip_, subject_, serial_,
                      "Hello claims agent id \"" + h.agent_id().substr(0, 128) +
                          "\" but the certificate says \"" + identity_ + "\"");
        goodbye("agent id does not match the client certificate");
        return false;
      }
      state_ = State::active;
      s_.metrics.sessions_established++;
      register_identity();
      s_.sink.session_started(identity_);
      v1::Frame w;
      auto* welcome = w.mutable_welcome();
      welcome->set_max_frame_bytes(s_.config.limits.max_frame_bytes);
      welcome->set_max_in_flight_batches(s_.config.limits.max_in_flight_batches);
      welcome->set_max_decompressed_bytes(s_.config.limits.max_decompressed_bytes);
      welcome->set_max_events_per_batch(s_.config.limits.max_events_per_batch);
      welcome->set_gateway_version(kVersion);
      welcome->set_identity(identity_);
      send(w);
      s_.log->info("session {} from {} ({}, {}), agent {}", identity_, ip_, tls_->version(),
                   tls_->cipher_suite(), h.software_version());
      return true;
    }
    switch (f.body_case()) {
      case v1::Frame::kBatch:
        return on_batch(*f.mutable_batch());
      case v1::Frame::kPing: {
        v1::Frame p;
        p.mutable_pong()->set_nonce(f.ping().nonce());
        send(p);
        return true;
      }
      case v1::Frame::kPong:
        return true;
      case v1::Frame::kGoodbye:
        finish();
        return false;
      default:
        s_.metrics.reject("protocol");
        goodbye("unexpected frame from an agent");
        return false;
    }
  }

  static v1::Frame ack_frame(uint64_t batch_seq, v1::Ack::Status status, const std::string& reason,
                             uint32_t retry_after_ms = 0) {
    v1::Frame a;
    auto* ack = a.mutable_ack();
    ack->set_batch_seq(batch_seq);
    ack->set_status(status);
    ack->set_reason(reason);
    ack->set_retry_after_ms(retry_after_ms);
    return a;
  }

  // Acks go out in batch_seq order (docs/protocol.md), whatever order the answers are known
  // in: a retry-later decided at once waits behind earlier batches still in the sink.
  void answer(uint64_t batch_seq, v1::Frame frame) {
    for (Answer& a : answers_) {
      if (a.batch_seq == batch_seq) {
        a.frame = std::move(frame);
        break;
      }
    }
    while (!answers_.empty() && answers_.front().frame) {
      send(*answers_.front().frame);
      answers_.pop_front();
    }
  }

  bool reject_batch(uint64_t batch_seq, const std::string& reason_label, const std::string& why) {
    s_.metrics.batches_rejected++;
    s_.metrics.reject(reason_label);
    s_.log->warn("{} ({}): batch {} rejected: {}", identity_, ip_, batch_seq, why);
    send(ack_frame(batch_seq, v1::Ack::REJECTED, why));  // at once: the session ends
    goodbye("batch rejected: " + why);
    return false;
  }

  bool on_batch(v1::Batch& b) {
    const auto& limits = s_.config.limits;
    if (b.event_count() > limits.max_events_per_batch) {
      return reject_batch(b.batch_seq(), "too_many_events",
                          "batch of " + std::to_string(b.event_count()) +
                              " events exceeds max_events_per_batch " +
                              std::to_string(limits.max_events_per_batch));
    }
    answers_.push_back({b.batch_seq(), std::nullopt});
    if (session_first_seq_ == 0) session_first_seq_ = b.first_seq();
    if (!s_.take_tokens(identity_, b.event_count())) {
      s_.metrics.batches_retry_later++;
      s_.metrics.reject("rate_limited");
      answer(b.batch_seq(),
             ack_frame(b.batch_seq(), v1::Ack::RETRY_LATER, "device rate limit", 1000));
      return true;
    }
    s_.metrics.bytes_compressed += b.payload().size();
    std::string raw;
    if (b.codec() == v1::CODEC_ZSTD) {
      auto out =
          codec::decompress(b.payload(), {limits.max_decompressed_bytes, limits.max_window_log});
      if (!out) {
        const bool bomb = out.error().code == codec::codec_errc::too_large ||
                          out.error().code == codec::codec_errc::window_too_large;
        return reject_batch(b.batch_seq(), bomb ? "decompression_limit" : "corrupt_payload",
                            out.error().describe());
      }
      raw = std::move(*out);
    } else if (b.codec() == v1::CODEC_NONE) {
      raw = std::move(*b.mutable_payload());
    } else {
      return reject_batch(b.batch_seq(), "codec", "unknown codec " + std::to_string(b.codec()));
    }
    s_.metrics.bytes_raw += raw.size();
    auto events =
        wire::decode_payload(std::move(raw), b.event_count(), b.first_seq(), b.last_seq());
    if (!events) return reject_batch(b.batch_seq(), "bad_batch", events.error().describe());
    SinkBatch sb;
    sb.agent_id = identity_;
    sb.first_seq = b.first_seq();
    sb.last_seq = b.last_seq();
    sb.session_first_seq = session_first_seq_;
    sb.events = std::move(*events);  // the sink writes sb.agent_id into each of them
    ++in_flight_;
    const uint64_t batch_seq = b.batch_seq();
    const auto started = std::chrono::steady_clock::now();
    auto self = shared_from_this();
    s_.sink.write(std::move(sb), [self, batch_seq, started](const Result<SinkResult>& r) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      asio::post(self->socket_.get_executor(),
                 [self, batch_seq, r, seconds] { self->on_written(batch_seq, r, seconds); });
    });
    return true;
  }

  void on_written(uint64_t batch_seq, const Result<SinkResult>& r, double seconds) {
    --in_flight_;
    s_.metrics.observe_sink_latency(seconds);
    if (r) {
      s_.metrics.events_written += r->written;
      s_.metrics.events_duplicate += r->duplicates;
      if (r->gap_lost > 0) {
        s_.metrics.events_gap_lost += r->gap_lost;
        s_.audit->error(
            "gap peer={} subject=\"{}\" serial={} agent={} seqs {}..{} ({} events) are below "
            "what the agent still has and above the sink's mark: they cannot be sent again and "
            "are counted as lost (outpost_gateway_events_total{{result=\"gap_lost\"}}); was the "
            "sink's state rolled back or replaced?",
            ip_, subject_, serial_, identity_, r->gap_first, r->gap_first + r->gap_lost - 1,
            r->gap_lost);
      }
      (r->written == 0 && r->duplicates > 0 ? s_.metrics.batches_duplicate
                                            : s_.metrics.batches_ok)++;
    } else {
      s_.metrics.batches_retry_later++;
      s_.metrics.reject("sink");
    }
    if (state_ == State::closed || state_ == State::closing) return;  // the agent resends
    answer(batch_seq, r ? ack_frame(batch_seq, v1::Ack::OK, "")
                        : ack_frame(batch_seq, v1::Ack::RETRY_LATER, r.error().describe(), 1000));
    if (draining_ && in_flight_ == 0) {
      goodbye("the gateway is shutting down");
      return;
    }
    read();
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
    if (!identity_.empty()) {
      std::lock_guard lock(s_.mu);
      auto it = s_.by_identity.find(identity_);
      if (it != s_.by_identity.end() && it->second.lock().get() == this) s_.by_identity.erase(it);
    }
  }

  void touch() {
    idle_timer_.expires_after(std::chrono::nanoseconds(s_.config.limits.idle_timeout_ns));
    idle_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->state_ == State::closed || self->state_ == State::closing) return;
      if (self->in_flight_ > 0) {  // the sink is slow, not the agent
        self->touch();
        return;
      }
      self->s_.metrics.reject("idle_timeout");
      self->goodbye("idle for longer than the idle timeout");
    });
  }

  Server::Impl& s_;
  tcp::socket socket_;
  asio::steady_timer handshake_timer_;
  asio::steady_timer idle_timer_;
  std::optional<tls::TlsSession> tls_;  // made when the first bytes arrive (read())
  wire::FrameDecoder decoder_;
  std::string ip_;
  std::string identity_, subject_, serial_;
  State state_ = State::handshake;
  std::vector<char> buf_;  // likewise
  std::string plain_;
  std::string out_;
  bool reading_ = false;
  bool writing_ = false;
  bool draining_ = false;
  uint32_t in_flight_ = 0;
  uint64_t session_first_seq_ = 0;  // see SinkBatch::session_first_seq
  struct Answer {
    uint64_t batch_seq;
    std::optional<v1::Frame> frame;  // nullopt while the sink writes the batch
  };
  std::deque<Answer> answers_;
};

}  // namespace outpost::gateway
