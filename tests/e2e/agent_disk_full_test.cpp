// The agent's buffer on a real, small tmpfs with the default settings, filled through the HTTP
// source by real clients while the gateway is down. Every answer is reconciled: each pixel hit
// served and each 202 is either stored or counted as dropped with a reason, exactly; refusals
// the client is told of (503) are neither. Then the gateway comes up, the full buffer drains
// and appends resume by themselves (docs/buffer.md, "A full disk").
// Needs permission to mount (root); exits 77 (skipped) without it.
#include <doctest/doctest.h>
#include <sys/mount.h>

#include <filesystem>
#include <set>

#include "agent/buffer/buffer_inspector.hpp"
#include "tests/e2e/uplink_support.hpp"
#include "tests/support/file_sink_reader.hpp"
#include "tests/support/http_load.hpp"

using namespace outpost;
using namespace outpost::test;

namespace {

struct Tally {
  uint64_t stored = 0;
  uint64_t dropped = 0;
  std::map<std::string, uint64_t> by_reason;
};

// Stored and dropped events of `kind`, from the buffer file.
Tally buffer_tally(const std::string& path, EventKind kind) {
  Tally t;
  auto inspector = agent::BufferInspector::open(path);
  REQUIRE(inspector);
  auto s = inspector->stats();
  REQUIRE(s);
  for (const auto& g : s->groups) t.stored += g.kind == kind ? g.events : 0;
  for (const auto& d : s->dropped) {
    if (d.kind != kind) continue;
    t.dropped += d.count;
    t.by_reason[std::string(agent::drop_reason_name(d.reason))] += d.count;
  }
  return t;
}

std::string http_request(const std::string& method, const std::string& path,
                         const std::string& body, const std::string& type) {
  return method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::string describe(const LoadCounts& c) {
  std::string s;
  for (const auto& [status, n] : c.by_status) {
    s += std::to_string(status) + ": " + std::to_string(n) + "  ";
  }
  return s + "unanswered: " + std::to_string(c.unanswered);
}

}  // namespace

TEST_CASE("a full tmpfs under HTTP load: every 2xx reconciled, then the buffer drains and heals") {
  Pki pki;
  TempDir gw_dir, agent_dir;
  const std::string disk = agent_dir.path() + "/disk";
  std::filesystem::create_directories(disk);
  if (::mount("tmpfs", disk.c_str(), "tmpfs", 0, "size=8m") != 0) {
    MESSAGE("cannot mount a tmpfs here (not root?): skipped");
    std::exit(77);
  }
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{disk};

  const uint16_t gateway_port = free_port();
  const uint16_t source_port = free_port();
  const uint16_t status_port = free_port();
  const std::string buffer = disk + "/buffer.db";
  const std::string config = agent_dir.file("agent.toml");
  // Every buffer setting at its default: only the path is given.
  write_file(config, "[agent]\nid = \"device-1\"\nhttp_listen = \"127.0.0.1:" +
                         std::to_string(status_port) + "\"\n[buffer]\npath = \"" + buffer +
                         "\"\n[uplink]\nendpoints = \"127.0.0.1:" + std::to_string(gateway_port) +
                         "\"\nserver_name = \"localhost\"\nca_file = \"" + pki.main +
                         "/ca.crt\"\ncert_file = \"" + pki.main + "/device-1.crt\"\nkey_file = \"" +
                         pki.main +
                         "/device-1.key\"\nbackoff_initial = \"50ms\"\nbackoff_max = \"500ms\"\n"
                         "[sources.http]\nenabled = true\nlisten = \"127.0.0.1:" +
                         std::to_string(source_port) + "\"\n");
  const std::string agent_log = agent_dir.file("agent.log");
  auto start_agent = [&] {
    return std::make_unique<Child>(std::vector<std::string>{
        "/bin/sh", "-c",
        "exec " + std::string(OUTPOST_AGENT_BIN) + " run --config " + config + " 2>>" + agent_log});
  };
  auto agent = start_agent();
  for (int i = 0; i < 100 && http_get(status_port, "/healthz").empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  // The gateway is down: the buffer fills up. Two clients hit the pixel, two POST events.
  const std::string pixel = "GET /p.gif?site=s1&page=%2Fhome HTTP/1.1\r\nHost: localhost\r\n\r\n";
  const std::string post = http_request(
      "POST", "/v1/events", R"({"schema":"order.v1","order":{"id":12345}})", "application/json");
  HttpLoad pixels(source_port, pixel, 2);
  HttpLoad posts(source_port, post, 2);
  std::string ready;
  const auto fill_end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < fill_end) {
    ready = http_get(status_port, "/readyz");
    if (ready.find(" 503 ") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK_MESSAGE(ready.find(" 503 ") != std::string::npos, ready);
  CHECK(ready.find("disk") != std::string::npos);
  std::this_thread::sleep_for(std::chrono::seconds(3));  // well into the refusals
  const std::string during = http_get(status_port, "/metrics");
  const LoadCounts pixel_counts = pixels.stop();
  const LoadCounts post_counts = posts.stop();
  MESSAGE("pixel: " << describe(pixel_counts));
  MESSAGE("POST: " << describe(post_counts));
  CHECK(metric(during, "outpost_agent_dropped_events_total{reason=\"disk_full\",kind=\"pixel\"}") >
        0);
  CHECK(post_counts.of(503) > 0);
  CHECK(pixel_counts.unanswered == 0);
  CHECK(post_counts.unanswered == 0);
  // Only 200 for the pixel; only 202 (queued) or 503 (refused, told) for the events.
  CHECK(pixel_counts.of(200) == pixel_counts.total_2xx());
  uint64_t post_answers = 0;
  for (const auto& [status, n] : post_counts.by_status) post_answers += n;
  CHECK(post_counts.of(202) + post_counts.of(503) == post_answers);

  // A clean stop finishes the writer's queue; then the file must account for every answer.
  agent->signal(SIGTERM);
  CHECK(agent->wait() == 0);
  Tally px = buffer_tally(buffer, EventKind::pixel);
  Tally js = buffer_tally(buffer, EventKind::json);
  MESSAGE("pixel: stored " << px.stored << ", dropped " << px.dropped);
  MESSAGE("json: stored " << js.stored << ", dropped " << js.dropped);
  CHECK_MESSAGE(px.stored + px.dropped == pixel_counts.of(200), read_text(agent_log));
  CHECK_MESSAGE(js.stored + js.dropped == post_counts.of(202), read_text(agent_log));
  CHECK(px.by_reason["disk_full"] > 0);

  // The gateway comes back: the backlog drains and appends work again, with the defaults.
  GatewayProc gateway(pki, gw_dir.path(), gateway_port);
  gateway.start();
  agent = start_agent();
  uint64_t backlog = 1;
  double acked = 0;
  const auto drain_end = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (std::chrono::steady_clock::now() < drain_end) {
    const std::string m = http_get(status_port, "/metrics");
    if (m.find("outpost_agent_backlog_events ") != std::string::npos) {
      backlog = static_cast<uint64_t>(metric(m, "outpost_agent_backlog_events"));
      acked = metric(m, "outpost_agent_uplink_events_acked_total");
      // The drop counters survived the restart.
      CHECK(metric(m, "outpost_agent_dropped_events_total{reason=\"disk_full\",kind=\"pixel\"}") ==
            static_cast<double>(px.by_reason["disk_full"]));
      if (backlog == 0) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  REQUIRE_MESSAGE(backlog == 0, read_text(agent_log));
  // Each stored event was sent about once, not in a loop.
  CHECK(acked <= static_cast<double>(px.stored + js.stored) * 1.5);
  CHECK(http_get(status_port, "/readyz").find(" 200 ") != std::string::npos);
  const std::string sync =
      http_request("POST", "/v1/events?sync=true", R"({"after":"heal"})", "application/json");
  HttpLoad one(source_port, sync, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const LoadCounts after = one.stop();
  CHECK(after.of(201) > 0);
  CHECK(after.of(503) == 0);
  for (int i = 0; i < 100; ++i) {  // until those have been sent too
    if (metric(http_get(status_port, "/metrics"), "outpost_agent_backlog_events") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  agent->signal(SIGTERM);
  CHECK(agent->wait() == 0);
  CHECK(gateway.stop() == 0);

  bool frames_ok = false;
  auto lines = read_sink(gateway.sink_dir(), &frames_ok);
  CHECK(frames_ok);
  std::set<uint64_t> seqs;
  uint64_t duplicates = 0;
  for (const auto& l : lines) duplicates += !seqs.insert(l.seq).second;
  CHECK(duplicates == 0);
  CHECK(seqs.size() == px.stored + js.stored + after.of(201));
}
