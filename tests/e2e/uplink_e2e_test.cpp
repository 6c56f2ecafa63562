// The uplink end to end, with real processes and real certificates on loopback:
// events buffered while the gateway is down all arrive, exactly once; then SIGKILLs of the
// gateway and of the agent at random moments mid-stream lose and double nothing.
#include <doctest/doctest.h>

#include <random>
#include <set>

#include "agent/buffer/buffer_inspector.hpp"
#include "tests/e2e/uplink_support.hpp"
#include "tests/support/buffer_probe.hpp"
#include "tests/support/file_sink_reader.hpp"

using namespace outpost;
using namespace outpost::test;

TEST_CASE(
    "100k events buffered while the gateway is down, then kills on both sides: 0 lost, 0 doubled") {
  Pki pki;
  TempDir gw_dir, agent_dir;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), port);
  AgentProc agent(pki, agent_dir.path(), port);

  // 1. The gateway is down: the agent buffers 100k events.
  agent.start({.events = 100'000});
  REQUIRE(wait_until([&] { return pending(agent.buffer_path()) == 100'000; }, 60));

  // 2. The gateway starts: the backlog drains, each event exactly once.
  gateway.start();
  REQUIRE_MESSAGE(wait_until([&] { return pending(agent.buffer_path()) == 0; }, 120),
                  gateway.log());
  agent.stop();
  check_file_sink_exactly_once(gateway.sink_dir(), "device-1", 100'000);

  // 3. Mid-stream: 5 SIGKILLs of the gateway and 5 of the agent, at random moments.
  const uint64_t seed = std::random_device{}();
  MESSAGE("kill schedule seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<char> victims = {'g', 'g', 'g', 'g', 'g', 'a', 'a', 'a', 'a', 'a'};
  std::shuffle(victims.begin(), victims.end(), rng);
  agent.start({.events = 2'000'000, .rate = 40'000});
  for (char victim : victims) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 900));
    if (victim == 'g') {
      gateway.kill9();
      std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 400));
      gateway.start();
    } else {
      agent.kill9();
      agent.start({.events = 2'000'000, .rate = 40'000});
    }
  }
  // 4. Stop generating, drain what is left, and count.
  agent.stop();
  agent.start({});
  REQUIRE_MESSAGE(wait_until([&] { return pending(agent.buffer_path()) == 0; }, 120),
                  gateway.log());
  agent.stop();
  CHECK(gateway.stop() == 0);
  const uint64_t last = next_seq(agent.buffer_path()) - 1;
  CHECK(last > 150'000);  // the kills happened while events flowed
  check_file_sink_exactly_once(gateway.sink_dir(), "device-1", last);
}

TEST_CASE("a device over its rate limit is told to retry later and loses nothing") {
  Pki pki;
  TempDir gw_dir, agent_dir;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), port,
                      "[limits]\ndevice_events_per_second = 20000\ndevice_burst_events = 20000\n");
  gateway.start();
  AgentProc agent(pki, agent_dir.path(), port);
  agent.start({.events = 60'000});
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        return next_seq(agent.buffer_path()) == 60'001 &&
                               pending(agent.buffer_path()) == 0;
                      },
                      60),
                  gateway.log());
  agent.stop();
  const std::string m = http_get(gateway.http_port(), "/metrics");
  CHECK(metric(m, "outpost_gateway_batches_total{result=\"retry_later\"}") > 0);
  CHECK_MESSAGE(metric(m, "outpost_gateway_events_total{result=\"written\"}") == 60'000, m);
  CHECK(gateway.stop() == 0);
  check_file_sink_exactly_once(gateway.sink_dir(), "device-1", 60'000);
}

TEST_CASE("failover: the first endpoint is down, the agent moves on to the second") {
  Pki pki;
  TempDir gw_dir, agent_dir;
  const uint16_t dead = free_port();  // nothing listens here
  const uint16_t port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), port);
  gateway.start();
  AgentProc agent(pki, agent_dir.path(), port);
  agent.set_endpoints("127.0.0.1:" + std::to_string(dead) + ",127.0.0.1:" + std::to_string(port));
  agent.start({.events = 5'000});
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        return next_seq(agent.buffer_path()) == 5'001 &&
                               pending(agent.buffer_path()) == 0;
                      },
                      60),
                  agent.log());
  agent.stop();
  CHECK(agent.log().find("127.0.0.1:" + std::to_string(dead)) != std::string::npos);
  CHECK(gateway.stop() == 0);
  check_file_sink_exactly_once(gateway.sink_dir(), "device-1", 5'000);
}

TEST_CASE("upload rate cap: a metered link is not sent more than uplink.rate_limit allows") {
  Pki pki;
  TempDir gw_dir, agent_dir;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), port);
  gateway.start();
  AgentProc agent(pki, agent_dir.path(), port);
  agent.set_extra("rate_limit = \"50KiB\"\n");
  // 20k synthetic events compress to about 11 bytes each: about 220 KB, which at 50 KiB/s
  // (one second of burst) cannot take less than 3 seconds. A lower bound only: a slow
  // machine makes it longer, never shorter.
  agent.start({.events = 20'000});
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(wait_until([&] { return next_seq(agent.buffer_path()) == 20'001; }, 30));
  REQUIRE(wait_until([&] { return pending(agent.buffer_path()) == 0; }, 60));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  agent.stop();
  const std::string m = http_get(gateway.http_port(), "/metrics");
  const double bytes = metric(m, "outpost_gateway_bytes_total{form=\"compressed\"}");
  MESSAGE(bytes << " compressed bytes in " << seconds << " s");
  CHECK(seconds >= (bytes - 50 * 1024) / (50 * 1024) - 0.5);
  CHECK(gateway.stop() == 0);
  check_file_sink_exactly_once(gateway.sink_dir(), "device-1", 20'000);
}

TEST_CASE("the agent's /healthz and /metrics show the backlog, the uplink and its last error") {
  Pki pki;
  TempDir gw_dir, agent_dir;
  const uint16_t port = free_port();
  const uint16_t agent_http = free_port();
  GatewayProc gateway(pki, gw_dir.path(), port);
  AgentProc agent(pki, agent_dir.path(), port);
  agent.set_agent_keys("http_listen = \"127.0.0.1:" + std::to_string(agent_http) + "\"\n");
  agent.start({.events = 10'000});
  REQUIRE(wait_until([&] { return pending(agent.buffer_path()) == 10'000; }, 30));
  std::string m;
  REQUIRE(wait_until(
      [&] {
        m = http_get(agent_http, "/metrics");
        return metric(m, "outpost_agent_backlog_events") == 10'000;
      },
      10));
  CHECK(http_get(agent_http, "/healthz").find("200 OK") != std::string::npos);
  CHECK(metric(m, "outpost_agent_uplink_connected") == 0);
  CHECK(metric(m, "outpost_agent_backlog_bytes") > 0);
  CHECK(metric(m, "outpost_agent_oldest_pending_age_seconds") >= 0);
  CHECK(m.find("last_error=\"cannot connect") != std::string::npos);  // the gateway is down
  CHECK(metric(m, "outpost_agent_uplink_drain_eta_seconds") == -1);   // nothing moves

  gateway.start();
  REQUIRE(wait_until([&] { return pending(agent.buffer_path()) == 0; }, 60));
  REQUIRE(wait_until(
      [&] {
        m = http_get(agent_http, "/metrics");
        return metric(m, "outpost_agent_uplink_events_acked_total") == 10'000;
      },
      10));
  CHECK(metric(m, "outpost_agent_uplink_connected") == 1);
  CHECK(metric(m, "outpost_agent_backlog_events") == 0);
  CHECK(metric(m, "outpost_agent_uplink_bytes_sent_total") > 0);
  CHECK(m.find("last_error=\"\"") != std::string::npos);
  agent.stop();
  CHECK(gateway.stop() == 0);
}
