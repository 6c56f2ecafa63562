// The MQTT source: the topic/payload mapping, and a real mosquitto started on a free
// loopback port: QoS 1 readings published while the agent is stopped are all in the buffer
// after it starts again (persistent session); poison messages are quarantined with their
// reason and leave it alive; a publisher numbering 20k messages while the agent is SIGKILLed
// 20 times (losses bounded, duplicates removed by message identity); TLS with client
// certificates.
#include <doctest/doctest.h>
#include <mqtt/async_client.h>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "agent/buffer/buffer_inspector.hpp"
#include "agent/sources/mqtt/mqtt_source.hpp"
#include "common/clock.hpp"
#include "outpost/v1/event.pb.h"
#include "tests/e2e/uplink_support.hpp"
#include "tests/support/mosquitto.hpp"
#include "tests/support/stub_buffer.hpp"

using namespace outpost;
using namespace outpost::agent;
using namespace outpost::test;

namespace {

MqttMapping mapping(size_t max_payload_bytes = 1024, bool keep_binary = false) {
  MqttMapping m;
  m.max_payload_bytes = max_payload_bytes;
  m.keep_binary = keep_binary;
  return m;
}

v1::Event mapped(const std::string& topic, const std::string& payload,
                 const MqttMapping& m = mapping()) {
  std::string why;
  auto e = map_reading(topic, payload, m, 42, &why);
  REQUIRE_MESSAGE(e, why);
  v1::Event out;
  REQUIRE(out.ParseFromString(e->body));
  return out;
}

uint64_t pending(const std::string& path) {
  auto inspector = BufferInspector::open(path);
  if (!inspector) return 0;
  auto s = inspector->stats();
  return s ? s->pending_events : 0;
}

bool wait_for(const std::function<bool()>& pred, int seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return pred();
}

std::string agent_config(const TempDir& dir, const std::string& broker, const std::string& extra) {
  return "[agent]\nid = \"mqtt-test\"\nhttp_listen = \"\"\n[buffer]\npath = \"" +
         dir.file("buffer.db") + "\"\n[sources.mqtt]\nenabled = true\nbroker = \"" + broker +
         "\"\nclient_id = \"outpost-mqtt-test\"\n" + extra;
}

// Sensor readings of `metric` in the buffer: how many times each number is there.
std::map<double, int> readings_of(const std::string& buffer, const std::string& metric) {
  std::map<double, int> out;
  auto inspector = BufferInspector::open(buffer);
  REQUIRE(inspector);
  REQUIRE(inspector->scan({}, [&](const StoredEvent& e) {
    v1::Event ev;
    if (ev.ParseFromString(e.body) && ev.sensor().metric() == metric) {
      ++out[ev.sensor().number()];
    }
    return true;
  }));
  return out;
}

}  // namespace

TEST_CASE("topic pattern and payload forms map to a SensorReading; the rest is refused") {
  auto n = mapped("sensors/dev-7/temperature", " 21.5\n");
  CHECK(n.kind() == v1::EVENT_KIND_SENSOR);
  CHECK(n.sensor().device() == "dev-7");
  CHECK(n.sensor().metric() == "temperature");
  CHECK(n.sensor().number() == 21.5);
  CHECK(n.sensor().topic() == "sensors/dev-7/temperature");
  auto j = mapped("sensors/d/h", R"({"value": 40, "unit": "%", "ts": 1790000000.5})");
  CHECK(j.sensor().number() == 40);
  CHECK(j.sensor().unit() == "%");
  CHECK(j.event_time() == 1'790'000'000'500'000'000);
  auto ms = mapped("sensors/d/h", R"({"value": 1, "ts": 1790000000500})");
  CHECK(ms.event_time() == 1'790'000'000'500'000'000);
  // Only top-level members count: a nested "value" is not the reading.
  CHECK(mapped("sensors/d/h", R"({"meta":{"value":5},"value":7})").sensor().number() == 7);
  CHECK(mapped("sensors/d/h", R"({"meta":{"value":5}})").sensor().raw_payload());
  auto text = mapped("sensors/d/state", "door open");
  CHECK(text.sensor().raw_payload());
  CHECK(text.sensor().raw() == "door open");
  // Binary: quarantined unless declared with keep_binary.
  const std::string binary("\x01\x02\xff", 3);
  std::string why;
  CHECK_FALSE(map_reading("sensors/d/blob", binary, mapping(), 0, &why));
  CHECK(why.find("not UTF-8") != std::string::npos);
  auto raw = mapped("sensors/d/blob", binary, mapping(1024, true));
  CHECK(raw.sensor().raw_payload());
  CHECK(raw.sensor().raw() == binary);
  CHECK_FALSE(map_reading("sensors/a/b/c", "1", mapping(), 0, &why));
  CHECK(why.find("does not match") != std::string::npos);
  CHECK_FALSE(map_reading("sensors/a/b", std::string(2000, '1'), mapping(), 0, &why));
  CHECK(why.find("exceeds sources.mqtt.max_payload_bytes (1024)") != std::string::npos);
}

