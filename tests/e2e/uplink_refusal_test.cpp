// Every refusal the gateway must make, against the real process: each bad peer is refused
// with a clear reason (audit log, Goodbye or Ack, metrics), the gateway stays up, and an
// honest agent connected all along keeps getting its batches acknowledged.
#include <doctest/doctest.h>

#include "common/codec/zstd_codec.hpp"
#include "outpost/v1/event.pb.h"
#include "proto/event_codec.hpp"
#include "tests/e2e/uplink_support.hpp"
#include "tests/support/uplink_client.hpp"

using namespace outpost;
using namespace outpost::test;

namespace {

std::shared_ptr<tls::TlsContext> client_ctx(const std::string& ca, const std::string& cert,
                                            const std::string& key,
                                            const std::string& max_version = "") {
  tls::ContextOptions o;
  o.role = tls::Role::client;
  o.files = {ca, cert, key, ""};
  o.server_name = "localhost";
  o.max_version_for_tests = max_version;
  auto c = tls::TlsContext::create(o);
  REQUIRE_MESSAGE(c, (c ? "" : c.error().message));
  return *c;
}

v1::Frame batch_frame(const std::string& agent, uint64_t batch_seq, uint64_t first, uint64_t n) {
  return json_batch_frame(agent, batch_seq, first, n);
}

// An established, well-behaved session (Hello done).
struct Session {
  UplinkClient client;
  std::string agent;
  uint64_t batch_seq = 0;
  uint64_t seq = 1;

  Session(uint16_t port, const Pki& pki, const std::string& device) : agent(device) {
    REQUIRE(client.connect(port));
    auto hs = client.handshake(client_ctx(pki.main + "/ca.crt", pki.main + "/" + device + ".crt",
                                          pki.main + "/" + device + ".key"));
    REQUIRE_MESSAGE(hs, (hs ? "" : hs.error().message));
    auto w = client.hello(device);
    REQUIRE_MESSAGE(w, (w ? "" : w.error().message));
    REQUIRE(w->has_welcome());
    CHECK(w->welcome().identity() == device);
  }
  // Sends a batch and returns the answer.
  v1::Frame send(const v1::Frame& batch) {
    REQUIRE(client.send_frame(batch));
    auto f = client.next_frame(10'000);
    REQUIRE_MESSAGE(f, (f ? "" : f.error().message));
    REQUIRE(*f);
    return **f;
  }
  // The honest agent's check: one more batch, acknowledged ok.
  void still_served() {
    auto a = send(batch_frame(agent, ++batch_seq, seq, 10));
    REQUIRE(a.has_ack());
    CHECK(a.ack().status() == v1::Ack::OK);
    seq += 10;
  }
};

// The Goodbye (or REJECTED ack then Goodbye) the gateway sends before closing.
std::string refusal_reason(UplinkClient& c) {
  std::string reasons;
  for (int i = 0; i < 3; ++i) {
    auto f = c.next_frame(5000);
    if (!f || !*f) break;
    if ((*f)->has_ack()) reasons += "ack:" + (*f)->ack().reason() + ";";
    if ((*f)->has_goodbye()) reasons += "goodbye:" + (*f)->goodbye().reason() + ";";
  }
  return reasons;
}

// Opens `cap` connections, which the gateway accepts, then one more, which it closes at once
// (a connection cap); the first ones stay open. Returns them, still held.
std::vector<std::unique_ptr<UplinkClient>> fill_to_cap(uint16_t port, int cap) {
  std::vector<std::unique_ptr<UplinkClient>> held;
  for (int i = 0; i < cap; ++i) {
    held.push_back(std::make_unique<UplinkClient>());
    REQUIRE(held.back()->connect(port));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // all accepted
  UplinkClient one_more;
  REQUIRE(one_more.connect(port));
  CHECK(one_more.closed_within(2000));
  CHECK_FALSE(held.front()->closed_within(200));
  return held;
}

}  // namespace

TEST_CASE("bad peers are refused, the gateway stays up, and an honest agent is unaffected") {
  raise_fd_limit();
  Pki pki;
  TempDir dir;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, dir.path(), port,
                      "[limits]\nhandshake_timeout = \"1s\"\nmax_connections = 5000\n"
                      "max_connections_per_ip = 5000\nmax_pending_handshakes = 5000\n"
                      "max_frame_bytes = \"1MiB\"\n"
                      "max_decompressed_bytes = \"8MiB\"\n");
  gateway.start();
  Session honest(port, pki, "device-2");
  honest.still_served();
  auto alive = [&] {
    CHECK(http_get(gateway.http_port(), "/healthz").find("200 OK") != std::string::npos);
    honest.still_served();
  };

