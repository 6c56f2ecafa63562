// navigator.sendBeacon from a real headless Chromium, on a page of another origin, to a real
// outpost-agent: a string beacon (sent as text/plain, no preflight) and a JSON Blob beacon
// (application/json: a credentialed CORS preflight) both become events.
// Skipped (77) when Debian's chromium is not installed.
#include <doctest/doctest.h>
#include <unistd.h>

#include "agent/buffer/buffer_inspector.hpp"
#include "outpost/v1/event.pb.h"
#include "tests/e2e/uplink_support.hpp"

using namespace outpost;
using namespace outpost::test;

TEST_CASE("sendBeacon from headless Chromium: text/plain and a JSON Blob, across origins") {
  if (::access("/usr/bin/chromium", X_OK) != 0) {
    MESSAGE("no /usr/bin/chromium: skipped");
    std::exit(77);
  }
  TempDir dir;
  const uint16_t agent_port = free_port();
  const uint16_t page_port = free_port();
  const std::string page_origin = "http://127.0.0.1:" + std::to_string(page_port);
  const std::string events = "http://127.0.0.1:" + std::to_string(agent_port) + "/v1/events";
  write_file(dir.file("agent.toml"),
             "[agent]\nid = \"beacon-test\"\nhttp_listen = \"\"\n[buffer]\npath = \"" +
                 dir.file("buffer.db") +
                 "\"\n[sources.http]\nenabled = true\nlisten = "
                 "\"127.0.0.1:" +
                 std::to_string(agent_port) + "\"\ncors_origins = \"" + page_origin + "\"\n");
  std::filesystem::create_directories(dir.file("site"));
  write_file(dir.file("site/index.html"),
             "<!doctype html><title>beacon</title><script>\n"
             "const a = navigator.sendBeacon('" +
                 events +
                 "', JSON.stringify({beacon: 'text'}));\n"
                 "const b = navigator.sendBeacon('" +
                 events +
                 "', new Blob([JSON.stringify("
                 "{beacon: 'blob'})], {type: 'application/json'}));\n"
                 "document.title = 'queued ' + a + ' ' + b;\n"
                 "</script>\n");
  Child agent({std::string(OUTPOST_AGENT_BIN), "run", "--config", dir.file("agent.toml")}, false);
  Child site({"/usr/bin/python3", "-m", "http.server", std::to_string(page_port), "--bind",
              "127.0.0.1", "--directory", dir.file("site")},
             false);
  for (int i = 0;
       i < 100 && (http_get(page_port, "/").empty() || http_get(agent_port, "/p.gif").empty());
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto browser =
      run({"/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--user-data-dir=" + dir.file("profile"), "--virtual-time-budget=3000",
           "--dump-dom", page_origin + "/index.html"});
  CHECK_MESSAGE(browser.out.find("queued true true") != std::string::npos,
                browser.out << browser.err);

  std::map<std::string, int> seen;
  for (int i = 0; i < 100 && seen.size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    seen.clear();
    auto inspector = agent::BufferInspector::open(dir.file("buffer.db"));
    if (!inspector) continue;
    (void)inspector->scan({}, [&](const agent::StoredEvent& e) {
      v1::Event ev;
      if (ev.ParseFromString(e.body) && ev.kind() == v1::EVENT_KIND_JSON) ++seen[ev.json()];
      return true;
    });
  }
  agent.signal(SIGTERM);
  CHECK(agent.wait() == 0);
  CHECK(seen[R"({"beacon":"text"})"] == 1);
  CHECK(seen[R"({"beacon":"blob"})"] == 1);
}
