// RelaySink (agent/relay/): a device's batches into a real SqliteBuffer under the device's own
// identity, the sinks' mark rule per device, the mark kept across a reopen, a full buffer
// answered retry-later without a gap, and the devices' certificates. Also in the cross builds
// (label `cross` runs the unit tests of agent/ under qemu).
#include <doctest/doctest.h>

#include <future>

#include "agent/buffer/buffer_inspector.hpp"
#include "agent/buffer/sqlite_buffer.hpp"
#include "agent/relay/relay_sink.hpp"
#include "common/clock.hpp"
#include "outpost/v1/event.pb.h"
#include "proto/event_codec.hpp"
#include "tests/support/temp_dir.hpp"

using namespace outpost;
using namespace outpost::agent;

namespace {

// A device's batch of seqs first..last, as the gateway protocol hands it to a sink.
uplink::SinkBatch device_batch(const std::string& device, uint64_t first, uint64_t last,
                               uint64_t session_first, size_t pad = 10) {
  std::string payload;
  for (uint64_t s = first; s <= last; ++s) {
    v1::Event e;
    e.set_kind(v1::EVENT_KIND_JSON);
    e.set_priority(3);
    e.set_event_time(1000 + static_cast<int64_t>(s));
    e.set_json("{\"n\":" + std::to_string(s) + ",\"pad\":\"" + std::string(pad, 'x') + "\"}");
    proto::append_delimited(payload, proto::stamp(e.SerializeAsString(), device, s, 77));
  }
  auto events = wire::decode_payload(std::move(payload), static_cast<uint32_t>(last - first + 1),
                                     first, last);
  REQUIRE(events);
  uplink::SinkBatch b;
  b.agent_id = device;
  b.first_seq = first;
  b.last_seq = last;
  b.session_first_seq = session_first;
  b.events = std::move(*events);
  return b;
}

Result<uplink::SinkResult> write(RelaySink& sink, uplink::SinkBatch b) {
  std::promise<Result<uplink::SinkResult>> p;
  sink.write(std::move(b), [&](const Result<uplink::SinkResult>& r) { p.set_value(r); });
  return p.get_future().get();
}

// (device, seq) of every stored event, in buffer order, from the bytes the forwarder sends.
std::vector<std::pair<std::string, uint64_t>> stored(Buffer& buffer) {
  std::vector<std::pair<std::string, uint64_t>> out;
  auto all = buffer.read_batch(0, 1'000'000, 1ULL << 30);
  REQUIRE(all);
  for (const StoredEvent& e : *all) {
    v1::Event ev;
    REQUIRE(ev.ParseFromString(proto::stamp(e.body, "the-relay", e.seq, 1)));
    CHECK(ev.priority() == 3);
    CHECK(ev.collected_at() == 77);  // the device's, kept
    CHECK(e.priority == 3);
    out.emplace_back(ev.agent_id(), ev.seq());
  }
  return out;
}

// The site's buffer and its relay sink over it (the sink first to go).
struct Site {
  std::unique_ptr<SqliteBuffer> buffer;
  std::unique_ptr<RelaySink> sink;
};
Site open_site(const BufferOptions& o, const Clock& clock, uint64_t device_max_bytes = 0) {
  auto buffer = SqliteBuffer::open(o, clock);
  REQUIRE(buffer);
  auto sink = RelaySink::open(**buffer, {o.path, device_max_bytes});
  REQUIRE(sink);
  return {std::move(*buffer), std::move(*sink)};
}

BufferOptions options(const std::string& path) {
  BufferOptions o;
  o.path = path;
  o.agent_id = "the-relay";
  o.synchronous = Synchronous::normal;
  o.commit_interval_ns = 0;
  return o;
}

}  // namespace