  SUBCASE("all refusals, in one gateway's life") {
    {  // plain TCP, no TLS
      UplinkClient c;
      REQUIRE(c.connect(port));
      c.send_raw("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      CHECK(c.closed_within(3000));
    }
    alive();
    {  // no client certificate
      UplinkClient c;
      REQUIRE(c.connect(port));
      auto hs = c.handshake(client_ctx(pki.main + "/ca.crt", "", ""));
      CHECK_FALSE((hs && c.hello("device-1")));
    }
    alive();
    {  // a certificate from another CA
      UplinkClient c;
      REQUIRE(c.connect(port));
      auto hs = c.handshake(client_ctx(pki.main + "/ca.crt", pki.other + "/device-1.crt",
                                       pki.other + "/device-1.key"));
      CHECK_FALSE((hs && c.hello("device-1")));
    }
    alive();
    {  // an expired certificate
      UplinkClient c;
      REQUIRE(c.connect(port));
      auto hs = c.handshake(client_ctx(pki.main + "/ca.crt", pki.main + "/device-old.crt",
                                       pki.main + "/device-old.key"));
      CHECK_FALSE((hs && c.hello("device-old")));
    }
    alive();
    {  // TLS 1.1 only
      UplinkClient c;
      REQUIRE(c.connect(port));
      auto hs = c.handshake(client_ctx(pki.main + "/ca.crt", pki.main + "/device-1.crt",
                                       pki.main + "/device-1.key", "1.1"));
      CHECK_FALSE(hs);
    }
    alive();
    {  // agent-id mismatch: device-1's certificate claiming to be device-3
      UplinkClient c;
      REQUIRE(c.connect(port));
      REQUIRE(c.handshake(client_ctx(pki.main + "/ca.crt", pki.main + "/device-1.crt",
                                     pki.main + "/device-1.key")));
      auto answer = c.hello("device-3");
      REQUIRE_MESSAGE(answer, (answer ? "" : answer.error().message));
      REQUIRE(answer->has_goodbye());
      CHECK(answer->goodbye().reason().find("does not match") != std::string::npos);
      CHECK(c.closed_within(3000));
    }
    alive();
    {  // a frame length far above max_frame_bytes
      Session s(port, pki, "device-1");
      s.client.send_plain(std::string("\x7f\xff\xff\xff", 4));
      CHECK(refusal_reason(s.client).find("exceeds the limit") != std::string::npos);
    }
    alive();
    {  // garbage instead of a protobuf Frame
      Session s(port, pki, "device-1");
      s.client.send_plain(std::string("\x00\x00\x00\x06\xff\xff\xff\xff\xff\xff", 10));
      CHECK(refusal_reason(s.client).find("not an outpost.v1.Frame") != std::string::npos);
    }
    alive();
    {  // a truncated frame, then the connection ends
      Session s(port, pki, "device-1");
      std::string whole = wire::encode_frame(batch_frame("device-1", 1, 1, 50));
      s.client.send_plain(whole.substr(0, whole.size() / 2));
      s.client.close();
    }
    alive();
    {  // corrupt zstd
      Session s(port, pki, "device-1");
      v1::Frame f = batch_frame("device-1", 1, 1, 5);
      f.mutable_batch()->set_payload("this is not a zstd frame at all");
      auto answer = s.send(f);
      REQUIRE(answer.has_ack());
      CHECK(answer.ack().status() == v1::Ack::REJECTED);
      CHECK(answer.ack().reason().find("magic") != std::string::npos);
    }
    alive();
    {  // a decompression bomb: 100 MiB of zeros in a few KiB
      Session s(port, pki, "device-1");
      v1::Frame f = batch_frame("device-1", 1, 1, 5);
      codec::Compressor c(1);
      f.mutable_batch()->set_payload(*c.compress(std::string(100u << 20, '\0')));
      CHECK(f.batch().payload().size() < 100'000);
      auto answer = s.send(f);
      REQUIRE(answer.has_ack());
      CHECK(answer.ack().status() == v1::Ack::REJECTED);
      CHECK(answer.ack().reason().find("above the limit") != std::string::npos);
    }
    alive();
    {  // a connection that never speaks is closed at the handshake timeout
      UplinkClient c;
      REQUIRE(c.connect(port));
      CHECK(c.closed_within(4000));
    }
    alive();
    {  // 2,000 idle connections: the honest agent is still served meanwhile
      std::vector<std::unique_ptr<UplinkClient>> idle;
      for (int i = 0; i < 2000; ++i) {
        idle.push_back(std::make_unique<UplinkClient>());
        REQUIRE(idle.back()->connect(port));
      }
      alive();
      size_t closed = 0;
      for (auto& c : idle) closed += c->closed_within(5000);
      CHECK(closed == 2000);
    }
    alive();
    {  // openssl s_client, an independent TLS client: refused without a client certificate
      auto without = run({"/bin/sh", "-c",
                          "openssl s_client -connect 127.0.0.1:" + std::to_string(port) +
                              " -CAfile " + pki.main +
                              "/ca.crt -servername localhost 2>&1 "
                              "</dev/null"});
      CHECK((without.out.find("alert") != std::string::npos ||
             without.out.find("unexpected eof") != std::string::npos ||
             without.out.find("errno") != std::string::npos));
      auto with = run({"/bin/sh", "-c",
                       "sleep 1 | openssl s_client -connect 127.0.0.1:" + std::to_string(port) +
                           " -CAfile " + pki.main + "/ca.crt -cert " + pki.main +
                           "/device-1.crt -key " + pki.main + "/device-1.key 2>&1"});
      CHECK(with.out.find("Cipher is ECDHE-ECDSA-CHACHA20-POLY1305") != std::string::npos);
      CHECK(with.out.find("Verify return code: 0 (ok)") != std::string::npos);
    }
    alive();

    const std::string m = http_get(gateway.http_port(), "/metrics");
    CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"certificate\"}") >= 4);
    CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"handshake\"}") >= 2);
    CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"agent_id_mismatch\"}") == 1);
    CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"frame_too_large\"}") == 1);
    CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"bad_frame\"}") == 1);
    CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"truncated_frame\"}") == 1);
    CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"corrupt_payload\"}") == 1);
    CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"decompression_limit\"}") == 1);
    CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"handshake_timeout\"}") >= 2001);
    const std::string log = gateway.log();
    CHECK(log.find("Certificate was missing") != std::string::npos);
    CHECK(log.find("expired") != std::string::npos);
    CHECK(log.find("not correctly signed by the trusted CA") != std::string::npos);
    CHECK(log.find("claims agent id \"device-3\"") != std::string::npos);
    CHECK(log.find("suppressed") != std::string::npos);  // the audit log is rate-limited
  }
  CHECK(gateway.stop() == 0);
}

