// The HTTP source with real clients: curl for well-formed requests, raw sockets for malformed
// and slow ones, and a real outpost-agent process killed with SIGKILL right after a sync 2xx.
#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include "agent/buffer/buffer_inspector.hpp"
#include "agent/buffer/sqlite_buffer.hpp"
#include "agent/sources/http/http_source.hpp"
#include "outpost/v1/event.pb.h"
#include "tests/e2e/uplink_support.hpp"
#include "tests/support/http_load.hpp"
#include "tests/support/uplink_client.hpp"

using namespace outpost;
using namespace outpost::agent;
using namespace outpost::test;

namespace {

struct Fixture {
  TempDir dir;
  SystemClock clock;
  std::unique_ptr<SqliteBuffer> buffer;
  std::unique_ptr<HttpSource> source;
  std::string base;

  explicit Fixture(HttpSourceOptions o = {}, uint64_t max_bytes = 1u << 30) {
    BufferOptions b;
    b.path = dir.file("buffer.db");
    b.agent_id = "http-test";
    b.max_bytes = max_bytes;
    b.synchronous = Synchronous::normal;
    auto opened = SqliteBuffer::open(b, clock);
    REQUIRE(opened);
    buffer = std::move(*opened);
    o.host = "127.0.0.1";
    o.port = 0;
    auto started = HttpSource::start(o, *buffer, clock);
    REQUIRE_MESSAGE(started, (started ? "" : started.error().message));
    source = std::move(*started);
    base = "http://127.0.0.1:" + std::to_string(source->port());
  }

