// What operators scrape (docs/operations.md): both programs' /metrics, from real processes
// with events flowing (contracts on, one bad event, so that every family has a sample), pass
// `promtool check metrics` (Prometheus's own lint: names, types, units, _total counters), and
// every series the alert rules and the dashboard use (deploy/prometheus, deploy/grafana)
// is there.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "tests/e2e/uplink_support.hpp"

using namespace outpost;
using namespace outpost::test;

namespace {

std::string scrape_until(uint16_t port, const std::string& series) {
  std::string text;
  for (int i = 0; i < 200; ++i) {
    text = http_get(port, "/metrics");
    if (text.find(series) != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const auto body = text.find("\r\n\r\n");
  return body == std::string::npos ? text : text.substr(body + 4);
}

// Every outpost_* metric name an expression file mentions.
std::set<std::string> names_used(const std::string& path) {
  std::set<std::string> out;
  const std::string text = read_text(path);
  static const std::regex name("outpost_[a-z_]+");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), name); it != std::sregex_iterator();
       ++it) {
    std::string n = it->str();
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string s(suffix);
      if (n.size() > s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0) {
        n.resize(n.size() - s.size());
      }
    }
    out.insert(n);
  }
  return out;
}

}  // namespace

TEST_CASE(
    "both /metrics pass promtool check metrics, and have every series the rules and the "
    "dashboard use") {
  Pki pki;
  TempDir gw_dir, agent_dir;
  const uint16_t port = free_port();
  write_file(gw_dir.file("hash.key"), "a-test-key");
  // A CRL, so that its gauge is served too.
  REQUIRE(run({std::string(OUTPOST_SOURCE_DIR) + "/deploy/certs/make-certs", pki.main, "--crl"})
              .exit_code == 0);
  GatewayProc gateway(pki, gw_dir.path(), port,
                      "[contracts]\ndescriptor_set = \"" + std::string(OUTPOST_DESCRIPTOR_SET) +
                          "\"\nhash_key_file = \"" + gw_dir.file("hash.key") + "\"\n",
                      "crl = \"" + pki.main + "/crl.pem\"\n");
  gateway.start();
  AgentProc agent(pki, agent_dir.path(), port);
  const uint16_t status_port = free_port(), http_port = free_port();
  agent.set_agent_keys("http_listen = \"127.0.0.1:" + std::to_string(status_port) + "\"\n");
  agent.set_extra(
      "[sources.http]\nenabled = true\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n");
  agent.start(AgentSetup{.events = 300, .rate = 10'000});
  // One bad event, so that the dead-letter and contract families have samples.
  for (int i = 0; i < 100; ++i) {
    const std::string body = R"({"schema":"order.v1","amount_cents":"lots"})";
    const std::string out =
        http_exchange(http_port,
                      "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      "Connection: close\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body);
    if (out.find(" 20") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const std::string gw = scrape_until(gateway.http_port(), "result=\"dead_letter\"} 1");
  const std::string ag = scrape_until(status_port, "outpost_agent_uplink_events_acked_total 301");
  // make-certs' 825 days, against uplink.certificate_warn_days = 30.
  CHECK(metric(ag, "outpost_agent_certificate_remaining_seconds") > 800 * 86400.0);
  CHECK(metric(ag, "outpost_agent_certificate_expiring") == 0);

  for (const auto& [name, text] : {std::pair{"gateway", gw}, std::pair{"agent", ag}}) {
    CAPTURE(name);
    auto lint = run({"/usr/bin/promtool", "check", "metrics"}, text);
    CHECK_MESSAGE(lint.exit_code == 0, lint.out << lint.err);
    CHECK_MESSAGE(lint.out.empty(), lint.out);  // no warnings either
    CHECK_MESSAGE(lint.err.empty(), lint.err);
  }
  const std::string all = gw + ag;
  std::set<std::string> used =
      names_used(std::string(OUTPOST_SOURCE_DIR) + "/deploy/prometheus/alerts.yml");
  for (const std::string& n :
       names_used(std::string(OUTPOST_SOURCE_DIR) + "/deploy/grafana/outpost.json")) {
    used.insert(n);
  }
  CHECK(used.size() >= 15);
  for (const std::string& n : used) {
    CAPTURE(n);
    // Served only with another configuration than this test's: the Kafka sink's own, and
    // edge validation's (contracts_e2e_test asserts those).
    if (n.rfind("outpost_gateway_kafka_", 0) == 0 || n.rfind("outpost_agent_contract_", 0) == 0) {
      continue;
    }
    // A family is served when it has samples or, for one counted by label that has none
    // yet (refusals, sink errors), its TYPE line.
    CHECK((all.find("\n" + n) != std::string::npos ||
           all.find("# TYPE " + n + " ") != std::string::npos));
  }
}

TEST_CASE("an agent whose certificate has expired says so in its log and on /metrics") {
  Pki pki;
  TempDir agent_dir;
  AgentProc agent(pki, agent_dir.path(), free_port());  // no gateway: the handshake would fail
  const uint16_t status_port = free_port();
  agent.set_agent_keys("http_listen = \"127.0.0.1:" + std::to_string(status_port) + "\"\n");
  AgentSetup old;
  old.device = "device-old";
  agent.start(old);
  const std::string text =
      scrape_until(status_port, "outpost_agent_certificate_expiry_timestamp_seconds ");
  const double expiry = metric(text, "outpost_agent_certificate_expiry_timestamp_seconds");
  CHECK(expiry > 0);
  CHECK(expiry < static_cast<double>(time(nullptr)));
  CHECK(metric(text, "outpost_agent_certificate_remaining_seconds") < 0);
  CHECK(metric(text, "outpost_agent_certificate_expiring") == 1);
  std::string log;
  for (int i = 0; i < 50 && log.find("already expired") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    log = agent.log();
  }
  CHECK_MESSAGE(log.find("device-old.crt expires in -") != std::string::npos, log);
  CHECK(log.find("already expired") != std::string::npos);
}
