// The uplink protocol's two sides driven against each other in memory, on virtual time: an
// AgentProtocol and a GatewayProtocol joined by two frame queues that a test can drop frames
// from, a model buffer on the agent's side and a model sink (a high-water mark per agent) on
// the gateway's. Each case ends by reconciling: every event in the sink exactly once.
#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/codec/zstd_codec.hpp"
#include "outpost/v1/event.pb.h"
#include "proto/event_codec.hpp"
#include "uplink/agent_protocol.hpp"
#include "uplink/gateway_protocol.hpp"

using namespace outpost;
using namespace outpost::uplink;

namespace {

constexpr int64_t kMs = 1'000'000;

class Rates final : public RateGate {
 public:
  bool admit(const std::string&, uint64_t) override {
    if (refuse_next > 0) {
      --refuse_next;
      return false;
    }
    return true;
  }
  int refuse_next = 0;
};

std::string event_body(uint64_t n) {
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_JSON);
  e.set_json("{\"n\":" + std::to_string(n) + "}");
  return e.SerializeAsString();
}

// One agent with `events` pending (seqs 1..events) and the gateway it talks to.
struct Link {
  explicit Link(uint64_t events, SessionLimits gateway_limits = {},
                AgentProtocolOptions options = {})
      : total(events), limits(gateway_limits), agent_options(options) {
    if (agent_options.agent_id.empty()) agent_options.agent_id = "dev-1";
    connect();
  }

  // A new connection: both sides start over; the buffer keeps what was acknowledged.
  void connect(const std::string& identity = "dev-1") {
    to_gateway.clear();
    to_agent.clear();
    agent_error.clear();
    held.clear();
    agent.emplace(agent_options, acked_seq);
    gateway.emplace(limits, identity, rates);
    gateway->on_activity(now);
    agent->start(now);
    pump(/*send_batches=*/false);  // Hello and Welcome only: the test says when batches go
  }

  // Sends what the agent may send now, then moves frames both ways until both are quiet.
  void pump(bool send_batches = true) {
    for (int round = 0; round < 1000; ++round) {
      if (send_batches) fill();
      collect_agent();
      bool moved = false;
      while (!to_gateway.empty() && gateway->wants_frames()) {
        v1::Frame f = std::move(to_gateway.front());
        to_gateway.pop_front();
        gateway->on_frame(f, now);
        collect_gateway();
        moved = true;
      }
      while (!to_agent.empty() && agent_error.empty()) {
        v1::Frame f = std::move(to_agent.front());
        to_agent.pop_front();
        if (drop_acks > 0 && f.has_ack()) {
          --drop_acks;
          continue;
        }
        deliver_to_agent(f);
        moved = true;
      }
      if (!moved && !(send_batches && agent_error.empty() && agent->may_send(now) &&
                      agent->cursor() < total)) {
        return;
      }
    }
    FAIL("the protocol did not settle");
  }

  void deliver_to_agent(const v1::Frame& f) {
    if (f.has_ack()) acks_seen.push_back(f.ack());
    if (f.has_goodbye()) goodbye = f.goodbye().reason();
    auto r = agent->on_frame(f, now);
    if (!r) agent_error = r.error().describe();
    collect_agent();
  }

  // The agent's window: batches of up to max_events() from the model buffer.
  void fill() {
    while (agent_error.empty() && agent->may_send(now) && agent->cursor() < total) {
      const uint64_t first = agent->cursor() + 1;
      const uint64_t last = std::min<uint64_t>(total, first + agent->max_events() - 1);
      std::string payload;
      for (uint64_t seq = first; seq <= last; ++seq) {
        proto::append_stamped_delimited(payload, event_body(seq), "dev-1", seq, 1);
      }
      auto z = compressor.compress(payload);
      REQUIRE(z);
      to_gateway.push_back(agent->batch(last, static_cast<uint32_t>(last - first + 1),
                                        v1::CODEC_ZSTD, std::move(*z), payload.size(), now));
      ++batches_sent;
    }
  }

  void collect_agent() {
    AgentOutput out = agent->take_output();
    for (auto& f : out.frames) to_gateway.push_back(std::move(f));
    for (const AckedBatch& a : out.acked) acked_seq = std::max(acked_seq, a.last_seq);
    if (out.pause) pauses.push_back(*out.pause);
  }

