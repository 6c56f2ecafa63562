// Certificates rotated and revoked while real processes run (docs/install.md, "Rotating and
// revoking certificates"): the gateway's and a device's certificates renewed under load with
// zero failed batches and every event once; a bad key refused while the old pair keeps
// serving; a device revoked while connected cut off within the documented bound, refused at its
// next handshake, both audited with its serial, and its events reconciled: every seq it made is
// in the sink or still in its buffer, none twice.
#include <doctest/doctest.h>

#include <csignal>
#include <filesystem>
#include <set>
#include <sstream>

#include "agent/buffer/buffer_inspector.hpp"
#include "common/tls/certificate.hpp"
#include "tests/e2e/uplink_support.hpp"
#include "tests/support/buffer_probe.hpp"
#include "tests/support/file_sink_reader.hpp"
#include "tests/support/uplink_client.hpp"

using namespace outpost;
using namespace outpost::test;

namespace {

void make_certs(const Pki& pki, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {std::string(OUTPOST_SOURCE_DIR) + "/deploy/certs/make-certs",
                                   pki.main};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run(argv);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
}

std::string serial_of(const std::string& path) {
  auto c = tls::read_certificate(path);
  REQUIRE(c);
  return c->serial;
}

bool log_has(const ManagedProcess& p, const std::string& text, int seconds) {
  return wait_until([&] { return p.log().find(text) != std::string::npos; }, seconds);
}

// Whether the gateway's log shows a session of `device` with the certificate `serial`.
bool session_with(const ManagedProcess& gateway, const std::string& device,
                  const std::string& serial, int seconds) {
  return wait_until(
      [&] {
        std::istringstream in(gateway.log());
        for (std::string line; std::getline(in, line);) {
          if (line.find("session " + device + " from") != std::string::npos &&
              line.find("certificate serial " + serial + ",") != std::string::npos) {
            return true;
          }
        }
        return false;
      },
      seconds);
}

// A fresh handshake as device `name`: the gateway's certificate serial it was shown, or the
// error.
Result<std::string> handshake_as(const Pki& pki, const std::string& name, uint16_t port) {
  tls::ContextOptions o;
  o.role = tls::Role::client;
  o.files = {pki.main + "/ca.crt", pki.main + "/" + name + ".crt", pki.main + "/" + name + ".key",
             ""};
  o.server_name = "localhost";
  auto ctx = tls::TlsContext::create(o);
  if (!ctx) return ctx.error();
  UplinkClient c;
  if (!c.connect(port)) return make_error(tls::tls_errc::closed, "cannot connect");
  auto h = c.handshake(*ctx);
  if (!h) return h.error();
  // TLS 1.2: the server judges the client's certificate after the client is done; a refusal
  // shows at the first read.
  auto welcome = c.hello(name);
  if (!welcome) return welcome.error();
  if (!welcome->has_welcome()) return make_error(tls::tls_errc::closed, "no Welcome");
  return c.server_certificate().serial;
}

// Per agent: the seqs in the file sink, and how many were there twice.
struct SinkSeqs {
  std::map<std::string, std::set<uint64_t>> seqs;
  std::map<std::string, uint64_t> duplicates;
};
SinkSeqs sink_seqs(const std::string& dir) {
  SinkSeqs out;
  bool frames_ok = false;
  for (const auto& l : read_sink(dir, &frames_ok)) {
    if (!out.seqs[l.agent_id].insert(l.seq).second) ++out.duplicates[l.agent_id];
  }
  CHECK(frames_ok);
  return out;
}

}  // namespace