  // The events in the buffer once `n` are there (waits up to 5 s).
  std::vector<v1::Event> events(size_t n) {
    std::vector<v1::Event> out;
    for (int i = 0; i < 100; ++i) {
      auto batch = buffer->read_batch(0, 10'000, 1u << 30);
      REQUIRE(batch);
      if (batch->size() >= n) {
        for (const auto& e : *batch) {
          v1::Event ev;
          REQUIRE(ev.ParseFromString(e.body));
          out.push_back(std::move(ev));
        }
        return out;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL("fewer than " << n << " events reached the buffer");
    return out;
  }
};

Output curl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/curl", "-s", "-S", "-D", "-", "--max-time", "10"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

}  // namespace

TEST_CASE(
    "privacy rules: truncation, salted hash, drop, and X-Forwarded-For from trusted proxies only") {
  CHECK(anonymize_ip("198.51.100.77", IpMode::truncate, "") == "198.51.100.0");
  CHECK(anonymize_ip("2001:db8:abcd:1234::1", IpMode::truncate, "") == "2001:db8:abcd::");
  CHECK(anonymize_ip("::ffff:198.51.100.77", IpMode::truncate, "") == "198.51.100.0");
  CHECK(anonymize_ip("198.51.100.77", IpMode::drop, "") == "");
  const std::string h1 = anonymize_ip("198.51.100.77", IpMode::hash, "salt-salt-salt-1");
  CHECK(h1.size() == 32);
  CHECK(h1 == anonymize_ip("198.51.100.77", IpMode::hash, "salt-salt-salt-1"));
  CHECK(h1 != anonymize_ip("198.51.100.77", IpMode::hash, "salt-salt-salt-2"));
  CHECK(h1.find("198") == std::string::npos);
  const std::vector<std::string> trusted = {"127.0.0.1", "10.0.0.1"};
  CHECK(client_address("127.0.0.1", "203.0.113.9, 10.0.0.1", trusted) == "203.0.113.9");
  CHECK(client_address("192.0.2.5", "203.0.113.9", trusted) == "192.0.2.5");  // not trusted
  CHECK(client_address("127.0.0.1", "not-an-ip", trusted) == "127.0.0.1");
}

TEST_CASE("the pixel: image bytes and headers at once, and every field of the hit recorded") {
  HttpSourceOptions o;
  o.cookie_name = "uid";
  o.trusted_proxies = {"127.0.0.1"};
  Fixture f(o);
  auto gif = curl({"-H", "User-Agent: TestBrowser/1.0", "-H", "Referer: https://shop.example/cart",
                   "-H", "Accept-Language: de-CH", "-H", "Cookie: a=1; uid=abc123", "-H",
                   "X-Forwarded-For: 203.0.113.77",
                   f.base + "/p.gif?site=shop-1&utm_source=news%20letter&empty"});
  REQUIRE(gif.exit_code == 0);
  CHECK(gif.out.find("HTTP/1.1 200 OK") == 0);
  CHECK(gif.out.find("Content-Type: image/gif") != std::string::npos);
  CHECK(gif.out.find("Cache-Control: no-store") != std::string::npos);
  CHECK(gif.out.find("Content-Length: 43") != std::string::npos);
  CHECK(gif.out.find("GIF89a") != std::string::npos);
  auto png = curl({f.base + "/p.png"});
  CHECK(png.out.find("Content-Type: image/png") != std::string::npos);
  CHECK(png.out.find("Content-Length: 67") != std::string::npos);
  CHECK(png.out.find("\x89PNG") != std::string::npos);

  auto events = f.events(2);
  REQUIRE(events.size() == 2);
  const v1::Event& e = events[0];
  CHECK(e.kind() == v1::EVENT_KIND_PIXEL);
  CHECK(e.schema() == "pixel.v1");
  CHECK(e.event_time() > 0);
  const v1::PixelHit& hit = e.pixel();
  CHECK(hit.site_id() == "shop-1");
  CHECK(hit.query().at("utm_source") == "news letter");
  CHECK(hit.query().at("empty") == "");
  CHECK(hit.user_agent() == "TestBrowser/1.0");
  CHECK(hit.referer() == "https://shop.example/cart");
  CHECK(hit.accept_language() == "de-CH");
  CHECK(hit.client_ip() == "203.0.113.0");  // forwarded by a trusted proxy, truncated
  CHECK(hit.cookie_id() == "abc123");
  CHECK(hit.path() == "/p.gif");
  CHECK(events[1].pixel().path() == "/p.png");
  CHECK(events[1].pixel().client_ip() == "127.0.0.0");
}

TEST_CASE("the pixel on a raw socket: HEAD has no body, HTTP/1.0 closes, keep-alive serves two") {
  Fixture f;
  // Sends `request` on a new connection and reads for 2 s or until the peer closes; returns
  // the bytes and whether it closed.
  auto exchange = [&](const std::string& request) {
    UplinkClient c;
    REQUIRE(c.connect(f.source->port()));
    c.send_raw(request);
    std::pair<std::string, bool> out{"", false};
    for (int i = 0; i < 40 && !out.second; ++i) {
      auto got = c.receive_raw(50);
      if (got) out.first += *got;
      out.second = !got;
    }
    return out;
  };
  {
    const auto [got, closed] = exchange("HEAD /p.gif?site=h HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(got.find("HTTP/1.1 200 OK\r\n") == 0);
    CHECK(got.find("Content-Length: 43\r\n") != std::string::npos);
    CHECK(got.size() == got.find("\r\n\r\n") + 4);  // headers only: no image after them
    CHECK_FALSE(closed);                            // HTTP/1.1: kept alive
  }
  {
    const auto [got, closed] = exchange("GET /p.png?site=old HTTP/1.0\r\nHost: x\r\n\r\n");
    CHECK(got.find("HTTP/1.0 200 OK\r\n") == 0);
    CHECK(got.find("Content-Type: image/png\r\n") != std::string::npos);
    CHECK(got.size() == got.find("\r\n\r\n") + 4 + 67);
    CHECK(closed);  // HTTP/1.0 without keep-alive
  }
  {
    const auto [got, closed] = exchange(
        "GET /p.gif?site=a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        "GET /p.gif?site=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    const size_t second = got.find("HTTP/1.1 200 OK");
    CHECK(got.find("HTTP/1.0 200 OK\r\n") == 0);
    CHECK(got.find("Connection: keep-alive\r\n") < second);
    REQUIRE(second != std::string::npos);
    CHECK(got.find("Connection: close\r\n", second) != std::string::npos);
    CHECK(got.size() == second + got.substr(second).find("\r\n\r\n") + 4 + 43);
    CHECK(closed);
  }
  auto events = f.events(4);
  REQUIRE(events.size() == 4);
  CHECK(events[0].pixel().site_id() == "h");  // HEAD counts as a hit, like GET
  CHECK(events[1].pixel().path() == "/p.png");
  CHECK(events[2].pixel().site_id() == "a");
  CHECK(events[3].pixel().site_id() == "b");
}

TEST_CASE("DNT / Sec-GPC: the image, but no event, when configured") {
  HttpSourceOptions o;
  o.honor_privacy_signals = true;
  o.ip_mode = IpMode::drop;
  Fixture f(o);
  auto dnt = curl({"-H", "DNT: 1", f.base + "/p.gif"});
  CHECK(dnt.out.find("Content-Type: image/gif") != std::string::npos);
  auto gpc = curl({"-H", "Sec-GPC: 1", f.base + "/p.gif"});
  CHECK(gpc.out.find("Content-Type: image/gif") != std::string::npos);
  curl({f.base + "/p.gif"});
  auto events = f.events(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(f.events(1).size() == 1);
  CHECK(events[0].pixel().client_ip() == "");  // dropped
  CHECK(f.source->counters().pixel_suppressed == 2);
}

TEST_CASE("POST /v1/events: one object or an array, schema from a field, 202 or sync 201") {
  Fixture f;
  auto r = curl({"-X", "POST", "-H", "Content-Type: application/json", "--data",
                 R"([{"schema":"order.v1","n":1}, {"n":2}])", f.base + "/v1/events"});
  CHECK(r.out.find("HTTP/1.1 202") == 0);
  CHECK(r.out.find("\"accepted\":2") != std::string::npos);
  auto s = curl({"-X", "POST", "-H", "Content-Type: application/json; charset=utf-8", "--data",
                 R"({"schema":"click.v2","x":[1,2,{"y":"z"}]})", f.base + "/v1/events?sync=true"});
  CHECK(s.out.find("HTTP/1.1 201") == 0);
  CHECK(s.out.find("\"durable\":true") != std::string::npos);
  CHECK(s.out.find("\"last_seq\":3") != std::string::npos);
  auto events = f.events(3);
  REQUIRE(events.size() == 3);
  CHECK(events[0].schema() == "order.v1");
  CHECK(events[0].json() == R"({"schema":"order.v1","n":1})");
  CHECK(events[1].schema() == "json");
  CHECK(events[2].schema() == "click.v2");
  CHECK(events[2].kind() == v1::EVENT_KIND_JSON);
}

TEST_CASE("each refusal has its status and a message naming the problem") {
  HttpSourceOptions o;
  o.max_body_bytes = 2048;
  o.max_header_bytes = 2048;
  o.max_events_per_request = 3;
  o.cors_origins = {"https://shop.example"};
  Fixture f(o);
  auto post = [&](const std::string& type, const std::string& body,
                  const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"-X", "POST", "-H", "Content-Type: " + type, "--data-binary",
                                     body};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(f.base + "/v1/events");
    return curl(args).out;
  };
  std::string bad = post("application/json", R"({"n": 1,})");
  CHECK(bad.find("HTTP/1.1 400") == 0);
  CHECK(bad.find("not valid JSON") != std::string::npos);
  CHECK(post("application/json", "[1, 2]").find("element 0 is not a JSON object") !=
        std::string::npos);
  CHECK(post("application/json", "[{},{},{},{}]").find("more than 3 events") != std::string::npos);
  std::string type = post("application/xml", "{}");
  CHECK(type.find("HTTP/1.1 415") == 0);
  CHECK(type.find("must be application/json or text/plain") != std::string::npos);
  // A beacon's type: text/plain (with a charset), still JSON inside.
  CHECK(post("text/plain;charset=UTF-8", "{\"b\":1}").find("HTTP/1.1 202") == 0);
  CHECK(post("text/plain", "not json").find("HTTP/1.1 400") == 0);
  CHECK(post("application/json", "{\"s\":\"\xff\xfe\"}").find("not valid UTF-8") !=
        std::string::npos);
  std::string big = post("application/json", "{\"x\":\"" + std::string(5000, 'a') + "\"}");
  CHECK(big.find("HTTP/1.1 413") == 0);
  auto header = curl({"-H", "X-Big: " + std::string(4000, 'h'), f.base + "/p.gif"});
  CHECK(header.out.find("HTTP/1.1 431") == 0);
  CHECK(curl({f.base + "/nowhere"}).out.find("HTTP/1.1 404") == 0);
  CHECK(curl({"-X", "DELETE", f.base + "/v1/events"}).out.find("HTTP/1.1 405") == 0);
  // CORS: an allowed origin gets the header, others are refused at the preflight.
  auto pre = curl({"-X", "OPTIONS", "-H", "Origin: https://shop.example", f.base + "/v1/events"});
  CHECK(pre.out.find("HTTP/1.1 204") == 0);
  CHECK(pre.out.find("Access-Control-Allow-Origin: https://shop.example") != std::string::npos);
  CHECK(pre.out.find("Access-Control-Allow-Credentials: true") != std::string::npos);
  auto evil = curl({"-X", "OPTIONS", "-H", "Origin: https://evil.example", f.base + "/v1/events"});
  CHECK(evil.out.find("HTTP/1.1 403") == 0);
  CHECK(post("application/json", "{}", {"-H", "Origin: https://shop.example"})
            .find("Access-Control-Allow-Origin: https://shop.example") != std::string::npos);
  // A malformed request line on a raw socket.
  UplinkClient raw;
  REQUIRE(raw.connect(f.source->port()));
  raw.send_raw("BLAH\r\n\r\n");
  auto answer = raw.receive_raw(3000);
  REQUIRE(answer);
  CHECK(answer->find("HTTP/1.1 400") == 0);
  CHECK(f.source->counters().bad_requests >= 9);
}

TEST_CASE("a full buffer: 503 with Retry-After, for sync and async alike") {
  Fixture f({}, /*max_bytes=*/64);  // json's policy is reject
  auto r = curl({"-X", "POST", "-H", "Content-Type: application/json", "--data",
                 "{\"x\":\"" + std::string(100, 'a') + "\"}", f.base + "/v1/events?sync=true"});
  CHECK(r.out.find("HTTP/1.1 503") == 0);
  CHECK(r.out.find("Retry-After: 1") != std::string::npos);
  CHECK(r.out.find("is full") != std::string::npos);
}

TEST_CASE("a client that never finishes its headers is closed; others are served meanwhile") {
  HttpSourceOptions o;
  o.header_timeout_ns = 1'000'000'000;
  Fixture f(o);
  UplinkClient slow;
  REQUIRE(slow.connect(f.source->port()));
  slow.send_raw("GET /p.gif HTTP/1.1\r\nHost: x\r\n");  // and then nothing
  const auto t0 = std::chrono::steady_clock::now();
  auto ok = curl({f.base + "/p.gif"});
  CHECK(ok.out.find("HTTP/1.1 200 OK") == 0);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(900));
  CHECK(slow.closed_within(3000));
}

TEST_CASE("sync=true: kill -9 right after the 2xx, and the events are in the buffer") {
  TempDir dir;
  const uint16_t port = free_port();
  write_file(dir.file("agent.toml"),
             "[agent]\nid = \"sync-test\"\nhttp_listen = \"\"\n[buffer]\npath = \"" +
                 dir.file("buffer.db") +
                 "\"\n[sources.http]\nenabled = true\nlisten = \"127.0.0.1:" +
                 std::to_string(port) + "\"\n");
  Child agent({std::string(OUTPOST_AGENT_BIN), "run", "--config", dir.file("agent.toml")});
  Output r;
  for (int i = 0; i < 100; ++i) {  // until the agent listens
    r = curl({"-X", "POST", "-H", "Content-Type: application/json", "--data",
              R"([{"k":1},{"k":2},{"k":3}])",
              "http://127.0.0.1:" + std::to_string(port) + "/v1/events?sync=true"});
    if (r.out.find("HTTP/1.1 201") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  agent.signal(SIGKILL);
  agent.wait();
  REQUIRE(r.out.find("HTTP/1.1 201") == 0);
  auto inspector = BufferInspector::open(dir.file("buffer.db"));
  REQUIRE(inspector);
  auto s = inspector->stats();
  REQUIRE(s);
  CHECK(s->pending_events == 3);
}

TEST_CASE(
    "threads = 3: connections served on three threads, every answered hit in the buffer, "
    "sync posts answered after they are durable") {
  HttpSourceOptions o;
  o.threads = 3;
  Fixture f(o);
  const uint16_t port = f.source->port();
  HttpLoad hits(port, "GET /p.gif?site=s1 HTTP/1.1\r\nHost: x\r\n\r\n", 6);
  const std::string body = R"({"schema":"order.v1","order_id":"t"})";
  HttpLoad posts(port,
                 "POST /v1/events?sync=true HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 "application/json\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body,
                 3);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const LoadCounts h = hits.stop();
  const LoadCounts p = posts.stop();
  f.source.reset();  // every handler done: what was answered is what was counted
  CHECK(h.total_2xx() > 100);
  CHECK(p.of(201) > 10);
  CHECK(h.unanswered + p.unanswered == 0);
  // A hit is answered when queued (its append may still be committing when the load stops):
  // every answered one is stored once the buffer has committed, and nothing else.
  const uint64_t answered = h.total_2xx() + p.of(201);
  auto stats = f.buffer->stats();
  for (int i = 0; i < 100 && stats && stats->pending_events < answered; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    stats = f.buffer->stats();
  }
  REQUIRE(stats);
  CHECK(stats->pending_events >= answered);
  CHECK(stats->pending_events <= h.total_2xx() + p.of(201) + 6 + 3);
}