TEST_CASE("ts in s, ms, us or ns by magnitude or as configured; the rest is quarantined") {
  using Unit = MqttMapping::TsUnit;
  std::string why;
  const int64_t want = 1'790'000'000'123'456'789;
  CHECK(reading_time_ns("1790000000", Unit::automatic, &why) == 1'790'000'000'000'000'000);
  CHECK(reading_time_ns("1790000000123", Unit::automatic, &why) == 1'790'000'000'123'000'000);
  CHECK(reading_time_ns("1790000000123456", Unit::automatic, &why) == 1'790'000'000'123'456'000);
  CHECK(reading_time_ns("1790000000123456789", Unit::automatic, &why) == want);  // exact
  CHECK(reading_time_ns("1790000000123", Unit::us, &why) == 1'790'000'000'123'000);
  CHECK_FALSE(reading_time_ns("-5", Unit::automatic, &why));
  CHECK(why.find("not a positive time") != std::string::npos);
  CHECK_FALSE(reading_time_ns("0", Unit::automatic, &why));
  CHECK_FALSE(reading_time_ns("\"yesterday\"", Unit::automatic, &why));
  CHECK(why.find("not a number") != std::string::npos);
  CHECK_FALSE(reading_time_ns("9300000000000000000", Unit::automatic, &why));  // > INT64_MAX ns
  CHECK(why.find("2262") != std::string::npos);
  CHECK_FALSE(reading_time_ns("1e30", Unit::automatic, &why));
  CHECK_FALSE(reading_time_ns("1790000000", Unit::ms, &why) == std::nullopt);
  CHECK_FALSE(reading_time_ns("17900000000000", Unit::s, &why));  // seconds past 2262
  // Through the mapping: a bad ts refuses the message (it goes to the quarantine).
  CHECK_FALSE(map_reading("sensors/d/h", R"({"value":1,"ts":-1})", mapping(), 0, &why));
  CHECK(mapped("sensors/d/h", R"({"value":1,"ts":1790000000123456789})").event_time() == want);
}

TEST_CASE("a message's identity: packet id, topic and payload each tell copies apart") {
  const std::string a = message_identity(7, "sensors/d/t", "21.5");
  CHECK(a == message_identity(7, "sensors/d/t", "21.5"));  // the redelivered copy
  CHECK(a != message_identity(8, "sensors/d/t", "21.5"));
  CHECK(a != message_identity(7, "sensors/d/u", "21.5"));
  CHECK(a != message_identity(7, "sensors/d/t", "21.6"));
  CHECK(message_identity(1, "t", "") != message_identity(1, "t", std::string(1, '\0')));
}

TEST_CASE("a real mosquitto: 10k QoS 1 readings published while the agent is down all arrive") {
  TempDir dir;
  Broker broker;
  write_file(dir.file("agent.toml"),
             agent_config(dir, "tcp://127.0.0.1:" + std::to_string(broker.port), ""));
  const std::string buffer = dir.file("buffer.db");
  {
    // First run: the agent subscribes (the broker now keeps its session), and a probe arrives.
    auto agent = std::make_unique<Child>(std::vector<std::string>{
        std::string(OUTPOST_AGENT_BIN), "run", "--config", dir.file("agent.toml")});
    REQUIRE(wait_for(
        [&] {
          broker.publish("sensors/probe/ready", "1\n");
          return pending(buffer) >= 1;
        },
        20));
    agent->signal(SIGTERM);
    CHECK(agent->wait() == 0);
  }
  const uint64_t before = pending(buffer);
  std::string lines;
  for (int i = 0; i < 10'000; ++i) lines += std::to_string(i) + "\n";
  auto pub = broker.publish("sensors/dev-1/counter", lines);
  REQUIRE_MESSAGE(pub.exit_code == 0, pub.err);
  // Poison: a payload over the limit, a topic the pattern cannot map, a binary payload.
  REQUIRE(broker.publish_file("sensors/dev-1/big", std::string(100'000, 'x')).exit_code == 0);
  REQUIRE(broker.publish("sensors/a/b/c", "1\n").exit_code == 0);
  REQUIRE(broker.publish_file("sensors/dev-1/blob", std::string("\xff\xfe\x00\x01", 4)).exit_code ==
          0);

  Child agent({std::string(OUTPOST_AGENT_BIN), "run", "--config", dir.file("agent.toml")});
  REQUIRE(wait_for([&] { return pending(buffer) >= before + 10'000; }, 60));
  auto inspector = BufferInspector::open(buffer);
  REQUIRE(inspector);
  REQUIRE(wait_for([&] { return inspector->stats()->quarantined_total >= 3; }, 20));
  CHECK(::kill(agent.pid(), 0) == 0);  // alive after the poison messages
  agent.signal(SIGTERM);
  CHECK(agent.wait() == 0);

  auto counters = readings_of(buffer, "counter");
  CHECK(counters.size() == 10'000);  // none lost
  CHECK(std::all_of(counters.begin(), counters.end(),
                    [](const auto& kv) { return kv.second == 1; }));  // none twice
  CHECK(counters.begin()->first == 0);
  CHECK(counters.rbegin()->first == 9'999);

  auto rows = inspector->quarantine(10);
  REQUIRE(rows);
  REQUIRE(rows->size() == 3);
  std::map<std::string, QuarantinedMessage> by_topic;
  for (const QuarantinedMessage& q : *rows) by_topic[q.subject] = q;
  CHECK(by_topic["sensors/dev-1/big"].reason.find("exceeds") != std::string::npos);
  CHECK(by_topic["sensors/dev-1/big"].size == 100'000);
  CHECK(by_topic["sensors/dev-1/big"].payload.size() == 4096);  // quarantine_keep_bytes
  CHECK(by_topic["sensors/a/b/c"].reason.find("does not match") != std::string::npos);
  CHECK(by_topic["sensors/dev-1/blob"].reason.find("not UTF-8") != std::string::npos);
  CHECK(by_topic["sensors/dev-1/blob"].payload == std::string("\xff\xfe\x00\x01", 4));
  for (const QuarantinedMessage& q : *rows) CHECK(q.source == "mqtt");

  // The operator's view of it.
  auto listed = run({std::string(OUTPOST_AGENT_BIN), "buffer", "quarantine", "--path", buffer});
  CHECK(listed.exit_code == 0);
  CHECK(listed.out.find("reason: topic \"sensors/a/b/c\" does not match") != std::string::npos);
  // Binary bytes are escaped for the terminal, never printed raw.
  CHECK(listed.out.find("\\x00\\x01") != std::string::npos);
  CHECK(listed.out.find(std::string("\x00", 1)) == std::string::npos);
  auto stats = run({std::string(OUTPOST_AGENT_BIN), "buffer", "stats", "--path", buffer});
  CHECK(stats.out.find("quarantined     3 kept of 3 ever") != std::string::npos);
}

TEST_CASE("a real mosquitto: retained values once across restarts, timestamps checked") {
  TempDir dir;
  Broker broker;
  write_file(dir.file("agent.toml"),
             agent_config(dir, "tcp://127.0.0.1:" + std::to_string(broker.port), ""));
  const std::string buffer = dir.file("buffer.db");
  REQUIRE(broker.publish_retained("sensors/door-1/state", "open").exit_code == 0);
  auto of_topic = [&](const std::string& topic) {
    std::vector<v1::Event> out;
    auto inspector = BufferInspector::open(buffer);
    REQUIRE(inspector);
    REQUIRE(inspector->scan({}, [&](const StoredEvent& e) {
      v1::Event ev;
      if (ev.ParseFromString(e.body) && ev.sensor().topic() == topic) out.push_back(ev);
      return true;
    }));
    return out;
  };
  for (int run_no = 0; run_no < 3; ++run_no) {
    Child agent({std::string(OUTPOST_AGENT_BIN), "run", "--config", dir.file("agent.toml")});
    const std::string probe = "sensors/probe/run" + std::to_string(run_no);
    REQUIRE(wait_for(
        [&] {
          broker.publish(probe, "1\n");
          return !of_topic(probe).empty();
        },
        20));
    if (run_no == 1) {
      // Timestamps in every unit, and two that cannot be times.
      const std::pair<const char*, const char*> readings[] = {
          {"sensors/t-1/us", R"({"value":1,"ts":1790000000123456})"},
          {"sensors/t-1/ns", R"({"value":1,"ts":1790000000123456789})"},
          {"sensors/t-1/neg", R"({"value":1,"ts":-3})"},
          {"sensors/t-1/huge", R"({"value":1,"ts":1e40})"}};
      for (const auto& [topic, payload] : readings) {
        REQUIRE(broker.publish(topic, std::string(payload) + "\n").exit_code == 0);
      }
      REQUIRE(wait_for([&] { return of_topic("sensors/t-1/ns").size() == 1; }, 20));
    }
    if (run_no == 2) {
      REQUIRE(broker.publish_retained("sensors/door-1/state", "closed").exit_code == 0);
      REQUIRE(wait_for([&] { return of_topic("sensors/door-1/state").size() == 2; }, 20));
    }
    agent.signal(SIGTERM);
    CHECK(agent.wait() == 0);
  }
  // Delivered at each of the three subscriptions, stored once; the change is a new reading.
  auto door = of_topic("sensors/door-1/state");
  REQUIRE(door.size() == 2);
  CHECK(door[0].sensor().raw() == "open");
  CHECK(door[0].sensor().retained());
  CHECK(door[1].sensor().raw() == "closed");
  CHECK_FALSE(door[1].sensor().retained());  // published live, to a subscriber
  CHECK(of_topic("sensors/t-1/us").at(0).event_time() == 1'790'000'000'123'456'000);
  CHECK(of_topic("sensors/t-1/ns").at(0).event_time() == 1'790'000'000'123'456'789);
  CHECK(of_topic("sensors/t-1/neg").empty());
  CHECK(of_topic("sensors/t-1/huge").empty());
  auto inspector = BufferInspector::open(buffer);
  REQUIRE(inspector);
  auto rows = inspector->quarantine(10);
  REQUIRE(rows);
  std::map<std::string, std::string> reasons;
  for (const QuarantinedMessage& q : *rows) reasons[q.subject] = q.reason;
  CHECK(reasons["sensors/t-1/neg"].find("not a positive time") != std::string::npos);
  CHECK(reasons["sensors/t-1/huge"].find("2262") != std::string::npos);
  auto s = inspector->stats();
  REQUIRE(s);
  CHECK(s->duplicates >= 2);  // the retained redeliveries of runs 2 and 3
}

namespace {

struct KillOutcome {
  int kills = 0, lost = 0, twice = 0;
  uint64_t recognised = 0;
};

// A publisher numbers 20k QoS 1 readings at 800/s while the agent is SIGKILLed 20 times at
// random moments; then counts what reached the buffer.
KillOutcome kill_scenario(const std::string& mqtt_extra) {
  TempDir dir;
  Broker broker;
  write_file(dir.file("agent.toml"),
             agent_config(dir, "tcp://127.0.0.1:" + std::to_string(broker.port), mqtt_extra));
  const std::string buffer = dir.file("buffer.db");
  std::vector<std::string> argv{std::string(OUTPOST_AGENT_BIN), "run", "--config",
                                dir.file("agent.toml")};
  if (const char* w = std::getenv("OUTPOST_TEST_IDENTITY_WINDOW")) {
    // Shows what the identities do: with 0 the redeliveries are stored twice.
    argv.push_back("--set");
    argv.push_back(std::string("buffer.identity_window=") + w);
  }
  {
    // Subscribe once, so that the broker keeps the session from the first reading on.
    Child agent(argv);
    REQUIRE(wait_for(
        [&] {
          broker.publish("sensors/probe/ready", "1\n");
          return pending(buffer) >= 1;
        },
        20));
    agent.signal(SIGKILL);
    agent.wait();
  }

  constexpr int kMessages = 20'000;
  constexpr int kKills = 20;
  std::atomic<int> published{0};
  std::atomic<bool> publisher_failed{false};
  std::thread publisher([&] {
    try {
      mqtt::async_client client("tcp://127.0.0.1:" + std::to_string(broker.port),
                                "outpost-test-publisher");
      client.connect()->wait();
      auto start = std::chrono::steady_clock::now();
      std::deque<mqtt::delivery_token_ptr> window;
      for (int i = 0; i < kMessages; ++i) {
        window.push_back(client.publish("sensors/dev-9/counter", std::to_string(i), 1, false));
        if (window.size() >= 32) {
          window.front()->wait();
          window.pop_front();
        }
        published = i + 1;
        std::this_thread::sleep_until(start + std::chrono::microseconds(1250) * (i + 1));
      }
      for (auto& t : window) t->wait();
      client.disconnect()->wait();
    } catch (const mqtt::exception& e) {
      MESSAGE("publisher: " << e.what());
      publisher_failed = true;
    }
  });

  std::mt19937 rng(20261121);
  std::uniform_int_distribution<int> alive_ms(200, 1000);
  KillOutcome out;
  while (out.kills < kKills) {
    Child agent(argv);
    std::this_thread::sleep_for(std::chrono::milliseconds(alive_ms(rng)));
    agent.signal(SIGKILL);
    agent.wait();
    ++out.kills;
  }
  Child agent(argv);
  publisher.join();
  REQUIRE_FALSE(publisher_failed);
  REQUIRE(published == kMessages);
  // Everything the broker still holds for the session arrives: wait until the count has not
  // changed for two seconds.
  uint64_t last = 0;
  int unchanged = 0;
  for (int i = 0; i < 120 && unchanged < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const uint64_t now = pending(buffer);
    unchanged = now == last ? unchanged + 1 : 0;
    last = now;
  }
  agent.signal(SIGTERM);
  CHECK(agent.wait() == 0);

  auto counts = readings_of(buffer, "counter");
  for (int i = 0; i < kMessages; ++i) {
    auto it = counts.find(i);
    if (it == counts.end()) {
      ++out.lost;
    } else if (it->second > 1) {
      out.twice += it->second - 1;
    }
  }
  auto inspector = BufferInspector::open(buffer);
  REQUIRE(inspector);
  auto stats = inspector->stats();
  REQUIRE(stats);
  out.recognised = stats->duplicates;
  MESSAGE("MQTT [" << mqtt_extra.substr(0, mqtt_extra.find('\n')) << "] under " << out.kills
                   << " SIGKILLs: " << kMessages << " published, " << out.lost << " lost, "
                   << out.twice << " duplicated in the buffer, " << out.recognised
                   << " redeliveries recognised and not stored");
  return out;
}

}  // namespace

TEST_CASE(
    "commit = each: 20 SIGKILLs while 20k readings arrive lose at most one each, store "
    "none twice") {
  KillOutcome o = kill_scenario("commit = \"each\"\n");
  // The stated bound (README, docs/sources.md): at most one message per kill, the one whose
  // PUBACK Paho sent before the commit finished.
  CHECK(o.lost <= o.kills);
  CHECK(o.twice == 0);
}

// A buffer that, like the real writer with a long commit_interval, keeps a grouped append
// uncommitted until an urgent (Commit::now) one arrives, and then commits them all.
class LingeringBuffer final : public test::StubBuffer {
 public:
  std::mutex mu;
  std::vector<AppendCallback> held;
  size_t stored = 0, urgent = 0;

  void append(std::vector<NewEvent> events, AppendCallback done, Commit when, Acceptance) override {
    std::vector<AppendCallback> commit;
    {
      std::lock_guard lock(mu);
      stored += events.size();
      held.push_back(std::move(done));
      if (when == Commit::now) {
        ++urgent;
        commit.swap(held);
      }
    }
    for (auto& cb : commit) cb(AppendResult{});
  }
  size_t count() {
    std::lock_guard lock(mu);
    return stored;
  }
};

TEST_CASE("commit = grouped: the append that fills the window is committed at once") {
  // Without it the callback waits for the writer's linger at every full window: with a small
  // max_uncommitted, slower than commit = "each" (mqtt_bench: 1,425 msg/s at 8).
  Broker broker;
  LingeringBuffer buffer;
  SystemClock clock;
  MqttSourceOptions o;
  o.broker = "tcp://127.0.0.1:" + std::to_string(broker.port);
  o.commit = MqttCommit::grouped;
  o.max_uncommitted = 4;
  o.client_id = "window-test";
  auto source = MqttSource::start(o, buffer, clock);
  REQUIRE(source);
  REQUIRE(wait_for([&] { return (*source)->connected(); }, 20));
  // Subscribed once a probe arrives (4 probes fill one window and are committed).
  REQUIRE(wait_for(
      [&] {
        broker.publish("sensors/probe/ready", "1\n");
        return buffer.count() >= 4;
      },
      20));
  const size_t before = buffer.count();
  std::string lines;
  for (int i = 0; i < 400; ++i) lines += std::to_string(i) + "\n";
  REQUIRE(broker.publish("sensors/dev-1/counter", lines).exit_code == 0);
  // A stalled window would stop here at 4 uncommitted readings.
  CHECK(wait_for([&] { return buffer.count() >= before + 400; }, 30));
  std::vector<AppendCallback> left;
  {
    std::lock_guard lock(buffer.mu);
    CHECK(buffer.urgent == buffer.stored / 4);  // every fourth append, and only those
    CHECK(buffer.held.size() == buffer.stored % 4);
    left.swap(buffer.held);
  }
  for (auto& cb : left) cb(AppendResult{});  // so that the source can stop
}

TEST_CASE("commit = grouped: 20 SIGKILLs lose at most max_uncommitted each, store none twice") {
  KillOutcome o = kill_scenario("commit = \"grouped\"\nmax_uncommitted = 100\n");
  // The bound by construction: the readings Paho acknowledged and the callback queued but
  // the buffer had not committed, at most max_uncommitted per kill.
  CHECK(o.lost <= o.kills * 100);
  CHECK(o.twice == 0);
}

TEST_CASE("TLS to the broker: verified both ways with real certificates") {
  Pki pki;
  const std::string& p = pki.main;
  Broker broker("cafile " + p + "/ca.crt\ncertfile " + p + "/gateway.crt\nkeyfile " + p +
                "/gateway.key\nrequire_certificate true\n");
  auto start_agent = [&](const TempDir& dir, const std::string& tls) {
    write_file(dir.file("agent.toml"),
               agent_config(dir, "ssl://localhost:" + std::to_string(broker.port), tls));
    return std::make_unique<Child>(std::vector<std::string>{std::string(OUTPOST_AGENT_BIN), "run",
                                                            "--config", dir.file("agent.toml")});
  };
  auto publish_tls = [&](const std::string& topic, const std::string& line) {
    return run({"/usr/bin/mosquitto_pub", "-h", "localhost", "-p", std::to_string(broker.port),
                "--cafile", p + "/ca.crt", "--cert", p + "/device-2.crt", "--key",
                p + "/device-2.key", "-q", "1", "-t", topic, "-l"},
               line);
  };

  SUBCASE("the right CA and a device certificate: readings arrive") {
    TempDir dir;
    auto agent = start_agent(dir, "ca_file = \"" + p + "/ca.crt\"\ncert_file = \"" + p +
                                      "/device-1.crt\"\nkey_file = \"" + p + "/device-1.key\"\n");
    CHECK(wait_for(
        [&] {
          publish_tls("sensors/dev-tls/temperature", "21.5\n");
          return pending(dir.file("buffer.db")) >= 1;
        },
        30));
    agent->signal(SIGTERM);
    CHECK(agent->wait() == 0);
    CHECK(readings_of(dir.file("buffer.db"), "temperature").count(21.5) == 1);
  }
  SUBCASE("a broker certificate from another CA is refused: nothing arrives") {
    TempDir dir;
    auto agent = start_agent(dir, "ca_file = \"" + pki.other + "/ca.crt\"\ncert_file = \"" + p +
                                      "/device-1.crt\"\nkey_file = \"" + p + "/device-1.key\"\n");
    std::this_thread::sleep_for(std::chrono::seconds(3));
    publish_tls("sensors/dev-tls/temperature", "1\n");
    std::this_thread::sleep_for(std::chrono::seconds(1));
    CHECK(::kill(agent->pid(), 0) == 0);  // alive, retrying
    agent->signal(SIGTERM);
    CHECK(agent->wait() == 0);
    CHECK(pending(dir.file("buffer.db")) == 0);
  }
  SUBCASE("without a client certificate the broker refuses the agent") {
    TempDir dir;
    auto agent = start_agent(dir, "ca_file = \"" + p + "/ca.crt\"\n");
    std::this_thread::sleep_for(std::chrono::seconds(3));
    publish_tls("sensors/dev-tls/temperature", "1\n");
    std::this_thread::sleep_for(std::chrono::seconds(1));
    agent->signal(SIGTERM);
    CHECK(agent->wait() == 0);
    CHECK(pending(dir.file("buffer.db")) == 0);
  }
  SUBCASE("TLS files with a plain tcp:// broker are a configuration error") {
    TempDir dir;
    write_file(dir.file("agent.toml"),
               agent_config(dir, "tcp://127.0.0.1:" + std::to_string(broker.port),
                            "ca_file = \"" + p + "/ca.crt\"\n"));
    auto out = run({std::string(OUTPOST_AGENT_BIN), "run", "--config", dir.file("agent.toml")});
    CHECK(out.exit_code == 2);
    CHECK(out.err.find("write it as ssl://HOST:PORT") != std::string::npos);
  }
}
