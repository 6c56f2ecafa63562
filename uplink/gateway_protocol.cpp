#include "uplink/gateway_protocol.hpp"

#include <utility>

#include "common/codec/zstd_codec.hpp"

namespace outpost::uplink {
namespace {

v1::Frame ack_frame(uint64_t batch_seq, v1::Ack::Status status, const std::string& reason,
                    uint32_t retry_after_ms = 0) {
  v1::Frame a;
  auto* ack = a.mutable_ack();
  ack->set_batch_seq(batch_seq);
  ack->set_status(status);
  ack->set_reason(reason);
  ack->set_retry_after_ms(retry_after_ms);
  return a;
}

constexpr uint32_t kRetryAfterMs = 1000;
constexpr size_t kMaxOrigins = 100'000;  // devices one relay session may speak for

}  // namespace

bool acceptable_identity(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (unsigned char c : id) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

GatewayProtocol::GatewayProtocol(SessionLimits limits, std::string identity, RateGate& rates,
                                 std::string relay_site, RelayCheck* relays)
    : limits_(limits),
      identity_(std::move(identity)),
      rates_(rates),
      relay_site_(std::move(relay_site)),
      relays_(relays) {}

GatewayOutput GatewayProtocol::take_output() { return std::exchange(out_, GatewayOutput{}); }

bool GatewayProtocol::wants_frames() const {
  return open() && !draining_ && in_flight_ < limits_.max_in_flight_batches;
}

void GatewayProtocol::refuse(Refusal::Kind kind, std::string label, std::string message,
                             bool audit) {
  out_.refusals.push_back({kind, std::move(label), std::move(message), audit});
}

void GatewayProtocol::goodbye(const std::string& reason) {
  if (state_ == State::ended) return;
  v1::Frame g;
  g.mutable_goodbye()->set_reason(reason);
  out_.frames.push_back(std::move(g));
  state_ = State::ended;
  out_.end = GatewayOutput::End::after_send;
}

void GatewayProtocol::on_stream_error(const Error& error) {
  if (!open()) return;
  const bool too_large = error.code == wire::wire_errc::frame_too_large;
  refuse(Refusal::Kind::session, too_large ? "frame_too_large" : "bad_frame",
         error.describe() + "; closing the session");
  goodbye(error.describe());
}

void GatewayProtocol::on_frame(v1::Frame& f, int64_t now) {
  last_activity_ = now;
  if (state_ == State::awaiting_hello) {
    on_hello(f);
    return;
  }
  if (state_ != State::active) return;
  switch (f.body_case()) {
    case v1::Frame::kBatch:
      on_batch(*f.mutable_batch());
      return;
    case v1::Frame::kPing: {
      v1::Frame p;
      p.mutable_pong()->set_nonce(f.ping().nonce());
      out_.frames.push_back(std::move(p));
      return;
    }
    case v1::Frame::kPong:
      return;
    case v1::Frame::kGoodbye:
      state_ = State::ended;
      out_.end = GatewayOutput::End::now;
      return;
    default:
      refuse(Refusal::Kind::session, "protocol", "unexpected frame from an agent");
      goodbye("unexpected frame from an agent");
  }
}

void GatewayProtocol::on_hello(const v1::Frame& f) {
  if (!f.has_hello()) {
    refuse(Refusal::Kind::session, "protocol", "the first frame must be Hello");
    goodbye("the first frame must be Hello");
    return;
  }
  const v1::Hello& h = f.hello();
  if (h.agent_id() != identity_) {
    refuse(Refusal::Kind::session, "agent_id_mismatch",
           "Hello claims agent id \"" + h.agent_id().substr(0, 128) +
               "\" but the certificate says \"" + identity_ + "\"",
           /*audit=*/true);
    goodbye("agent id does not match the client certificate");
    return;
  }
  state_ = State::active;
  out_.established = h.software_version();
  v1::Frame w;
  auto* welcome = w.mutable_welcome();
  welcome->set_max_frame_bytes(limits_.max_frame_bytes);
  welcome->set_max_in_flight_batches(limits_.max_in_flight_batches);
  welcome->set_max_decompressed_bytes(limits_.max_decompressed_bytes);
  welcome->set_max_events_per_batch(limits_.max_events_per_batch);
  welcome->set_gateway_version(kGatewayVersion);
  welcome->set_identity(identity_);
  out_.frames.push_back(std::move(w));
}

void GatewayProtocol::reject_batch(uint64_t batch_seq, const std::string& label,
                                   const std::string& why, bool audit) {
  refuse(Refusal::Kind::batch_rejected, label,
         "batch " + std::to_string(batch_seq) + " rejected: " + why, audit);
  out_.frames.push_back(ack_frame(batch_seq, v1::Ack::REJECTED, why));  // at once: it ends
  goodbye("batch rejected: " + why);
}

void GatewayProtocol::on_batch(v1::Batch& b) {
  if (b.event_count() > limits_.max_events_per_batch) {
    reject_batch(b.batch_seq(), "too_many_events",
                 "batch of " + std::to_string(b.event_count()) +
                     " events exceeds max_events_per_batch " +
                     std::to_string(limits_.max_events_per_batch));
    return;
  }
  if (b.batch_seq() < last_batch_seq_) {  // found by uplink_frame_fuzz
    reject_batch(b.batch_seq(), "batch_order",
                 "batch_seq " + std::to_string(b.batch_seq()) + " after " +
                     std::to_string(last_batch_seq_) + ": batch_seqs never go back in a session");
    return;
  }
  if (b.lane() > 1) {
    reject_batch(b.batch_seq(), "bad_batch",
                 "lane " + std::to_string(b.lane()) + ": lanes are 0 and 1 (docs/protocol.md)");
    return;
  }
  const auto origin = origin_of(b);
  if (!origin) return;
  last_batch_seq_ = b.batch_seq();
  answers_.push_back({b.batch_seq(), std::nullopt});
  const uint64_t session_first_seq =
      session_first_seq_.try_emplace(*origin, b.first_seq()).first->second;
  if (!rates_.admit(*origin, b.event_count())) {
    refuse(Refusal::Kind::batch_rate_limited, "rate_limited", "device rate limit");
    answer(b.batch_seq(),
           ack_frame(b.batch_seq(), v1::Ack::RETRY_LATER, "device rate limit", kRetryAfterMs));
    return;
  }
  out_.bytes_compressed += b.payload().size();
  std::string raw;
  if (b.codec() == v1::CODEC_ZSTD) {
    auto decompressed =
        codec::decompress(b.payload(), {limits_.max_decompressed_bytes, limits_.max_window_log});
    if (!decompressed) {
      const bool bomb = decompressed.error().code == codec::codec_errc::too_large ||
                        decompressed.error().code == codec::codec_errc::window_too_large;
      reject_batch(b.batch_seq(), bomb ? "decompression_limit" : "corrupt_payload",
                   decompressed.error().describe());
      return;
    }
    raw = std::move(*decompressed);
  } else if (b.codec() == v1::CODEC_NONE) {
    raw = std::move(*b.mutable_payload());
  } else {
    reject_batch(b.batch_seq(), "codec", "unknown codec " + std::to_string(b.codec()));
    return;
  }
  out_.bytes_raw += raw.size();
  auto events = wire::decode_payload(std::move(raw), b.event_count(), b.first_seq(), b.last_seq());
  if (!events) {
    reject_batch(b.batch_seq(), "bad_batch", events.error().describe());
    return;
  }
  ++in_flight_;
  out_.writes.push_back({b.batch_seq(),
                         {*origin,
                          b.first_seq(),
                          b.last_seq(),
                          session_first_seq,
                          *origin == identity_ ? std::string() : identity_,
                          std::move(*events),
                          {},
                          b.lane()}});
}

std::optional<std::string> GatewayProtocol::origin_of(const v1::Batch& b) {
  if (b.origin_agent_id().empty() || b.origin_agent_id() == identity_) return identity_;
  const std::string& origin = b.origin_agent_id();
  const std::string shown = origin.substr(0, 128);
  if (relay_site_.empty() || relays_ == nullptr) {
    reject_batch(b.batch_seq(), "relay_not_allowed",
                 "the certificate of " + identity_ +
                     " has no relay role (a URI SAN urn:outpost:relay:SITE): it may send only "
                     "its own events, not those of \"" +
                     shown + "\"",
                 /*audit=*/true);
    return std::nullopt;
  }
  if (session_first_seq_.contains(origin)) return origin;  // vouched for in this session
  std::string why;
  if (!acceptable_identity(origin)) {
    why = "not a usable identity";
  } else if (session_first_seq_.size() > kMaxOrigins) {
    why = "more than " + std::to_string(kMaxOrigins) + " devices in one session";
  } else if (b.origin_certificate().empty()) {
    why = "its certificate is not with its first batch (origin_certificate)";
  } else if (auto ok = relays_->vouch(relay_site_, origin, b.origin_certificate()); !ok) {
    why = ok.error().message;
  }
  if (!why.empty()) {
    reject_batch(b.batch_seq(), "relay_not_vouched",
                 "relay " + identity_ + " (site " + relay_site_ + ") may not send events of \"" +
                     shown + "\": " + why,
                 /*audit=*/true);
    return std::nullopt;
  }
  out_.origins_started.push_back(origin);
  return origin;
}

void GatewayProtocol::on_written(uint64_t batch_seq, const Result<void>& result) {
  if (in_flight_ > 0) --in_flight_;
  if (!open()) return;  // the agent sends it again in its next session
  answer(batch_seq, result ? ack_frame(batch_seq, v1::Ack::OK, "")
                           : ack_frame(batch_seq, v1::Ack::RETRY_LATER, result.error().describe(),
                                       kRetryAfterMs));
  if (draining_ && in_flight_ == 0) goodbye("the gateway is shutting down");
}

// Acks go out in batch_seq order (docs/protocol.md), whatever order the answers are known in:
// a retry-later decided at once waits behind earlier batches still in the sink.
void GatewayProtocol::answer(uint64_t batch_seq, v1::Frame frame) {
  for (Answer& a : answers_) {
    if (a.batch_seq == batch_seq && !a.frame) {
      a.frame = std::move(frame);
      break;
    }
  }
  while (!answers_.empty() && answers_.front().frame) {
    out_.frames.push_back(std::move(*answers_.front().frame));
    answers_.pop_front();
  }
}

void GatewayProtocol::on_timer(int64_t now) {
  if (!open() || in_flight_ > 0) return;  // a slow sink is not an idle agent
  if (now - last_activity_ < limits_.idle_timeout_ns) return;
  refuse(Refusal::Kind::session, "idle_timeout", "idle for longer than the idle timeout");
  goodbye("idle for longer than the idle timeout");
}

void GatewayProtocol::drain() {
  draining_ = true;
  if (state_ == State::awaiting_hello) {
    state_ = State::ended;
    out_.end = GatewayOutput::End::now;
  } else if (state_ == State::active && in_flight_ == 0) {
    goodbye("the gateway is shutting down");
  }
}

void GatewayProtocol::replaced() {
  if (!open()) return;
  goodbye("replaced by a newer session of the same device");
}

}  // namespace outpost::uplink
