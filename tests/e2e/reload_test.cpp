// The whole configuration reloaded while real processes run under load (docs/configuration.md,
// "Reload"): pixel hits over keep-alive connections and MQTT readings through a real mosquitto
// flow into an agent whose reload adds a spool source, moves its uplink from a proxy to the
// gateway itself and lifts its upload cap; a bad file is refused by `outpost-agent reload` and
// by the running agent, which keeps working; a restart-only change is said and kept. The
// gateway's reload sets and lifts a per-device rate limit and refuses a bad file the same way.
// A reload removes the spool source and changes the MQTT source (its session is made again)
// and the log level; a last one moves the HTTP source to a port that is taken, and the old
// one is started again.
// Every accepted event (a 2xx, a PUBACK, a spool line) is in the sink exactly once.
#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
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

void replace_in_file(const std::string& path, const std::string& from, const std::string& to) {
  std::string text = read_text(path);
  const size_t at = text.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, from);
  text.replace(at, from.size(), to);
  write_file(path, text);
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

double agent_metric(uint16_t port, const std::string& series) {
  return metric(http_get(port, "/metrics"), series);
}

// A QoS 1 publisher: batches of readings until stopped; counts those mosquitto_pub reported
// delivered (exit 0: every PUBACK came).
class Publisher {
 public:
  explicit Publisher(const Broker& broker) : broker_(broker) {
    thread_ = std::thread([this] {
      int round = 0;
      while (!stop_) {
        std::string lines;
        for (int i = 0; i < 200; ++i) lines += std::to_string(round * 200 + i) + "\n";
        auto r = broker_.publish("sensors/s1/temp", lines);
        if (r.exit_code == 0) {
          published_ += 200;
        } else {
          ++failed_;
        }
        ++round;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  ~Publisher() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t published() const { return published_; }
  uint64_t failed() const { return failed_; }

 private:
  const Broker& broker_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> published_{0}, failed_{0};
  std::thread thread_;
};

}  // namespace

TEST_CASE("reload under load: a source added, the uplink moved and uncapped, every event once") {
  raise_fd_limit();
  Pki pki;
  TempDir gw_dir, dir;
  const uint16_t gw_port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), gw_port);
  gateway.start();
  Broker broker;

  // The agent starts behind a TCP proxy, its upload capped at 8 KiB/s.
  const uint16_t proxy_port = free_port();
  const std::string control = dir.file("proxy.mode");
  write_file(control, "pass\n");
  Child proxy({"/usr/bin/python3", std::string(OUTPOST_SOURCE_DIR) + "/tests/faults/tcp_proxy.py",
               "127.0.0.1", std::to_string(proxy_port), "127.0.0.1", std::to_string(gw_port),
               control});
  std::string proxy_out;
  REQUIRE(wait_until(
      [&] {
        proxy.read_some(proxy_out, 100);
        return proxy_out.find("listening") != std::string::npos;
      },
      10));
  const uint16_t status_port = free_port(), http_port = free_port();
  const std::string spool = dir.file("spool");
  std::filesystem::create_directory(spool);
  const std::string config = dir.file("agent.toml");
  const std::string buffer = dir.file("buffer.db");
  const std::string started_text =
      "[agent]\nid = \"device-1\"\nhttp_listen = \"127.0.0.1:" + std::to_string(status_port) +
      "\"\n[buffer]\npath = \"" + buffer +
      "\"\n[uplink]\nendpoints = \"127.0.0.1:" + std::to_string(proxy_port) +
      "\"\nserver_name = \"localhost\"\nca_file = \"" + pki.main + "/ca.crt\"\ncert_file = \"" +
      pki.main + "/device-1.crt\"\nkey_file = \"" + pki.main +
      "/device-1.key\"\nbackoff_initial = \"50ms\"\nbackoff_max = \"500ms\"\n"
      "rate_limit = \"8KiB\"\n"
      "[sources.http]\nenabled = true\nlisten = \"127.0.0.1:" +
      std::to_string(http_port) +
      "\"\n[sources.mqtt]\nenabled = true\nbroker = \"tcp://127.0.0.1:" +
      std::to_string(broker.port) + "\"\nclient_id = \"outpost-reload-test\"\n";
  write_file(config, started_text);
  Child agent({"/bin/sh", "-c",
               std::string("exec ") + OUTPOST_AGENT_BIN + " run --config " + config + " 2>>" +
                   dir.file("agent.log")},
              false);
  auto agent_log = [&] { return read_text(dir.file("agent.log")); };
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        return agent_log().find("uplink 127.0.0.1:" + std::to_string(proxy_port) +
                                                ": connected") != std::string::npos;
                      },
                      20),
                  agent_log());
  REQUIRE(
      wait_until([&] { return agent_log().find("connected to tcp://") != std::string::npos; }, 20));

  HttpLoad pixels(http_port, "GET /p.gif?site=s1 HTTP/1.1\r\nHost: x\r\n\r\n", 2);
  Publisher readings(broker);
  {
    // 1. Capped: the uplink sends about 8 KiB/s while the backlog grows.
    std::this_thread::sleep_for(std::chrono::seconds(2));
    const double sent_0 = agent_metric(status_port, "outpost_agent_uplink_bytes_sent_total");
    std::this_thread::sleep_for(std::chrono::seconds(4));
    const double sent_1 = agent_metric(status_port, "outpost_agent_uplink_bytes_sent_total");
    MESSAGE("capped at 8 KiB/s: " << (sent_1 - sent_0) / 4 << " bytes/s sent");
    CHECK((sent_1 - sent_0) / 4 < 2 * 8192);  // a batch may go ahead of its wait
    CHECK(pending(buffer) > 10'000);
  }

  // 2. A bad file: `outpost-agent reload` says why and signals nothing; a SIGHUP anyway is
  //    refused by the agent with the same error, and the old configuration keeps working.
  write_file(config, started_text);
  replace_in_file(config, "backoff_max = \"500ms\"\n", "backoff_max = \"500ms\"\nwindow = 0\n");
  auto refused = run({OUTPOST_AGENT_BIN, "reload", "--config", config});
  CHECK(refused.exit_code == 2);
  CHECK_MESSAGE(refused.err.find("uplink.window") != std::string::npos, refused.err);
  CHECK(refused.err.find("nothing was sent") != std::string::npos);
  CHECK(agent_log().find("reload: reading") == std::string::npos);
  ::kill(agent.pid(), SIGHUP);
  REQUIRE_MESSAGE(
      wait_until([&] { return agent_log().find("reload refused") != std::string::npos; }, 10),
      agent_log());
  CHECK(agent_log().find("uplink.window") != std::string::npos);
  const uint64_t answered = pixels.answered();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(pixels.answered() > answered);  // still taking hits

  // 3. The good reload: a spool source added (with a file waiting), the uplink moved to the
  //    gateway itself and uncapped, and a restart-only change (buffer.max_bytes) said and kept.
  constexpr int kSpoolLines = 3000;
  std::string lines;
  for (int i = 0; i < kSpoolLines; ++i) lines += "{\"order\":" + std::to_string(i) + "}\n";
  write_file(spool + "/orders.ndjson.tmp", lines);
  std::filesystem::rename(spool + "/orders.ndjson.tmp", spool + "/orders.ndjson");
  std::string next_text = started_text;
  next_text.replace(next_text.find(std::to_string(proxy_port)), std::to_string(proxy_port).size(),
                    std::to_string(gw_port));
  next_text.replace(next_text.find("rate_limit = \"8KiB\"\n"), 20, "");
  next_text.replace(next_text.find("[uplink]"), 8, "max_bytes = \"900MiB\"\n[uplink]");
  next_text += "[sources.spool]\nenabled = true\ndirectory = \"" + spool +
               "\"\nschema = \"order.v1\"\nrescan_interval = \"500ms\"\n";
  write_file(config, next_text);
  auto reload = run({OUTPOST_AGENT_BIN, "reload", "--config", config});
  CHECK_MESSAGE(reload.exit_code == 0, reload.err);
  const std::string direct = "uplink 127.0.0.1:" + std::to_string(gw_port) + ": connected";
  REQUIRE_MESSAGE(wait_until([&] { return agent_log().find(direct) != std::string::npos; }, 15),
                  agent_log());
  std::string log = agent_log();
  CHECK(log.find("uplink.rate_limit: none from now on") != std::string::npos);
  CHECK(log.find("new settings: finishing the") != std::string::npos);
  CHECK(log.find("reload: sources.spool started") != std::string::npos);
  CHECK(log.find("buffer.max_bytes changed: it takes a restart") != std::string::npos);
  // Unchanged sources were not touched: no restart, one MQTT session, the same connections.
  CHECK(log.find("sources.http restarted") == std::string::npos);
  CHECK(log.find("sources.mqtt restarted") == std::string::npos);
  CHECK(count_of(log, "connected to tcp://") == 1);
  // The old path is gone: the proxy refuses everything from now on.
  write_file(control, "reset\n");

  // 4. The gateway: a per-device rate limit set by reload (retry-later answers follow), a bad
  //    file refused, the limit lifted again; a restart-only change said and kept.
  const std::string gw_config = gw_dir.file("gateway.toml");
  const std::string gw_text = read_text(gw_config);
  write_file(gw_config,
             gw_text + "[limits]\ndevice_events_per_second = 500\ndevice_burst_events = 500\n");
  replace_in_file(gw_config, "shutdown_grace = \"5s\"\n",
                  "shutdown_grace = \"5s\"\nthreads = 3\nlog_level = \"debug\"\n");
  auto gw_reload = run({OUTPOST_GATEWAY_BIN, "reload", "-c", gw_config});
  CHECK_MESSAGE(gw_reload.exit_code == 0, gw_reload.err);
  CHECK_MESSAGE(wait_until(
                    [&] {
                      return metric(http_get(gateway.http_port(), "/metrics"),
                                    "outpost_gateway_batches_total{result=\"retry_later\"}") > 0;
                    },
                    15),
                gateway.log());
  CHECK(gateway.log().find("gateway.threads changed: it takes a restart") != std::string::npos);
  CHECK(gateway.log().find("reload: gateway.log_level debug") != std::string::npos);
  write_file(gw_config, gw_text + "[limits]\nmax_connections = 0\n");
  auto gw_refused = run({OUTPOST_GATEWAY_BIN, "reload", "-c", gw_config});
  CHECK(gw_refused.exit_code == 2);
  CHECK_MESSAGE(gw_refused.err.find("limits.max_connections") != std::string::npos, gw_refused.err);
  gateway.signal(SIGHUP);
  CHECK(wait_until([&] { return gateway.log().find("reload refused") != std::string::npos; }, 10));
  write_file(gw_config, gw_text);
  gw_reload = run({OUTPOST_GATEWAY_BIN, "reload", "-c", gw_config});
  CHECK(gw_reload.exit_code == 0);
  CHECK(wait_until(
      [&] { return count_of(gateway.log(), "reload: [limits] in use: per device 0") == 1; }, 10));

  // 5. A source removed and one changed: the spool source stops; the MQTT source gets a new
  //    setting, so its session is made again (the broker keeps the readings meanwhile, the
  //    session being persistent); the log level changes; the HTTP source is not touched.
  REQUIRE(wait_until([&] { return std::filesystem::exists(spool + "/done/orders.ndjson"); }, 30));
  std::string third = next_text;
  third.replace(third.find("[sources.spool]"), std::string::npos, "");
  third += "max_uncommitted = 500\n";  // the last table is [sources.mqtt]
  third.replace(third.find("[buffer]"), 8, "log_level = \"debug\"\n[buffer]");
  write_file(config, third);
  reload = run({OUTPOST_AGENT_BIN, "reload", "--config", config});
  CHECK_MESSAGE(reload.exit_code == 0, reload.err);
  CHECK_MESSAGE(wait_until([&] { return count_of(agent_log(), "connected to tcp://") == 2; }, 15),
                agent_log());
  log = agent_log();
  CHECK(log.find("reload: sources.spool stopped") != std::string::npos);
  CHECK(log.find("reload: sources.mqtt restarted with its new settings") != std::string::npos);
  CHECK(log.find("reload: agent.log_level debug") != std::string::npos);
  CHECK(log.find("sources.http restarted") == std::string::npos);

  // 6. Reconciled: everything accepted is in the sink once.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const LoadCounts hits = pixels.stop();
  readings.stop();
  CHECK(hits.unanswered == 0);
  CHECK(hits.connections == 2);  // the HTTP source kept its connections through the reloads
  CHECK(readings.failed() == 0);
  const uint64_t expected = hits.total_2xx() + readings.published() + kSpoolLines;
  MESSAGE(hits.total_2xx() << " pixel hits, " << readings.published() << " readings, "
                           << kSpoolLines << " spool lines accepted");
  std::map<std::string, uint64_t> by_kind;
  std::set<uint64_t> seqs;
  uint64_t twice = 0;
  auto count_sink = [&] {
    by_kind.clear();
    seqs.clear();
    twice = 0;
    bool frames_ok = false;
    for (const auto& l : read_sink(gateway.sink_dir(), &frames_ok)) {
      ++by_kind[l.kind];
      if (!seqs.insert(l.seq).second) ++twice;
    }
    return seqs.size();
  };
  CHECK_MESSAGE(wait_until([&] { return pending(buffer) == 0 && count_sink() >= expected; }, 60),
                agent_log());
  count_sink();
  CHECK(twice == 0);
  CHECK(seqs.size() == expected);
  CHECK(by_kind["pixel"] == hits.total_2xx());
  CHECK(by_kind["sensor"] == readings.published());
  CHECK(by_kind["json"] == static_cast<uint64_t>(kSpoolLines));
  CHECK(std::filesystem::exists(spool + "/done/orders.ndjson"));
  // No session failed: the move waited for the batches in flight.
  CHECK_MESSAGE(agent_log().find("next attempt") == std::string::npos, agent_log());

  // 7. A changed source that cannot start (its new port is taken): refused with the reason,
  //    and started again with its old settings, which go on taking hits.
  int busy = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(busy, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(busy, 1) == 0);
  socklen_t len = sizeof a;
  ::getsockname(busy, reinterpret_cast<sockaddr*>(&a), &len);
  std::string fourth = third;
  fourth.replace(fourth.find("127.0.0.1:" + std::to_string(http_port)),
                 10 + std::to_string(http_port).size(),
                 "127.0.0.1:" + std::to_string(ntohs(a.sin_port)));
  write_file(config, fourth);
  reload = run({OUTPOST_AGENT_BIN, "reload", "--config", config});
  CHECK_MESSAGE(reload.exit_code == 0, reload.err);
  CHECK_MESSAGE(wait_until(
                    [&] {
                      return agent_log().find("sources.http: the new settings cannot start") !=
                             std::string::npos;
                    },
                    15),
                agent_log());
  CHECK(agent_log().find("sources.http: stopped") == std::string::npos);
  CHECK(http_get(http_port, "/p.gif?site=s1").find("200 OK") != std::string::npos);
  ::close(busy);
  // That hit too is in the sink, once.
  CHECK(wait_until([&] { return count_sink() == expected + 1; }, 30));
  CHECK(twice == 0);
  CHECK(by_kind["pixel"] == hits.total_2xx() + 1);
  ::kill(agent.pid(), SIGTERM);
  CHECK(agent.wait() == 0);
}