TEST_CASE("certificates renewed on both sides under load: zero failed batches, every event once") {
  Pki pki;
  make_certs(pki, {"--crl"});  // an empty CRL, as a gateway that revokes would have
  TempDir gw_dir, a1_dir, a2_dir;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), port, "",
                      "crl = \"" + pki.main + "/crl.pem\"\nreload_interval = \"500ms\"\n");
  gateway.start();
  AgentProc a1(pki, a1_dir.path(), port), a2(pki, a2_dir.path(), port);
  // device-1 reads its files on SIGHUP only; device-2 looks every 500 ms.
  a1.set_extra("tls_reload_interval = \"0s\"\n");
  a2.set_extra("tls_reload_interval = \"500ms\"\n");
  constexpr uint64_t kEvents = 60'000;
  a1.start({.device = "device-1", .events = kEvents, .rate = 5'000});
  a2.start({.device = "device-2", .events = kEvents, .rate = 5'000});
  REQUIRE(log_has(gateway, "session device-1 from", 20));
  REQUIRE(log_has(gateway, "session device-2 from", 20));
  const std::string gateway_serial_0 = serial_of(pki.main + "/gateway.crt");
  auto before = handshake_as(pki, "device-3", port);
  REQUIRE_MESSAGE(before, before.error().describe());
  CHECK(*before == gateway_serial_0);

  // 1. The gateway's certificate renewed: read within the interval, shown to new handshakes;
  //    the agents' sessions go on.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  make_certs(pki, {"--renew", "gateway"});
  const std::string gateway_serial_1 = serial_of(pki.main + "/gateway.crt");
  REQUIRE(gateway_serial_1 != gateway_serial_0);
  REQUIRE_MESSAGE(log_has(gateway, "certificate serial " + gateway_serial_1, 10), gateway.log());
  auto after = handshake_as(pki, "device-3", port);
  REQUIRE_MESSAGE(after, after.error().describe());
  CHECK(*after == gateway_serial_1);

  // 2. device-2's certificate renewed: it notices, finishes its batches in flight and
  //    reconnects with the new one.
  const std::string d2_serial_0 = serial_of(pki.main + "/device-2.crt");
  make_certs(pki, {"--renew", "device-2"});
  const std::string d2_serial_1 = serial_of(pki.main + "/device-2.crt");
  REQUIRE(d2_serial_1 != d2_serial_0);
  CHECK_MESSAGE(session_with(gateway, "device-2", d2_serial_1, 15), gateway.log());
  CHECK(log_has(a2, "new TLS files: finishing the", 1));

  // 3. device-1's certificate renewed, read on `outpost-agent reload` (a SIGHUP to the agent
  //    holding the configuration's buffer).
  make_certs(pki, {"--renew", "device-1"});
  const std::string d1_serial_1 = serial_of(pki.main + "/device-1.crt");
  std::this_thread::sleep_for(std::chrono::seconds(1));
  CHECK(a1.log().find("new TLS files") == std::string::npos);  // not without the signal
  const std::string a1_config = a1_dir.file("agent.toml");
  auto reload = run({OUTPOST_AGENT_BIN, "reload", "--config", a1_config});
  CHECK_MESSAGE(reload.exit_code == 0, reload.err);
  CHECK(reload.out.find("SIGHUP sent to pid " + std::to_string(a1.pid())) != std::string::npos);
  CHECK_MESSAGE(session_with(gateway, "device-1", d1_serial_1, 15), a1.log());

  // 4. A key that is not the gateway certificate's: refused, the pair in use keeps serving;
  //    the right key back: read again.
  const std::string key = pki.main + "/gateway.key";
  std::filesystem::copy_file(key, key + ".good");
  std::filesystem::copy_file(pki.main + "/device-3.key", key,
                             std::filesystem::copy_options::overwrite_existing);
  REQUIRE_MESSAGE(log_has(gateway, "TLS files changed but cannot be used", 10), gateway.log());
  CHECK(gateway.log().find("is not the key of certificate file") != std::string::npos);
  auto still = handshake_as(pki, "device-3", port);
  REQUIRE_MESSAGE(still, still.error().describe());
  CHECK(*still == gateway_serial_1);
  std::filesystem::rename(key + ".good", key);
  auto reads = [&] {
    size_t n = 0;
    const std::string log = gateway.log();
    for (size_t at = log.find("TLS files read"); at != std::string::npos;
         at = log.find("TLS files read", at + 1)) {
      ++n;
    }
    return n;
  };
  CHECK_MESSAGE(wait_until([&] { return reads() == 2; }, 10), gateway.log());
  // `outpost-gateway reload` (found by its sink directory's lock) reads them again at once.
  auto gw_reload = run({OUTPOST_GATEWAY_BIN, "reload", "-c", gw_dir.file("gateway.toml")});
  CHECK_MESSAGE(gw_reload.exit_code == 0, gw_reload.err);
  CHECK_MESSAGE(wait_until([&] { return reads() == 3; }, 10), gateway.log());

  // 5. Everything arrives once, and no batch failed: no retry-later, no refusal, no resend.
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        return generator_finished(a1.log()) && generator_finished(a2.log()) &&
                               pending(a1.buffer_path()) == 0 && pending(a2.buffer_path()) == 0;
                      },
                      120),
                  gateway.log());
  const std::string m = http_get(gateway.http_port(), "/metrics");
  CHECK_MESSAGE(metric(m, "outpost_gateway_tls_reloads_total{result=\"ok\"}") >= 2, gateway.log());
  CHECK(metric(m, "outpost_gateway_tls_reloads_total{result=\"refused\"}") >= 1);
  CHECK(metric(m, "outpost_gateway_batches_total{result=\"retry_later\"}") == 0);
  CHECK(metric(m, "outpost_gateway_batches_total{result=\"rejected\"}") == 0);
  CHECK(metric(m, "outpost_gateway_events_total{result=\"duplicate\"}") == 0);
  CHECK(metric(m, "outpost_gateway_events_total{result=\"written\"}") == 2 * kEvents);
  CHECK(m.find("outpost_gateway_rejects_total{") == std::string::npos);
  for (const AgentProc* a : {&a1, &a2}) {
    CHECK_MESSAGE(a->log().find("next attempt") == std::string::npos, a->log());
  }
  a1.stop();
  a2.stop();
  CHECK(gateway.stop() == 0);
  check_file_sink_exactly_once_of(gateway.sink_dir(),
                                  {{"device-1", kEvents}, {"device-2", kEvents}});
  // Nothing running: both commands say so and fail.
  auto none = run({OUTPOST_AGENT_BIN, "reload", "--config", a1_config});
  CHECK(none.exit_code == 1);
  CHECK_MESSAGE(none.err.find("no outpost-agent is running on buffer") != std::string::npos,
                none.err);
  auto no_gw = run({OUTPOST_GATEWAY_BIN, "reload", "-c", gw_dir.file("gateway.toml")});
  CHECK(no_gw.exit_code == 1);
  CHECK_MESSAGE(no_gw.err.find("no outpost-gateway is running") != std::string::npos, no_gw.err);
}

