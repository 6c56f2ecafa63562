// The Kafka sink against a real single-node Apache Kafka broker (KRaft) on loopback: records,
// keys and headers as a read_committed consumer sees them; the high-water marks in the
// offsets topic; no event written twice across a restart of the sink and across two
// gateways; a gap refused; a missing topic named; Kafka down at start and a broker restart
// mid-stream recovered from without loss.
#include <doctest/doctest.h>

#include <future>
#include <map>
#include <memory>
#include <thread>

#include "gateway/sinks/kafka_sink.hpp"
#include "outpost/v1/event.pb.h"
#include "tests/e2e/uplink_support.hpp"
#include "tests/support/event_list.hpp"
#include "tests/support/kafka.hpp"

using namespace outpost;
using namespace outpost::gateway;
using namespace outpost::test;

namespace {

KafkaBroker& broker() {
  static std::unique_ptr<KafkaBroker> b;
  if (!b) {
    const uint16_t port = free_port();
    b = std::make_unique<KafkaBroker>(port);
    REQUIRE_MESSAGE(b->ok(), b->error());
  }
  return *b;
}

// Options with topics of their own, so that test cases do not see each other's records.
KafkaSinkOptions options_for(const std::string& prefix, const std::string& transactional_id) {
  KafkaSinkOptions o;
  o.brokers = broker().bootstrap();
  o.topics = {prefix + ".pixel", prefix + ".sensor", prefix + ".events"};
  o.offsets_topic = prefix + ".offsets";
  o.dead_letter_topic = prefix + ".bad";
  o.transactional_id = transactional_id;
  o.create_topics = true;
  o.partitions = 2;
  o.transaction_timeout_ns = 10'000'000'000;
  return o;
}

std::vector<std::string> all_topics(const KafkaSinkOptions& o) {
  return {o.topics[0], o.topics[1], o.topics[2]};
}

SinkBatch batch(const std::string& agent, uint64_t first, uint64_t last) {
  SinkBatch b;
  b.agent_id = agent;
  b.first_seq = first;
  b.last_seq = last;
  for (uint64_t s = first; s <= last; ++s) {
    v1::Event e;
    // What the agent claims; the sink writes the batch's identity (from the certificate).
    e.set_agent_id(s % 3 == 0 ? "forged" : agent);
    e.set_seq(s);
    e.set_collected_at(1'790'000'000'000'000'000 + static_cast<int64_t>(s));
    e.set_event_time(1'790'000'000'000'000'000);
    if (s % 2 == 0) {
      e.set_kind(v1::EVENT_KIND_SENSOR);
      e.set_schema("sensor.reading.v1");
      e.mutable_sensor()->set_device("dev");
      e.mutable_sensor()->set_number(static_cast<double>(s));
    } else {
      e.set_kind(v1::EVENT_KIND_JSON);
      e.set_schema("order.v1");
      e.set_json(R"({"n":)" + std::to_string(s) + "}");
    }
    test::push_event(b.events, e);
  }
  return b;
}

Result<SinkResult> write_sync(Sink& sink, SinkBatch b) {
  std::promise<Result<SinkResult>> p;
  auto f = p.get_future();
  sink.write(std::move(b), [&p](const Result<SinkResult>& r) { p.set_value(r); });
  return f.get();
}

// Waits until the sink is ready, at most `seconds`.
bool ready(const Sink& sink, int seconds) {
  for (int i = 0; i < seconds * 10; ++i) {
    if (!sink.not_ready_reason()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// (agent, seq) → how many times a read_committed consumer sees it.
std::map<std::pair<std::string, uint64_t>, int> seen(const KafkaSinkOptions& o) {
  std::string error;
  auto records = read_committed(o.brokers, all_topics(o), &error);
  REQUIRE_MESSAGE(error.empty(), error);
  std::map<std::pair<std::string, uint64_t>, int> out;
  for (const ConsumedRecord& r : records) {
    v1::Event e;
    REQUIRE(e.ParseFromString(r.value));
    ++out[{e.agent_id(), e.seq()}];
  }
  return out;
}

// Exactly `expected` distinct events, each seen once.
void check_each_once(const std::map<std::pair<std::string, uint64_t>, int>& counts,
                     size_t expected) {
  CHECK(counts.size() == expected);
  for (const auto& [id, n] : counts) CHECK_MESSAGE(n == 1, id.first << " " << id.second);
}

std::map<std::string, uint64_t> marks(const KafkaSinkOptions& o) {
  std::string error;
  auto records = read_committed(o.brokers, {o.offsets_topic}, &error);
  REQUIRE_MESSAGE(error.empty(), error);
  std::map<std::string, uint64_t> out;
  for (const ConsumedRecord& r : records) out[r.key] = std::stoull(r.value);
  return out;
}

}  // namespace

TEST_CASE(
    "records, keys, headers and the high-water mark, as a read_committed reader sees "
    "them") {
  SystemClock clock;
  auto o = options_for("t1", "gw-t1");
  auto sink = KafkaSink::start(o, clock);
  REQUIRE(sink);
  REQUIRE_MESSAGE(ready(**sink, 60), (*sink)->not_ready_reason().value_or(""));
  auto r = write_sync(**sink, batch("device-1", 1, 100));
  REQUIRE_MESSAGE(r, r.error().describe());
  CHECK(r->written == 100);
  r = write_sync(**sink, batch("device-2", 1, 10));
  REQUIRE(r);
  // A device without a mark starts where its session started: a batch that would overtake
  // the session's first one (refused before it reached the sink) is not written.
  SinkBatch overtaking = batch("device-3", 11, 20);
  overtaking.session_first_seq = 1;
  auto refused = write_sync(**sink, overtaking);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message.find("up to 0") != std::string::npos);

  std::string error;
  auto records = read_committed(o.brokers, all_topics(o), &error);
  REQUIRE_MESSAGE(error.empty(), error);
  CHECK(records.size() == 110);
  size_t sensor = 0;
  for (const ConsumedRecord& rec : records) {
    v1::Event e;
    REQUIRE(e.ParseFromString(rec.value));
    CHECK(rec.key == e.agent_id());                // the device identity: one device, one partition
    CHECK(e.agent_id().rfind("device-", 0) == 0);  // never what an event claimed
    CHECK(rec.headers.at("agent_id") == e.agent_id());
    CHECK(rec.headers.at("seq") == std::to_string(e.seq()));
    CHECK(rec.headers.at("schema") == e.schema());
    CHECK(rec.headers.at("collected_at") == std::to_string(e.collected_at()));
    CHECK(rec.topic == (e.kind() == v1::EVENT_KIND_SENSOR ? "t1.sensor" : "t1.events"));
    sensor += e.kind() == v1::EVENT_KIND_SENSOR;
  }
  CHECK(sensor == 55);
  auto m = marks(o);
  CHECK(m["device-1"] == 100);
  CHECK(m["device-2"] == 10);
}

TEST_CASE(
    "a re-sent batch is not written twice, across a restart of the sink; a gap is "
    "refused") {
  SystemClock clock;
  auto o = options_for("t2", "gw-t2");
  {
    auto sink = KafkaSink::start(o, clock);
    REQUIRE(sink);
    REQUIRE(ready(**sink, 60));
    REQUIRE(write_sync(**sink, batch("device-1", 1, 50)));
    // The same batch again (its ack was lost): acknowledged, nothing written.
    auto again = write_sync(**sink, batch("device-1", 1, 50));
    REQUIRE(again);
    CHECK(again->written == 0);
    CHECK(again->duplicates == 50);
  }
  auto sink = KafkaSink::start(o, clock);  // a restarted gateway reads the marks back
  REQUIRE(sink);
  REQUIRE(ready(**sink, 60));
  auto overlap = write_sync(**sink, batch("device-1", 41, 80));
  REQUIRE(overlap);
  CHECK(overlap->written == 30);
  CHECK(overlap->duplicates == 10);
  auto gap = write_sync(**sink, batch("device-1", 90, 95));
  REQUIRE_FALSE(gap);
  CHECK(gap.error().message.find("send the missing seqs first") != std::string::npos);
  auto counts = seen(o);
  check_each_once(counts, 80);
  CHECK(marks(o)["device-1"] == 80);
}

TEST_CASE("two gateways on one cluster: a device moving between them is written once") {
  SystemClock clock;
  auto a_opt = options_for("t3", "gw-a");
  auto b_opt = options_for("t3", "gw-b");
  auto a = KafkaSink::start(a_opt, clock);
  auto b = KafkaSink::start(b_opt, clock);
  REQUIRE(a);
  REQUIRE(b);
  REQUIRE(ready(**a, 60));
  REQUIRE(ready(**b, 60));
  // Both know the device at 20.
  (*b)->session_started("device-9");
  REQUIRE(write_sync(**b, batch("device-9", 1, 20)));
  (*a)->session_started("device-9");
  REQUIRE(write_sync(**a, batch("device-9", 21, 100)));  // A writes on; its ack is lost
  // The device comes back to B and resends from its last ack (20).
  (*b)->session_started("device-9");
  auto r = write_sync(**b, batch("device-9", 21, 120));
  REQUIRE(r);
  CHECK(r->written == 20);
  CHECK(r->duplicates == 80);
  // And back to A (killed and restarted, or not): the gateway calls session_started at every
  // Hello, so A reads the mark B left before writing.
  (*a)->session_started("device-9");
  auto r2 = write_sync(**a, batch("device-9", 101, 130));
  REQUIRE(r2);
  CHECK(r2->written == 10);
  auto counts = seen(a_opt);
  check_each_once(counts, 130);
}

TEST_CASE("a missing topic without create_topics is named in the not-ready reason") {
  SystemClock clock;
  auto o = options_for("t4", "gw-t4");
  o.create_topics = false;
  REQUIRE(broker().create_topic("t4.pixel"));
  auto sink = KafkaSink::start(o, clock);
  REQUIRE(sink);
  std::optional<std::string> why;
  for (int i = 0; i < 100; ++i) {
    why = (*sink)->not_ready_reason();
    if (why && why->find("does not exist") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(why);
  CHECK(why->find("t4.events") != std::string::npos);
  CHECK(why->find("create_topics") != std::string::npos);
  auto r = write_sync(**sink, batch("device-1", 1, 5));
  REQUIRE_FALSE(r);  // the gateway answers retry-later
  CHECK(r.error().message.find("not ready") != std::string::npos);
  CHECK(r.error().code == sink_errc::unavailable);
}

TEST_CASE("bad [kafka] properties are a configuration error at start") {
  SystemClock clock;
  auto o = options_for("t5", "gw-t5");
  o.properties = {{"no.such.property", "1"}};
  auto sink = KafkaSink::start(o, clock);
  REQUIRE_FALSE(sink);
  CHECK(sink.error().message.find("no.such.property") != std::string::npos);
}

TEST_CASE(
    "Kafka down at start, then a broker restart mid-stream: retry-later, then every "
    "event once") {
  SystemClock clock;
  // A broker of its own, so that stopping it does not disturb the other cases.
  const uint16_t port = free_port();
  KafkaSinkOptions o = options_for("t6", "gw-t6");
  o.brokers = "127.0.0.1:" + std::to_string(port);
  auto sink = KafkaSink::start(o, clock);
  REQUIRE(sink);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  REQUIRE((*sink)->not_ready_reason());
  CHECK_FALSE(write_sync(**sink, batch("device-1", 1, 10)));
  KafkaBroker own(port);
  REQUIRE_MESSAGE(own.ok(), own.error());
  REQUIRE_MESSAGE(ready(**sink, 90), (*sink)->not_ready_reason().value_or(""));
  // A later batch of the window must not overtake the refused one: written first, it would
  // raise the mark past seqs 1..10, which would then count as duplicates (a loss).
  auto overtaking = write_sync(**sink, batch("device-1", 11, 20));
  REQUIRE_FALSE(overtaking);
  CHECK(overtaking.error().message.find("was not written; send it first") != std::string::npos);
  // Write batches like an agent would: in order, each until it is acknowledged.
  uint64_t next = 1;
  int failures = 0;
  bool stopped = false, restarted = false;
  while (next <= 3000) {
    if (next > 1000 && !stopped) {
      REQUIRE(own.stop());
      stopped = true;
    }
    auto r = write_sync(**sink, batch("device-1", next, next + 99));
    if (r) {
      next += 100;
    } else {
      ++failures;
      if (stopped && !restarted && failures >= 3) {
        REQUIRE(own.restart());
        restarted = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    REQUIRE(failures < 400);
  }
  CHECK(restarted);
  MESSAGE("batches answered retry-later while Kafka was away: " << failures);
  KafkaSinkOptions read = o;
  auto counts = seen(read);
  check_each_once(counts, 3000);
}

TEST_CASE("a fatal producer error rebuilds the producer; nothing is lost or written twice") {
  SystemClock clock;
  auto o = options_for("t7", "gw-t7");
  auto sink = KafkaSink::start(o, clock);
  REQUIRE(sink);
  REQUIRE(ready(**sink, 60));
  REQUIRE(write_sync(**sink, batch("device-1", 1, 100)));
  (*sink)->inject_fatal_error();
  // The batch in the failed transaction is answered with an error (retry-later)...
  auto failed = write_sync(**sink, batch("device-1", 101, 200));
  REQUIRE_FALSE(failed);
  CHECK((*sink)->counters().producer_rebuilds == 1);
  // ...and the agent sends it again once the new producer is up.
  REQUIRE_MESSAGE(ready(**sink, 60), (*sink)->not_ready_reason().value_or(""));
  auto again = write_sync(**sink, batch("device-1", 101, 200));
  REQUIRE_MESSAGE(again, again.error().describe());
  CHECK(again->written == 100);
  auto counts = seen(o);
  check_each_once(counts, 200);
}

TEST_CASE("JSON values per topic") {
  SystemClock clock;
  auto o = options_for("t8", "gw-t8");
  o.json_values[kind_index(EventKind::json)] = true;
  auto sink = KafkaSink::start(o, clock);
  REQUIRE(sink);
  REQUIRE(ready(**sink, 60));
  REQUIRE(write_sync(**sink, batch("device-1", 1, 4)));
  std::string error;
  auto records = read_committed(o.brokers, all_topics(o), &error);
  REQUIRE_MESSAGE(error.empty(), error);
  REQUIRE(records.size() == 4);
  for (const ConsumedRecord& r : records) {
    if (r.topic == "t8.events") {
      CHECK(r.value.front() == '{');
      CHECK(r.value.find("\"agent_id\":\"device-1\"") != std::string::npos);
      CHECK(r.value.find("\"json\":{\"n\":") != std::string::npos);  // the payload inline
    } else {
      v1::Event e;
      CHECK(e.ParseFromString(r.value));  // sensor readings stay protobuf
      CHECK(e.kind() == v1::EVENT_KIND_SENSOR);
    }
  }
}