  void collect_gateway() {
    GatewayOutput out = gateway->take_output();
    for (auto& f : out.frames) to_agent.push_back(std::move(f));
    for (auto& w : out.writes) held.push_back(std::move(w));
    for (auto& r : out.refusals) refusals.push_back(r);
    if (out.end != GatewayOutput::End::none) ended = true;
    if (hold_writes) return;
    answer_held(true);
  }

  // The model sink, as gateway/pipeline/marks.hpp rules: events at or below the agent's mark
  // are duplicates; a batch that would leave a gap above the mark is refused (retry-later).
  // Batches are written in the order they came; `newest_first` only reverses the order the
  // answers reach the session in.
  void answer_held(bool ok, bool newest_first = false) {
    std::vector<BatchToWrite> batches = std::move(held);
    held.clear();
    std::vector<std::pair<uint64_t, Result<void>>> answers;
    for (BatchToWrite& w : batches) {
      if (!ok) {
        answers.emplace_back(w.batch_seq,
                             make_error(std::make_error_code(std::errc::io_error), "disk full"));
        continue;
      }
      if (w.batch.first_seq > mark + 1 && w.batch.first_seq > w.batch.session_first_seq) {
        answers.emplace_back(w.batch_seq, make_error(std::make_error_code(std::errc::io_error),
                                                     "an earlier batch was not written"));
        continue;
      }
      for (const wire::EventView e : w.batch.events) {
        if (e.seq <= mark) {
          ++duplicates;
        } else {
          ++written[e.seq];
          mark = e.seq;
        }
      }
      answers.emplace_back(w.batch_seq, Result<void>());
    }
    if (newest_first) std::reverse(answers.begin(), answers.end());
    for (auto& [batch_seq, result] : answers) {
      gateway->on_written(batch_seq, result);
      GatewayOutput out = gateway->take_output();
      for (auto& f : out.frames) to_agent.push_back(std::move(f));
      if (out.end != GatewayOutput::End::none) ended = true;
    }
  }

  // Every event of the buffer in the sink exactly once.
  void check_exactly_once() const {
    CHECK(written.size() == total);
    for (const auto& [seq, times] : written) CHECK_MESSAGE(times == 1, "seq ", seq);
    CHECK(acked_seq == total);
  }

  const Refusal* refusal(const std::string& label) const {
    for (const Refusal& r : refusals) {
      if (r.label == label) return &r;
    }
    return nullptr;
  }

  uint64_t total;
  SessionLimits limits;
  AgentProtocolOptions agent_options;
  Rates rates;
  codec::Compressor compressor;
  int64_t now = 5'000 * kMs;
  std::optional<AgentProtocol> agent;
  std::optional<GatewayProtocol> gateway;
  std::deque<v1::Frame> to_gateway, to_agent;
  std::vector<BatchToWrite> held;
  bool hold_writes = false;
  int drop_acks = 0;
  uint64_t acked_seq = 0;  // the model buffer's
  uint64_t batches_sent = 0;
  std::vector<v1::Ack> acks_seen;
  std::vector<std::string> pauses;
  std::vector<Refusal> refusals;
  std::string agent_error, goodbye;
  bool ended = false;
  uint64_t mark = 0, duplicates = 0;
  std::map<uint64_t, int> written;
};

AgentProtocolOptions agent_options(uint32_t window, size_t max_events) {
  AgentProtocolOptions o;
  o.agent_id = "dev-1";
  o.window = window;
  o.batch_max_events = max_events;
  return o;
}

}  // namespace