TEST_CASE("a device revoked while connected is cut off, refused at its next handshake, audited") {
  Pki pki;
  make_certs(pki, {"--crl"});
  TempDir gw_dir, a1_dir, a2_dir;
  const uint16_t port = free_port();
  constexpr int kReloadMs = 1000;  // the bound: this interval and a second
  GatewayProc gateway(pki, gw_dir.path(), port, "",
                      "crl = \"" + pki.main + "/crl.pem\"\nreload_interval = \"" +
                          std::to_string(kReloadMs) + "ms\"\n");
  gateway.start();
  AgentProc a1(pki, a1_dir.path(), port), a2(pki, a2_dir.path(), port);
  constexpr uint64_t kEvents1 = 30'000;
  a1.start({.device = "device-1", .events = kEvents1, .rate = 5'000});
  a2.start({.device = "device-2", .events = 10'000'000, .rate = 5'000});  // still sending
  REQUIRE(log_has(gateway, "session device-2 from", 20));
  std::this_thread::sleep_for(std::chrono::seconds(2));

  const std::string serial = serial_of(pki.main + "/device-2.crt");
  const auto revoked_at = std::chrono::steady_clock::now();
  make_certs(pki, {"--revoke", "device-2"});
  REQUIRE_MESSAGE(log_has(gateway, "certificate revoked (tls.crl) while connected", 10),
                  gateway.log());
  const double cut_after_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - revoked_at).count();
  MESSAGE("device-2 cut off " << cut_after_s << " s after its revocation (bound: "
                              << kReloadMs / 1000.0 + 1 << " s)");
  CHECK(cut_after_s < kReloadMs / 1000.0 + 1 + 1);  // the bound, and the test's 100 ms polls
  // Audited with its serial, at the cut and at the next handshake.
  auto audit_lines = [&](const std::string& what) {
    size_t n = 0;
    std::istringstream in(gateway.log());
    for (std::string line; std::getline(in, line);) {
      n += line.find("serial=" + serial) != std::string::npos &&
           line.find(what) != std::string::npos;
    }
    return n;
  };
  CHECK(audit_lines("while connected") == 1);
  REQUIRE_MESSAGE(wait_until([&] { return audit_lines("revoked") >= 2; }, 10), gateway.log());
  auto refused = handshake_as(pki, "device-2", port);
  REQUIRE_FALSE(refused);
  // device-1 goes on unaffected.
  REQUIRE(wait_until([&] { return generator_finished(a1.log()) && pending(a1.buffer_path()) == 0; },
                     60));
  const std::string m = http_get(gateway.http_port(), "/metrics");
  CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"revoked\"}") == 1);
  CHECK(metric(m, "outpost_gateway_rejects_total{reason=\"certificate\"}") >= 1);
  CHECK(metric(m, "outpost_gateway_crl_next_update_timestamp_seconds") > 0);

  // Reconciled: what device-2 made is in the sink or still in its buffer, none of it twice,
  // and nothing after the cut was acknowledged.
  a1.stop();
  a2.stop();
  CHECK(gateway.stop() == 0);
  auto inspector = agent::BufferInspector::open(a2.buffer_path());
  REQUIRE(inspector);
  auto st = inspector->stats();
  REQUIRE(st);
  const uint64_t made = st->next_seq - 1;
  const SinkSeqs sink = sink_seqs(gateway.sink_dir());
  const std::set<uint64_t>& in_sink = sink.seqs.at("device-2");
  MESSAGE("device-2 made " << made << " events: " << in_sink.size() << " in the sink, "
                           << st->pending_events << " pending in its buffer, acked up to "
                           << st->acked_seq);
  CHECK(sink.duplicates.count("device-2") == 0);
  CHECK(st->acked_seq <= in_sink.size());
  CHECK(st->pending_events == made - st->acked_seq);
  for (uint64_t seq = 1; seq <= st->acked_seq; ++seq) {
    if (in_sink.count(seq) == 0) FAIL("acknowledged seq " << seq << " is not in the sink");
  }
  CHECK(st->pending_events > 0);  // it was still sending
  check_file_sink_exactly_once_of(gateway.sink_dir(), {{"device-1", kEvents1}});
}
