// The gateway's sink on a full disk (a real, small tmpfs): batches are answered retry-later,
// /readyz says why it is not ready, nothing is lost, and it heals by itself when space returns.
// Needs permission to mount (root); exits 77 (skipped) without it.
#include <doctest/doctest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <filesystem>
#include <set>

#include "agent/buffer/buffer_inspector.hpp"
#include "tests/e2e/uplink_support.hpp"
#include "tests/support/file_sink_reader.hpp"

using namespace outpost;
using namespace outpost::test;

TEST_CASE(
    "a full sink disk: retry-later and /readyz 503, then every event once when space returns") {
  Pki pki;
  TempDir gw_dir, agent_dir;
  const std::string sink = gw_dir.path() + "/sink";
  std::filesystem::create_directories(sink);
  if (::mount("tmpfs", sink.c_str(), "tmpfs", 0, "size=4m") != 0) {
    MESSAGE("cannot mount a tmpfs here (not root?): skipped");
    std::exit(77);
  }
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{sink};

  const uint16_t port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), port);
  gateway.start();
  CHECK(http_get(gateway.http_port(), "/readyz").find("200 OK") != std::string::npos);
  // Leave about 100 KiB: far less than the events below need.
  struct statvfs fs {};
  REQUIRE(::statvfs(sink.c_str(), &fs) == 0);
  const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
  const std::string filler = sink + "/filler";
  write_file(filler, std::string(free_bytes - 100 * 1024, 'x'));

  AgentProc agent(pki, agent_dir.path(), port);
  agent.start({.events = 100'000, .rate = 50'000});
  std::string ready;
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < end) {
    ready = http_get(gateway.http_port(), "/readyz");
    if (ready.find("503") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE_MESSAGE(ready.find("503") != std::string::npos, gateway.log());
  CHECK(ready.find("No space left on device") != std::string::npos);
  CHECK_MESSAGE(ready.find("not ready: disk_full: ") != std::string::npos, ready);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const std::string m = http_get(gateway.http_port(), "/metrics");
  CHECK(metric(m, "outpost_gateway_batches_total{result=\"retry_later\"}") > 0);
  CHECK(metric(m, "outpost_gateway_sink_errors_total{code=\"disk_full\"}") > 0);

  std::filesystem::remove(filler);  // space returns
  end = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  uint64_t pending = 1;
  while (std::chrono::steady_clock::now() < end && pending != 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto inspector = agent::BufferInspector::open(agent.buffer_path());
    auto s = inspector ? inspector->stats() : Result<agent::BufferStats>(Error{});
    pending = s && s->next_seq == 100'001 ? s->pending_events : 1;
  }
  REQUIRE_MESSAGE(pending == 0, gateway.log());
  CHECK(http_get(gateway.http_port(), "/readyz").find("200 OK") != std::string::npos);
  agent.stop();
  CHECK(gateway.stop() == 0);

  bool frames_ok = false;
  auto lines = read_sink(sink, &frames_ok);
  CHECK(frames_ok);  // the failed groups were cut back: no torn frame is left
  std::set<uint64_t> seqs;
  uint64_t duplicates = 0;
  for (const auto& l : lines) duplicates += !seqs.insert(l.seq).second;
  CHECK(duplicates == 0);
  CHECK(seqs.size() == 100'000);
  CHECK((!seqs.empty() && *seqs.begin() == 1 && *seqs.rbegin() == 100'000));
}