TEST_CASE("audit lines name whose certificate was refused and why; refused clients get an alert") {
  Pki pki;
  TempDir dir;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, dir.path(), port);
  gateway.start();
  {  // an expired certificate: its subject and serial, although verification failed
    UplinkClient c;
    REQUIRE(c.connect(port));
    auto hs = c.handshake(client_ctx(pki.main + "/ca.crt", pki.main + "/device-old.crt",
                                     pki.main + "/device-old.key"));
    CHECK_FALSE((hs && c.hello("device-old")));
  }
  // A client that speaks only TLS 1.3.
  auto tls13 = run({"/bin/sh", "-c",
                    "openssl s_client -tls1_3 -connect 127.0.0.1:" + std::to_string(port) +
                        " -CAfile " + pki.main + "/ca.crt -cert " + pki.main +
                        "/device-1.crt -key " + pki.main + "/device-1.key 2>&1 </dev/null"});
  CHECK_MESSAGE(tls13.out.find("SSL alert number") != std::string::npos, tls13.out);
  // No client certificate: a TLS alert, not a bare close.
  auto without = run({"/bin/sh", "-c",
                      "openssl s_client -connect 127.0.0.1:" + std::to_string(port) + " -CAfile " +
                          pki.main + "/ca.crt 2>&1 </dev/null"});
  CHECK_MESSAGE(without.out.find("alert bad certificate") != std::string::npos, without.out);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(gateway.stop() == 0);
  const std::string log = gateway.log();
  const std::string serial =
      run({"/usr/bin/openssl", "x509", "-noout", "-serial", "-in", pki.main + "/device-old.crt"})
          .out;
  CHECK_MESSAGE(log.find("subject=\"CN=device-old\" serial=") != std::string::npos, log);
  CHECK(log.find("subject=\"CN=device-old\" serial=-") == std::string::npos);
  CHECK(log.find("The certificate validity has expired") != std::string::npos);
  CHECK(serial.find("serial=") == 0);
  CHECK(log.find("protocol version: the peer offers only TLS 1.3") != std::string::npos);
  CHECK(log.find("no ciphersuites in common") == std::string::npos);
}

TEST_CASE("a newer session of a device replaces the older one") {
  Pki pki;
  TempDir dir;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, dir.path(), port);
  gateway.start();
  Session older(port, pki, "device-1");
  older.still_served();
  Session newer(port, pki, "device-1");
  auto bye = older.client.next_frame(5000);
  REQUIRE(bye);
  REQUIRE(*bye);
  REQUIRE((*bye)->has_goodbye());
  CHECK((*bye)->goodbye().reason().find("replaced") != std::string::npos);
  CHECK(older.client.closed_within(3000));
  newer.seq = older.seq;  // the device continues where it was
  newer.still_served();
  const std::string m = http_get(gateway.http_port(), "/metrics");
  CHECK(metric(m, "outpost_gateway_sessions_total{result=\"replaced\"}") == 1);
  CHECK(gateway.stop() == 0);
}

