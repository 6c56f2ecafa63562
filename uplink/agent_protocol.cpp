#include "uplink/agent_protocol.hpp"

#include <algorithm>
#include <system_error>

namespace outpost::uplink {
namespace {

Error ended(const std::string& why) {
  return make_error(std::make_error_code(std::errc::protocol_error), why);
}

}  // namespace

AgentProtocol::AgentProtocol(AgentProtocolOptions options, uint64_t acked_seq)
    : opt_(std::move(options)), acked_(acked_seq), cursor_(acked_seq) {}

void AgentProtocol::start(int64_t now) {
  v1::Frame hello;
  hello.mutable_hello()->set_agent_id(opt_.agent_id);
  hello.mutable_hello()->set_software_version(opt_.software_version);
  hello.mutable_hello()->add_codecs(v1::CODEC_ZSTD);
  state_ = State::awaiting_welcome;
  setup_deadline_ = now + opt_.setup_timeout_ns;
  send(std::move(hello), now);
}

void AgentProtocol::send(v1::Frame frame, int64_t now) {
  out_.frames.push_back(std::move(frame));
  last_sent_ = now;
}

AgentOutput AgentProtocol::take_output() { return std::exchange(out_, AgentOutput{}); }

Result<void> AgentProtocol::on_frame(const v1::Frame& frame, int64_t now) {
  if (state_ == State::awaiting_welcome) return on_welcome(frame);
  if (state_ != State::active) return ended("a frame before the session started");
  switch (frame.body_case()) {
    case v1::Frame::kAck:
      return on_ack(frame.ack(), now);
    case v1::Frame::kPing: {
      v1::Frame pong;
      pong.mutable_pong()->set_nonce(frame.ping().nonce());
      send(std::move(pong), now);
      return {};
    }
    case v1::Frame::kGoodbye:
      return ended("the gateway ended the session: " + frame.goodbye().reason());
    default:
      return {};  // a Pong, or a frame of a newer gateway: nothing to do
  }
}

Result<void> AgentProtocol::on_welcome(const v1::Frame& frame) {
  if (frame.has_goodbye()) {
    return ended("the gateway refused the session: " + frame.goodbye().reason());
  }
  if (!frame.has_welcome()) return ended("the gateway answered Hello with no Welcome");
  welcome_ = frame.welcome();
  window_ = std::max<uint32_t>(1, std::min(opt_.window, welcome_.max_in_flight_batches()));
  max_events_ =
      std::max<size_t>(1, std::min<size_t>(opt_.batch_max_events, welcome_.max_events_per_batch()));
  // Half the gateway's frame and decompression caps: room for a batch that compresses badly.
  max_bytes_ = std::min<size_t>(
      opt_.batch_max_bytes,
      std::max<size_t>(4096, static_cast<size_t>(std::min<uint64_t>(
                                 {welcome_.max_decompressed_bytes() / 2,
                                  uint64_t{welcome_.max_frame_bytes()} / 2, SIZE_MAX}))));
  state_ = State::active;
  out_.connected = true;
  return {};
}

Result<void> AgentProtocol::on_ack(const v1::Ack& a, int64_t now) {
  if (a.status() == v1::Ack::REJECTED) {
    return ended("the gateway rejected batch " + std::to_string(a.batch_seq()) + ": " + a.reason());
  }
  if (a.batch_seq() < ignore_below_) return {};  // abandoned by a retry-later: sent again anyway
  if (in_flight_.empty() || a.batch_seq() != in_flight_.front().batch_seq) {
    return ended(
        "ack for batch " + std::to_string(a.batch_seq()) + " (" + v1::Ack::Status_Name(a.status()) +
        ") out of order (expected " +
        (in_flight_.empty() ? std::string("none") : std::to_string(in_flight_.front().batch_seq)) +
        "); reconnecting");
  }
  if (a.status() == v1::Ack::OK) {
    const InFlight done = in_flight_.front();
    in_flight_.pop_front();
    acked_ = done.last_seq;
    out_.acked.push_back({done.batch_seq, done.last_seq, done.events});
    return {};
  }
  if (a.status() == v1::Ack::RETRY_LATER) {
    // Everything unacknowledged goes again, after the pause the gateway asked for.
    cursor_ = acked_;
    ignore_below_ = next_batch_seq_;
    in_flight_.clear();
    resume_at_ =
        now + std::max<int64_t>(int64_t{a.retry_after_ms()} * 1'000'000, opt_.min_retry_pause_ns);
    out_.pause = a.reason();
    return {};
  }
  return ended("ack for batch " + std::to_string(a.batch_seq()) +
               " has a status this agent does not know (" + std::to_string(a.status()) + ")");
}

Result<void> AgentProtocol::on_timer(int64_t now) {
  if (state_ == State::awaiting_welcome && now >= setup_deadline_) {
    return ended("no Welcome from the gateway in time");
  }
  if (state_ != State::active) return {};
  if (!in_flight_.empty() && now - in_flight_.front().sent_at > opt_.ack_timeout_ns) {
    return ended("no ack for batch " + std::to_string(in_flight_.front().batch_seq) +
                 " within the ack timeout");
  }
  if (now - last_sent_ > opt_.ping_interval_ns) {
    v1::Frame ping;
    ping.mutable_ping()->set_nonce(static_cast<uint64_t>(now));
    send(std::move(ping), now);
  }
  return {};
}

int64_t AgentProtocol::next_timer(int64_t now) const {
  if (state_ == State::awaiting_welcome) return setup_deadline_;
  if (state_ != State::active) return now + opt_.ping_interval_ns;
  int64_t next = last_sent_ + opt_.ping_interval_ns + 1;
  if (!in_flight_.empty())
    next = std::min(next, in_flight_.front().sent_at + opt_.ack_timeout_ns + 1);
  if (resume_at_ > now) next = std::min(next, resume_at_);
  return next;
}

bool AgentProtocol::may_send(int64_t now) const {
  return state_ == State::active && in_flight_.size() < window_ && now >= resume_at_;
}

v1::Frame AgentProtocol::batch(uint64_t last_seq, uint32_t event_count, v1::Codec codec,
                               std::string payload, uint64_t raw_bytes, int64_t now) {
  v1::Frame f;
  auto* b = f.mutable_batch();
  b->set_batch_seq(next_batch_seq_);
  b->set_first_seq(cursor_ + 1);  // seqs dropped from the buffer are covered too
  b->set_last_seq(last_seq);
  b->set_event_count(event_count);
  b->set_codec(codec);
  b->set_raw_bytes(raw_bytes);
  b->set_payload(std::move(payload));
  in_flight_.push_back({next_batch_seq_++, last_seq, event_count, now});
  cursor_ = last_seq;
  last_sent_ = now;
  return f;
}

}  // namespace outpost::uplink