TEST_CASE("a session: the gateway's lower limits win, a window of batches, acks in order") {
  SessionLimits limits;
  limits.max_in_flight_batches = 4;
  limits.max_events_per_batch = 50;
  Link link(1000, limits, agent_options(8, 100));
  link.hold_writes = true;
  link.pump();
  REQUIRE(link.agent->active());
  CHECK(link.agent->window() == 4);       // the Welcome's 4, not the agent's 8
  CHECK(link.agent->max_events() == 50);  // likewise
  // The window is full: four batches in the sink, the agent sends no fifth, the gateway
  // reads no further frames.
  CHECK(link.held.size() == 4);
  CHECK(link.agent->in_flight() == 4);
  CHECK_FALSE(link.agent->may_send(link.now));
  CHECK_FALSE(link.gateway->wants_frames());
  // The sink answers the newest first: the acks still go out in batch_seq order.
  while (!link.held.empty()) {
    link.answer_held(true, /*newest_first=*/true);
    link.pump();
  }
  REQUIRE(link.agent_error.empty());
  std::vector<uint64_t> order;
  for (const v1::Ack& a : link.acks_seen) order.push_back(a.batch_seq());
  CHECK(std::is_sorted(order.begin(), order.end()));
  CHECK(link.batches_sent == 20);
  link.check_exactly_once();
  CHECK(link.duplicates == 0);
}