TEST_CASE("device batches are stored under the device's id and seq, once, across a reopen") {
  test::TempDir dir;
  SystemClock clock;
  {
    auto [buffer, sink] = open_site(options(dir.file("b.db")), clock);
    auto r = write(*sink, device_batch("dev-a", 1, 10, 1));
    REQUIRE(r);
    CHECK(r->written == 10);
    REQUIRE(write(*sink, device_batch("dev-b", 1, 5, 1)));
    // The device resends (its ack was lost): duplicates, acknowledged, not stored again.
    auto again = write(*sink, device_batch("dev-a", 6, 15, 6));
    REQUIRE(again);
    CHECK(again->duplicates == 5);
    CHECK(again->written == 5);
  }
  auto [buffer, sink] = open_site(options(dir.file("b.db")), clock);  // the marks come back
  auto after = write(*sink, device_batch("dev-a", 11, 20, 11));
  REQUIRE(after);
  CHECK(after->duplicates == 5);
  CHECK(after->written == 5);
  auto events = stored(*buffer);
  REQUIRE(events.size() == 25);
  std::map<std::string, std::vector<uint64_t>> by_device;
  for (const auto& [device, seq] : events) by_device[device].push_back(seq);
  std::vector<uint64_t> a(20), b(5);
  for (uint64_t i = 0; i < 20; ++i) a[i] = i + 1;
  for (uint64_t i = 0; i < 5; ++i) b[i] = i + 1;
  CHECK(by_device["dev-a"] == a);
  CHECK(by_device["dev-b"] == b);
}

TEST_CASE("a batch above a gap waits for the missing one; the stored seqs stay in order") {
  test::TempDir dir;
  SystemClock clock;
  auto [buffer, sink] = open_site(options(dir.file("b.db")), clock);
  REQUIRE(write(*sink, device_batch("dev", 1, 10, 1)));
  auto ahead = write(*sink, device_batch("dev", 21, 30, 1));
  REQUIRE_FALSE(ahead);
  CHECK(ahead.error().code == uplink::sink_errc::gap);
  REQUIRE(write(*sink, device_batch("dev", 11, 20, 1)));
  REQUIRE(write(*sink, device_batch("dev", 21, 30, 1)));
  uint64_t expected = 1;
  for (const auto& [device, seq] : stored(*buffer)) CHECK(seq == expected++);
  CHECK(expected == 31);
}

