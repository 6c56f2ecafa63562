// The MQTT source: the topic/payload mapping, and a real mosquitto started on a free
// loopback port: QoS 1 readings published while the agent is stopped are all in the buffer
// after it starts again (persistent session), and poison messages leave it alive.
#include <doctest/doctest.h>

#include <set>
#include <thread>

#include "agent/buffer/buffer_inspector.hpp"
#include "agent/sources/mqtt/mqtt_source.hpp"
#include "outpost/v1/event.pb.h"
#include "tests/e2e/uplink_support.hpp"

using namespace outpost;
using namespace outpost::agent;
using namespace outpost::test;

namespace {

v1::Event mapped(const std::string& topic, const std::string& payload) {
  std::string why;
  auto e = map_reading(topic, payload, "sensors/{device}/{metric}", 1024, 42, &why);
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
  auto raw = mapped("sensors/d/blob", std::string("\x01\x02\xff", 3));
  CHECK(raw.sensor().raw_payload());
  CHECK(raw.sensor().raw() == std::string("\x01\x02\xff", 3));
  std::string why;
  CHECK_FALSE(map_reading("sensors/a/b/c", "1", "sensors/{device}/{metric}", 1024, 0, &why));
  CHECK(why.find("does not match") != std::string::npos);
  CHECK_FALSE(map_reading("sensors/a/b", std::string(2000, '1'), "sensors/{device}/{metric}", 1024,
                          0, &why));
  CHECK(why.find("exceeds 1024") != std::string::npos);
}

TEST_CASE("a real mosquitto: 10k QoS 1 readings published while the agent is down all arrive") {
  TempDir dir;
  const uint16_t port = free_port();
  write_file(dir.file("mosquitto.conf"), "listener " + std::to_string(port) +
                                             " 127.0.0.1\nallow_anonymous true\n"
                                             "persistence false\nmax_queued_messages 100000\n");
  Child broker({"/usr/sbin/mosquitto", "-c", dir.file("mosquitto.conf")}, false);
  write_file(dir.file("agent.toml"),
             "[agent]\nid = \"mqtt-test\"\nhttp_listen = \"\"\n[buffer]\npath = \"" +
                 dir.file("buffer.db") +
                 "\"\n[sources.mqtt]\nenabled = true\nbroker = \"tcp://127.0.0.1:" +
                 std::to_string(port) + "\"\nclient_id = \"outpost-mqtt-test\"\n");
  const std::string buffer = dir.file("buffer.db");
  auto publish = [&](const std::string& topic, const std::string& lines) {
    return run({"/usr/bin/mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(port), "-q", "1",
                "-t", topic, "-l"},
               lines);
  };
  {
    // First run: the agent subscribes (the broker now keeps its session), and a probe arrives.
    auto agent = std::make_unique<Child>(std::vector<std::string>{
        std::string(OUTPOST_AGENT_BIN), "run", "--config", dir.file("agent.toml")});
    REQUIRE(wait_for(
        [&] {
          publish("sensors/probe/ready", "1\n");
          return pending(buffer) >= 1;
        },
        20));
    agent->signal(SIGTERM);
    CHECK(agent->wait() == 0);
  }
  const uint64_t before = pending(buffer);
  std::string lines;
  for (int i = 0; i < 10'000; ++i) lines += std::to_string(i) + "\n";
  auto pub = publish("sensors/dev-1/counter", lines);
  REQUIRE_MESSAGE(pub.exit_code == 0, pub.err);
  // Poison: a payload over the limit, and a topic the pattern cannot map.
  publish("sensors/dev-1/big", std::string(100'000, 'x') + "\n");
  publish("sensors/a/b/c", "1\n");

  Child agent({std::string(OUTPOST_AGENT_BIN), "run", "--config", dir.file("agent.toml")});
  REQUIRE(wait_for([&] { return pending(buffer) >= before + 10'000; }, 60));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(::kill(agent.pid(), 0) == 0);  // alive after the poison messages
  agent.signal(SIGTERM);
  CHECK(agent.wait() == 0);

  auto inspector = BufferInspector::open(buffer);
  REQUIRE(inspector);
  std::multiset<double> counters;
  REQUIRE(inspector->scan({}, [&](const StoredEvent& e) {
    v1::Event ev;
    if (ev.ParseFromString(e.body) && ev.sensor().metric() == "counter") {
      counters.insert(ev.sensor().number());
    }
    return true;
  }));
  CHECK(counters.size() == 10'000);  // none lost, none twice
  CHECK(std::set<double>(counters.begin(), counters.end()).size() == 10'000);
  broker.signal(SIGTERM);
  broker.wait();
}