TEST_CASE("refusals: each ends the session with its reason on both sides") {
  SUBCASE("a Hello whose agent id is not the certificate's is refused and audited") {
    Link link(10, {}, agent_options(8, 100));
    link.agent_options.agent_id = "someone-else";
    link.connect("dev-1");
    REQUIRE(link.refusal("agent_id_mismatch"));
    CHECK(link.refusal("agent_id_mismatch")->audit);
    CHECK(link.agent_error.find("refused the session: agent id does not match") !=
          std::string::npos);
    CHECK(link.ended);
    CHECK(link.written.empty());
  }
  SUBCASE("a first frame that is not Hello") {
    Link link(0);
    GatewayProtocol gw({}, "dev-1", link.rates);
    v1::Frame ping;
    ping.mutable_ping()->set_nonce(1);
    gw.on_frame(ping, 0);
    auto out = gw.take_output();
    REQUIRE(out.refusals.size() == 1);
    CHECK(out.refusals[0].label == "protocol");
    REQUIRE(out.frames.size() == 1);
    CHECK(out.frames[0].goodbye().reason() == "the first frame must be Hello");
    CHECK(out.end == GatewayOutput::End::after_send);
    CHECK_FALSE(gw.open());
  }
  SUBCASE("an agent that sends a frame only a gateway sends") {
    Link link(0);
    v1::Frame welcome;
    welcome.mutable_welcome();
    link.gateway->on_frame(welcome, link.now);
    auto out = link.gateway->take_output();
    REQUIRE(out.refusals.size() == 1);
    CHECK(out.refusals[0].label == "protocol");
    CHECK(out.end == GatewayOutput::End::after_send);
  }
  SUBCASE("a stream that is not frames") {
    Link link(0);
    link.gateway->on_stream_error(
        make_error(wire::wire_errc::frame_too_large, "frame of 99 MB exceeds 16 MB"));
    auto out = link.gateway->take_output();
    REQUIRE(out.refusals.size() == 1);
    CHECK(out.refusals[0].label == "frame_too_large");
    CHECK(out.frames.back().goodbye().reason().find("exceeds") != std::string::npos);
  }

  // Batches the gateway can never accept as sent: REJECTED at once, then Goodbye.
  struct BadBatch {
    const char* label;
    v1::Codec codec;
    std::string payload;
    uint32_t events;
  };
  codec::Compressor compressor;
  std::string one_event;
  proto::append_stamped_delimited(one_event, event_body(1), "dev-1", 1, 1);
  BadBatch bad[] = {
      {"too_many_events", v1::CODEC_NONE, one_event, 100'001},
      {"corrupt_payload", v1::CODEC_ZSTD, "not zstd at all", 1},
      {"decompression_limit", v1::CODEC_ZSTD, *compressor.compress(std::string(1 << 20, 'a')), 1},
      {"codec", static_cast<v1::Codec>(9), one_event, 1},
      {"bad_batch", v1::CODEC_NONE, one_event, 2},  // says 2 events, holds 1
  };
  for (const BadBatch& b : bad) {
    CAPTURE(b.label);
    SessionLimits limits;
    limits.max_decompressed_bytes = 64 * 1024;
    Link link(0, limits);
    REQUIRE(link.agent->active());
    v1::Frame f = link.agent->batch(1, b.events, b.codec, b.payload, b.payload.size(), link.now);
    link.to_gateway.push_back(std::move(f));
    link.pump();
    const Refusal* r = link.refusal(b.label);
    REQUIRE(r);
    CHECK(r->kind == Refusal::Kind::batch_rejected);
    CHECK(link.acks_seen.size() == 1);
    CHECK(link.acks_seen[0].status() == v1::Ack::REJECTED);
    CHECK(link.agent_error.find("the gateway rejected batch 1") != std::string::npos);
    CHECK(link.ended);
    CHECK(link.written.empty());
  }
}

TEST_CASE(
    "retry-later: the agent pauses as asked, sends everything unacknowledged again, and "
    "ignores acks of what it abandoned") {
  // Batch 2 of a window of 4 is over the device's rate.
  Link link(400, {}, agent_options(4, 100));
  link.hold_writes = true;
  link.to_gateway.clear();
  link.agent.emplace(link.agent_options, 0);
  link.gateway.emplace(link.limits, "dev-1", link.rates);
  link.agent->start(link.now);
  link.collect_agent();
  v1::Frame hello = std::move(link.to_gateway.front());
  link.to_gateway.pop_front();
  link.gateway->on_frame(hello, link.now);
  link.collect_gateway();
  link.deliver_to_agent(link.to_agent.front());
  link.to_agent.clear();
  link.fill();
  REQUIRE(link.to_gateway.size() == 4);
  for (int i = 0; i < 4; ++i) {
    link.rates.refuse_next = i == 1 ? 1 : 0;
    v1::Frame f = std::move(link.to_gateway.front());
    link.to_gateway.pop_front();
    link.gateway->on_frame(f, link.now);
    link.collect_gateway();
  }
  CHECK(link.held.size() == 3);
  // The retry-later of batch 2 waits behind batch 1, still in the sink: nothing goes out.
  CHECK(link.to_agent.empty());
  REQUIRE(link.refusal("rate_limited"));
  link.answer_held(true);
  REQUIRE(link.to_agent.size() == 4);
  CHECK(link.to_agent[0].ack().status() == v1::Ack::OK);
  CHECK(link.to_agent[1].ack().status() == v1::Ack::RETRY_LATER);
  CHECK(link.to_agent[1].ack().retry_after_ms() == 1000);
  link.hold_writes = false;
  link.pump();
  REQUIRE(link.agent_error.empty());
  CHECK(link.pauses == std::vector<std::string>{"device rate limit"});
  CHECK(link.acked_seq == 100);  // batch 1; the acks of 3 and 4 were ignored
  CHECK_FALSE(link.agent->may_send(link.now));
  link.now += 999 * kMs;
  CHECK_FALSE(link.agent->may_send(link.now));
  link.now += 1 * kMs;
  CHECK(link.agent->may_send(link.now));
  link.pump();
  REQUIRE(link.agent_error.empty());
  // 201..400 came before 101..200 were written: refused as a gap, sent again, written once.
  CHECK(link.duplicates == 0);
  link.check_exactly_once();
}

TEST_CASE("a sink that fails a batch: retry-later, and the batch comes again") {
  Link link(300, {}, agent_options(2, 100));
  link.hold_writes = true;
  link.pump();
  REQUIRE(link.held.size() == 2);
  link.answer_held(false);
  link.pump();
  REQUIRE(link.agent_error.empty());
  CHECK(link.pauses.size() == 1);
  CHECK(link.pauses[0] == "disk full");
  CHECK(link.written.empty());
  link.hold_writes = false;
  link.now += 1000 * kMs;
  link.pump();
  link.check_exactly_once();
}

TEST_CASE(
    "an ack lost mid-flight: the ack timeout ends the session and the resent batch is "
    "a duplicate, written once") {
  AgentProtocolOptions o = agent_options(4, 100);
  o.ack_timeout_ns = 30'000 * kMs;
  Link link(200, {}, o);
  link.drop_acks = 1;  // the ack of batch 1 never arrives
  link.pump();
  CHECK(link.written.size() == 200);  // the sink has both batches
  CHECK(link.acked_seq == 0);         // but the agent had no ack for the first
  // The agent's ack of batch 2 came out of order: it reconnects at once...
  CHECK(link.agent_error.find("out of order") != std::string::npos);
  link.connect();
  link.pump();
  CHECK(link.duplicates == 200);
  link.check_exactly_once();
}

TEST_CASE("an ack lost with a window of one: only the ack timeout can tell") {
  AgentProtocolOptions o = agent_options(1, 100);
  o.ack_timeout_ns = 30'000 * kMs;
  {
    Link one(100, {}, o);
    one.drop_acks = 1;
    one.pump();
    CHECK(one.agent_error.empty());
    CHECK(one.agent->on_timer(one.now + o.ack_timeout_ns));
    auto r = one.agent->on_timer(one.now + o.ack_timeout_ns + 1);
    REQUIRE_FALSE(r);
    CHECK(r.error().describe().find("no ack for batch 1 within the ack timeout") !=
          std::string::npos);
    one.now += o.ack_timeout_ns + 1;
    one.connect();
    one.pump();
    CHECK(one.duplicates == 100);
    one.check_exactly_once();
  }
}

TEST_CASE("timers on virtual time: the Welcome's deadline, pings, the idle timeout") {
  SUBCASE("no Welcome in time") {
    AgentProtocolOptions o = agent_options(4, 100);
    AgentProtocol agent(o, 0);
    agent.start(0);
    CHECK(agent.next_timer(0) == o.setup_timeout_ns);
    CHECK(agent.on_timer(o.setup_timeout_ns - 1));
    auto r = agent.on_timer(o.setup_timeout_ns);
    REQUIRE_FALSE(r);
    CHECK(r.error().describe().find("no Welcome") != std::string::npos);
  }
  SUBCASE("a quiet agent pings; the gateway answers") {
    Link link(0);
    const int64_t interval = link.agent_options.ping_interval_ns;
    CHECK(link.agent->next_timer(link.now) == link.now + interval + 1);
    REQUIRE(link.agent->on_timer(link.now + interval));
    CHECK(link.agent->take_output().frames.empty());
    link.now += interval + 1;
    REQUIRE(link.agent->on_timer(link.now));
    link.collect_agent();
    REQUIRE(link.to_gateway.size() == 1);
    CHECK(link.to_gateway.front().has_ping());
    link.pump();
    CHECK(link.agent_error.empty());
    CHECK(link.gateway->open());
  }
  SUBCASE("the gateway ends an idle session, but never while the sink holds a batch") {
    SessionLimits limits;
    limits.idle_timeout_ns = 60'000 * kMs;
    Link link(100, limits);
    link.hold_writes = true;
    link.pump();
    REQUIRE(link.held.size() == 1);
    link.gateway->on_timer(link.now + 10 * limits.idle_timeout_ns);
    CHECK(link.gateway->open());
    link.answer_held(true);
    link.pump();
    link.gateway->on_timer(link.now + limits.idle_timeout_ns - 1);
    CHECK(link.gateway->open());
    link.gateway->on_timer(link.now + limits.idle_timeout_ns);
    CHECK_FALSE(link.gateway->open());
    auto out = link.gateway->take_output();
    REQUIRE(out.refusals.size() == 1);
    CHECK(out.refusals[0].label == "idle_timeout");
    CHECK(out.frames.back().goodbye().reason() == "idle for longer than the idle timeout");
    link.check_exactly_once();
  }
}

TEST_CASE(
    "shutdown and replacement: a draining gateway answers what it holds, then says "
    "goodbye; a replaced session says why") {
  Link link(300, {}, agent_options(2, 100));
  link.hold_writes = true;
  link.pump();
  REQUIRE(link.held.size() == 2);
  link.gateway->drain();
  CHECK_FALSE(link.gateway->wants_frames());
  CHECK(link.gateway->take_output().frames.empty());  // not while the sink holds batches
  link.answer_held(true);
  link.pump();
  CHECK(link.acked_seq == 200);
  CHECK(link.goodbye == "the gateway is shutting down");
  CHECK(link.agent_error.find("the gateway ended the session") != std::string::npos);
  CHECK(link.ended);

  Link other(0);
  other.gateway->replaced();
  other.collect_gateway();
  other.pump();
  CHECK(other.goodbye == "replaced by a newer session of the same device");
}