TEST_CASE("a full buffer answers retry-later; nothing of the device overtakes the refused batch") {
  test::TempDir dir;
  SystemClock clock;
  BufferOptions o = options(dir.file("b.db"));
  o.max_bytes = 1ULL << 20;
  auto [buffer, sink] = open_site(o, clock);
  REQUIRE(write(*sink, device_batch("dev", 1, 10, 1, 80'000)));  // ~800 KB
  auto full = write(*sink, device_batch("dev", 11, 20, 1, 80'000));
  REQUIRE_FALSE(full);
  CHECK(full.error().code == uplink::sink_errc::disk_full);
  auto later = write(*sink, device_batch("dev", 21, 21, 1));
  REQUIRE_FALSE(later);      // held back behind 11..20, though it would fit
  REQUIRE(buffer->ack(10));  // the gateway took the first batch: room again
  REQUIRE(write(*sink, device_batch("dev", 11, 20, 1, 80'000)));
  REQUIRE(write(*sink, device_batch("dev", 21, 21, 1)));
  auto s = buffer->stats();
  REQUIRE(s);
  CHECK(s->dropped.empty());  // refused, not dropped: the device still had them
}

TEST_CASE("a device's certificate is kept for the forwarder") {
  test::TempDir dir;
  SystemClock clock;
  auto [buffer, sink] = open_site(options(dir.file("b.db")), clock);
  constexpr char kDer[] = "\x30\x82\x01\x00\xff\x00 not really DER";  // zero bytes in it
  const std::string der(kDer, sizeof kDer - 1);
  sink->remember_certificate("dev", der);
  REQUIRE(write(*sink, device_batch("dev", 1, 1, 1)));  // committed after the certificate
  CHECK(sink->certificate("dev") == der);
  CHECK(!sink->certificate("other"));
}

TEST_CASE("a device over relay.device_max_bytes waits; the others go on; acks free its room") {
  test::TempDir dir;
  SystemClock clock;
  auto [buffer, sink] = open_site(options(dir.file("b.db")), clock, 40'000);
  auto first = write(*sink, device_batch("chatty", 1, 10, 1, 3'000));  // ~30 KB
  REQUIRE(first);
  auto over = write(*sink, device_batch("chatty", 11, 20, 1, 3'000));
  REQUIRE_FALSE(over);
  CHECK(over.error().code == uplink::sink_errc::queue_full);
  CHECK(over.error().message.find("relay.device_max_bytes") != std::string::npos);
  CHECK(write(*sink, device_batch("quiet", 1, 10, 1, 3'000)));  // its own room
  std::string metrics;
  sink->append_metrics(metrics);
  CHECK(metrics.find("outpost_agent_relay_device_over_cap_total{device=\"chatty\"} 1") !=
        std::string::npos);
  CHECK(metrics.find("outpost_agent_relay_device_backlog_events{device=\"chatty\"} 10") !=
        std::string::npos);
  // The gateway acknowledged chatty's first ten: room again.
  auto all = buffer->read_batch(0, 100, 1 << 20);
  REQUIRE(all);
  uint64_t bytes = 0;
  for (const StoredEvent& e : *all)
    bytes += proto::relayed_identity(e.body)->agent_id == "chatty" ? e.body.size() : 0;
  sink->forwarded("chatty", 10, bytes);
  CHECK(write(*sink, device_batch("chatty", 11, 20, 1, 3'000)));
  // A new sink counts the backlog from the file: 20 of chatty (none acknowledged in the
  // buffer), 10 of quiet.
  auto again = RelaySink::open(*buffer, {dir.file("b.db"), 40'000});
  REQUIRE(again);
  std::string counted;
  (*again)->append_metrics(counted);
  CHECK(counted.find("outpost_agent_relay_device_backlog_events{device=\"chatty\"} 20") !=
        std::string::npos);
  CHECK(counted.find("outpost_agent_relay_device_backlog_events{device=\"quiet\"} 10") !=
        std::string::npos);
  auto s = buffer->stats();
  REQUIRE(s);
  CHECK(s->dropped.empty());
}

TEST_CASE("what the site's buffer drops of a device is counted for that device") {
  test::TempDir dir;
  ManualClock clock;
  BufferOptions o = options(dir.file("b.db"));
  o.kinds[kind_index(EventKind::json)].max_age_ns = 60'000'000'000;  // a minute
  {
    auto [buffer, sink] = open_site(o, clock);
    REQUIRE(write(*sink, device_batch("dev-a", 1, 7, 1)));
    REQUIRE(write(*sink, device_batch("dev-b", 1, 3, 1)));
    clock.advance_ns(120'000'000'000);  // the site offline for two minutes
    REQUIRE(buffer->expire_now());
    auto s = buffer->stats();
    REQUIRE(s);
    REQUIRE(s->origin_dropped.size() == 2);
    CHECK(s->origin_dropped[0].agent_id == "dev-a");
    CHECK(s->origin_dropped[0].reason == DropReason::expired);
    CHECK(s->origin_dropped[0].count == 7);
    CHECK(s->origin_dropped[1].agent_id == "dev-b");
    CHECK(s->origin_dropped[1].count == 3);
    std::string metrics;
    sink->append_metrics(metrics);
    CHECK(metrics.find(
              "outpost_agent_relay_device_dropped_total{device=\"dev-a\",reason=\"expired\"} 7") !=
          std::string::npos);
  }
  // Kept in the file: the read-only inspector (buffer stats) and a reopen see them.
  auto inspector = BufferInspector::open(dir.file("b.db"));
  REQUIRE(inspector);
  auto s = inspector->stats();
  REQUIRE(s);
  REQUIRE(s->origin_dropped.size() == 2);
  CHECK(s->origin_dropped[0].count == 7);
  auto reopened = SqliteBuffer::open(o, clock);
  REQUIRE(reopened);
  auto again = (*reopened)->stats();
  REQUIRE(again);
  REQUIRE(again->origin_dropped.size() == 2);
  CHECK(again->origin_dropped[1].count == 3);
}