TEST_CASE("per-IP connection cap, idle timeout and max events per batch, each with its reason") {
  Pki pki;
  TempDir dir;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, dir.path(), port,
                      "[limits]\nmax_connections_per_ip = 3\nidle_timeout = \"700ms\"\n"
                      "max_events_per_batch = 100\n");
  gateway.start();
  {  // a batch over max_events_per_batch is rejected, naming the limit
    Session s(port, pki, "device-1");
    auto answer = s.send(batch_frame("device-1", 1, 1, 101));
    REQUIRE(answer.has_ack());
    CHECK(answer.ack().status() == v1::Ack::REJECTED);
    CHECK(answer.ack().reason().find("max_events_per_batch 100") != std::string::npos);
  }
  {  // an established session that sends nothing is closed at the idle timeout
    Session s(port, pki, "device-1");
    auto bye = s.client.next_frame(5000);
    REQUIRE(bye);
    REQUIRE(*bye);
    REQUIRE((*bye)->has_goodbye());
    CHECK((*bye)->goodbye().reason().find("idle") != std::string::npos);
  }
  {  // the fourth connection from one address is closed at once
    // Once the sessions above are gone from the gateway's count (their close races the next
    // connects under load: a run saw a held one refused in their place).
    for (int i = 0; i < 100; ++i) {
      if (metric(http_get(gateway.http_port(), "/metrics"), "outpost_gateway_connections") == 0) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    auto held = fill_to_cap(port, 3);
  }
  const std::string m = http_get(gateway.http_port(), "/metrics");
  CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"too_many_events\"}") == 1);
  CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"idle_timeout\"}") >= 1);
  CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"max_connections_per_ip\"}") == 1);
  CHECK(gateway.stop() == 0);
}

// A batch refused at once (here by the device rate limit) must not be overtaken by a later
// batch of the same window: for a device the sink has no mark for yet, writing the later one
// would make the refused one's events look like duplicates when they come again.
TEST_CASE("a batch refused by the rate limit is not overtaken by the next one of its window") {
  Pki pki;
  TempDir dir;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, dir.path(), port,
                      "[limits]\ndevice_events_per_second = 40\ndevice_burst_events = 150\n");
  gateway.start();
  {  // a corrupt batch claiming 150 events spends the device's tokens and writes nothing
    Session s(port, pki, "device-1");
    v1::Frame bad = batch_frame("device-1", 1, 1, 150);
    bad.mutable_batch()->set_payload("not zstd at all");
    auto a = s.send(bad);
    REQUIRE(a.has_ack());
    CHECK(a.ack().status() == v1::Ack::REJECTED);
  }
  Session s(port, pki, "device-1");
  std::this_thread::sleep_for(std::chrono::seconds(1));  // about 40 tokens: 10 events fit
  auto first = s.send(batch_frame("device-1", 1, 1, 100));
  REQUIRE(first.has_ack());
  CHECK(first.ack().status() == v1::Ack::RETRY_LATER);
  CHECK(first.ack().reason() == "device rate limit");
  auto second = s.send(batch_frame("device-1", 2, 101, 10));
  REQUIRE(second.has_ack());
  CHECK(second.ack().status() == v1::Ack::RETRY_LATER);
  CHECK(second.ack().reason().find("send the missing seqs first") != std::string::npos);
  // The device sends both again, in order, once it has the tokens: all 110 arrive once.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  CHECK(s.send(batch_frame("device-1", 3, 1, 100)).ack().status() == v1::Ack::OK);
  CHECK(s.send(batch_frame("device-1", 4, 101, 10)).ack().status() == v1::Ack::OK);
  s.client.close();
  CHECK(gateway.stop() == 0);
  check_file_sink_exactly_once(gateway.sink_dir(), "device-1", 110);
}

TEST_CASE("the total connection cap refuses one more, and frees a place when one closes") {
  Pki pki;
  TempDir dir;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, dir.path(), port,
                      "[limits]\nmax_connections = 3\nmax_connections_per_ip = 100\n");
  gateway.start();
  auto held = fill_to_cap(port, 3);
  held.front()->close();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the gateway sees it go
  Session s(port, pki, "device-1");  // a place is free again: a whole session works
  s.still_served();
  const std::string m = http_get(gateway.http_port(), "/metrics");
  CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"max_connections\"}") == 1);
  CHECK(gateway.stop() == 0);
}
