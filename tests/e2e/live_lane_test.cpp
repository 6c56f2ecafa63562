// The live lane (docs/protocol.md, "Lanes") with real processes: an agent collects pixel hits
// and MQTT sensor readings through a real mosquitto while its gateway is down for 60 s, building
// a backlog of a million pixel hits; then the gateway comes up, over an uplink capped at
// 512 KiB/s (a metered link: the drain takes tens of seconds). With live_kinds = "sensor", the
// readings collected while the backlog drains reach the gateway within 2 s of being collected
// (received_at - collected_at, from the sink, printed), long before the backlog has drained;
// and every accepted event is in the sink exactly once.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "tests/e2e/uplink_support.hpp"
#include "tests/support/buffer_probe.hpp"
#include "tests/support/file_sink_reader.hpp"
#include "tests/support/http_load.hpp"
#include "tests/support/mosquitto.hpp"

using namespace outpost;
using namespace outpost::test;

namespace {

int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

TEST_CASE("after a 60 s outage and a million events of backlog, live readings arrive within 2 s") {
  raise_fd_limit();
  Pki pki;
  TempDir gw_dir, dir;
  const uint16_t gw_port = free_port(), status_port = free_port(), http_port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), gw_port);  // started after the outage
  Broker broker;
  const std::string buffer = dir.file("buffer.db");
  write_file(
      dir.file("agent.toml"),
      "[agent]\nid = \"device-1\"\nhttp_listen = \"127.0.0.1:" + std::to_string(status_port) +
          "\"\n[buffer]\npath = \"" + buffer +
          "\"\nsynchronous = \"normal\"\n[uplink]\nendpoints = \"127.0.0.1:" +
          std::to_string(gw_port) + "\"\nserver_name = \"localhost\"\nca_file = \"" + pki.main +
          "/ca.crt\"\ncert_file = \"" + pki.main + "/device-1.crt\"\nkey_file = \"" + pki.main +
          "/device-1.key\"\nbackoff_initial = \"50ms\"\nbackoff_max = \"500ms\"\n"
          "live_kinds = \"sensor\"\nlive_share = 20\nrate_limit = \"512KiB\"\n"
          "[sources.http]\nenabled = true\nlisten = \"127.0.0.1:" +
          std::to_string(http_port) +
          "\"\n[sources.mqtt]\nenabled = true\nbroker = \"tcp://127.0.0.1:" +
          std::to_string(broker.port) + "\"\nclient_id = \"outpost-live-lane-test\"\n");
  Child agent({"/bin/sh", "-c",
               std::string("exec ") + OUTPOST_AGENT_BIN + " run --config " +
                   dir.file("agent.toml") + " 2>>" + dir.file("agent.log")},
              false);
  auto agent_log = [&] { return read_text(dir.file("agent.log")); };
  REQUIRE_MESSAGE(
      wait_until([&] { return agent_log().find("connected to tcp://") != std::string::npos; }, 20),
      agent_log());

  // 1. The outage: 60 s, a million pixel hits and a few readings collected meanwhile.
  const auto outage_start = std::chrono::steady_clock::now();
  uint64_t published = 0;
  LoadCounts hits;
  {
    HttpLoad pixels(http_port, "GET /p.gif?site=s1 HTTP/1.1\r\nHost: x\r\n\r\n", 2);
    for (int i = 0; i < 10; ++i) {
      REQUIRE(broker.publish("sensors/s1/temp", std::to_string(i) + "\n").exit_code == 0);
      ++published;
    }
    REQUIRE_MESSAGE(wait_until([&] { return pixels.answered() >= 1'000'000; }, 55), agent_log());
    hits = pixels.stop();
  }
  const uint64_t backlog = pending(buffer);
  MESSAGE("backlog at the end of the outage: " << backlog << " events");
  CHECK(backlog >= 1'000'000);
  std::this_thread::sleep_until(outage_start + std::chrono::seconds(60));

  // 2. The gateway comes up; a reading every 50 ms while the backlog drains.
  const int64_t up_ns = wall_ns();
  gateway.start();
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> during{0};
  std::thread publisher([&] {
    for (int i = 0; !stop; ++i) {
      if (broker.publish("sensors/s1/alert", std::to_string(1000 + i) + "\n").exit_code == 0) {
        ++during;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  double bulk_age = 0, live_age_max = 0, eta_max = 0;
  const bool drained = wait_until(
      [&] {
        const std::string m = http_get(status_port, "/metrics");
        bulk_age =
            std::max(bulk_age, metric(m, "outpost_agent_uplink_lane_age_seconds{lane=\"bulk\"}"));
        live_age_max = std::max(live_age_max,
                                metric(m, "outpost_agent_uplink_lane_age_seconds{lane=\"live\"}"));
        eta_max = std::max(eta_max, metric(m, "outpost_agent_uplink_drain_eta_seconds"));
        return metric(m, "outpost_agent_backlog_events") == 0 && during > 20;
      },
      180);
  stop = true;
  publisher.join();
  REQUIRE_MESSAGE(drained, agent_log());
  published += during;
  // The readings published last reach the sink too.
  REQUIRE(wait_until([&] { return pending(buffer) == 0; }, 30));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  REQUIRE(wait_until([&] { return pending(buffer) == 0; }, 30));

  // 3. From the sink: the live readings' delay while the backlog drained, and exactly once.
  bool frames_ok = false;
  auto lines = read_sink(gateway.sink_dir(), &frames_ok);
  CHECK(frames_ok);
  std::set<uint64_t> seqs;
  uint64_t twice = 0, pixel = 0, sensor = 0;
  int64_t last_pixel_received = 0;
  std::vector<std::pair<int64_t, int64_t>> live;  // (received_at, delay) of fresh readings
  std::map<uint64_t, int64_t> sensor_received;    // by seq: the lane keeps the kind's order
  for (const SinkLine& l : lines) {
    if (!seqs.insert(l.seq).second) ++twice;
    const int64_t received = std::stoll(json_field(l.json, "received_at"));
    const int64_t collected = std::stoll(json_field(l.json, "collected_at"));
    if (l.kind == "pixel") {
      ++pixel;
      last_pixel_received = std::max(last_pixel_received, received);
    } else if (l.kind == "sensor") {
      ++sensor;
      sensor_received[l.seq] = received;
      if (collected >= up_ns) live.emplace_back(received, received - collected);
    }
  }
  CHECK(twice == 0);
  CHECK(pixel == hits.total_2xx());
  CHECK(sensor == published);
  CHECK(seqs.size() == hits.total_2xx() + published);
  // The live lane's kind arrived in seq order: each reading no earlier than the one before.
  int64_t previous = 0;
  uint64_t out_of_order = 0;
  for (const auto& [seq, received] : sensor_received) {
    if (received < previous) ++out_of_order;
    previous = received;
  }
  CHECK(out_of_order == 0);
  // The readings collected while the backlog was still draining.
  std::vector<int64_t> delays;
  for (const auto& [received, delay] : live) {
    if (received < last_pixel_received) delays.push_back(delay);
  }
  std::sort(delays.begin(), delays.end());
  const double drain_s = static_cast<double>(last_pixel_received - up_ns) / 1e9;
  REQUIRE(!delays.empty());
  MESSAGE("backlog drained in " << drain_s << " s; " << delays.size()
                                << " live readings collected meanwhile: delay median "
                                << static_cast<double>(delays[delays.size() / 2]) / 1e6
                                << " ms, max " << static_cast<double>(delays.back()) / 1e6
                                << " ms; lane age seen: bulk up to " << bulk_age
                                << " s, live up to " << live_age_max << " s; drain ETA up to "
                                << eta_max << " s");
  CHECK(delays.size() >= 10);
  CHECK(delays.back() < 2'000'000'000);
  CHECK(bulk_age > 10);  // the bulk lane was sending old events meanwhile
  CHECK(eta_max > 0);    // and /metrics estimated the drain
  CHECK(agent_log().find("next attempt") != std::string::npos);  // the outage was seen
  ::kill(agent.pid(), SIGTERM);
  CHECK(agent.wait() == 0);
}
