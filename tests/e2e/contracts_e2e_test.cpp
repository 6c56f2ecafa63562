// Contracts end to end (docs/contracts.md): JSON events POSTed to a real agent's HTTP source,
// forwarded over mutual TLS to a real gateway that validates them against the build's
// descriptor set, into the file sink and into a real Kafka broker (read back
// read_committed). A mixed stream lands good on one side and bad on the other, each with
// its reason, exactly once through gateway SIGKILLs; sensitive fields never reach a sink
// raw; the provenance is stamped; an unknown schema follows the policy and is accepted
// after a SIGHUP with a descriptor set that names it, without a rebuild.
#include <doctest/doctest.h>
#include <google/protobuf/descriptor.pb.h>

#include <filesystem>
#include <map>

#include "common/tls/digest.hpp"
#include "outpost/v1/contract_options.pb.h"
#include "outpost/v1/event.pb.h"
#include "proto/compat.hpp"
#include "tests/e2e/uplink_support.hpp"
#include "tests/support/kafka.hpp"

using namespace outpost;
using namespace outpost::test;
namespace pb = google::protobuf;

namespace {

// POSTs `body` to the agent's events path, waiting until it is durable (sync=true); the
// status code (0: no answer).
int post(uint16_t port, const std::string& body) {
  const std::string out =
      http_exchange(port,
                    "POST /v1/events?sync=true HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                    "application/json\r\nConnection: close\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n" + body,
                    20);
  return out.size() > 12 ? std::stoi(out.substr(9, 3)) : 0;
}

// What the i-th event of the stream is, and where it must land.
struct Expected {
  std::string json;
  std::string reason;  // "" : good
};

Expected event(int i) {
  const std::string n = std::to_string(i);
  switch (i % 5) {
    case 0:  // good, with every sensitive field
      return {R"({"schema":"order.v1","order_id":"o-)" + n + R"(","customer_email":"secret-)" + n +
                  R"(@example.com","payment_card":"4111-0000-)" + n +
                  R"(","internal_note":"note-)" + n + R"(","client_ip":"198.51.100.)" +
                  std::to_string(i % 250) + R"("})",
              ""};
    case 1:
      return {R"({"schema":"order.v1","order_id":"o-)" + n + R"(","amount_cents":)" + n + "}", ""};
    case 2:
      return {R"({"schema":"order.v1","order_id":"o-)" + n + R"(","amount_cents":"lots"})",
              "wrong_type"};
    case 3:
      return {R"({"schema":"order.v1","order_id":"o-)" + n + R"(","shipping":"fast"})",
              "unknown_field"};
    default:
      return {R"({"schema":"refund.v1","refund_id":"r-)" + n + R"("})", "unknown_schema"};
  }
}

// Posts events [from, to) in requests of 10; every request must be accepted (2xx).
void post_range(uint16_t port, int from, int to) {
  for (int i = from; i < to; i += 10) {
    std::string body = "[";
    for (int k = i; k < std::min(to, i + 10); ++k) body += (k > i ? "," : "") + event(k).json;
    body += "]";
    REQUIRE(post(port, body) / 100 == 2);
  }
}

std::string agent_http_config(uint16_t http_port) {
  return "[sources.http]\nenabled = true\nlisten = \"127.0.0.1:" + std::to_string(http_port) +
         "\"\n";
}

// Starts the agent with its HTTP source (and `more` configuration) and waits until it answers.
void start_posting(AgentProc& agent, uint16_t http_port, const std::string& more = "") {
  agent.set_extra(agent_http_config(http_port) + more);
  agent.start(AgentSetup{});
  for (int i = 0; i < 100 && post(http_port, "[]") == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::string contracts_config(const std::string& desc, const std::string& key) {
  return "[contracts]\ndescriptor_set = \"" + desc + "\"\nhash_key_file = \"" + key + "\"\n";
}

// The build's descriptor set with one more schema, refund.v1, as a team would add it.
void write_set_with_refund(const std::string& path) {
  pb::FileDescriptorSet set;
  REQUIRE(proto::load_descriptor_set(OUTPOST_DESCRIPTOR_SET, &set));
  auto* file = set.add_file();
  file->set_name("shop/refund.proto");
  file->set_package("shop.v1");
  file->set_syntax("proto3");
  file->add_dependency("outpost/v1/contract_options.proto");
  auto* m = file->add_message_type();
  m->set_name("Refund");
  m->mutable_options()->SetExtension(v1::schema, "refund.v1");
  auto* f = m->add_field();
  f->set_name("refund_id");
  f->set_number(1);
  f->set_type(pb::FieldDescriptorProto::TYPE_STRING);
  f->set_label(pb::FieldDescriptorProto::LABEL_OPTIONAL);
  f->set_json_name("refundId");
  std::ofstream(path, std::ios::binary) << set.SerializeAsString();
}

struct Setup {
  Pki pki;
  TempDir gw_dir, agent_dir;
  uint16_t port = free_port(), http_port = free_port();
  std::string desc, key;
  Setup() {
    desc = gw_dir.file("contracts.desc");
    key = gw_dir.file("hash.key");
    std::filesystem::copy_file(OUTPOST_DESCRIPTOR_SET, desc);
    write_file(key, "an-example-key-of-32-bytes-long!");
  }
  // gateway.id, in the [gateway] table of the file GatewayProc wrote.
  void name_gateway() const {
    const std::string path = gw_dir.file("gateway.toml");
    std::string text = read_text(path);
    text.replace(text.find("[gateway]\n"), 10, "[gateway]\nid = \"gw-contracts\"\n");
    write_file(path, text);
  }
};

// Checks one good record (its JSON form) of event i: sensitive fields applied, provenance.
void check_good(const std::string& line, int i, const std::string& key, int64_t after) {
  CAPTURE(line);
  const std::string n = std::to_string(i);
  CHECK(line.find("secret-") == std::string::npos);
  CHECK(line.find("4111-") == std::string::npos);
  CHECK(line.find("note-") == std::string::npos);
  CHECK(line.find("198.51.100." + std::to_string(i % 250) + "\"") ==
        (i % 250 == 0 ? line.find("198.51.100.0\"") : std::string::npos));
  if (i % 5 == 0) {
    CHECK(line.find(tls::hmac_sha256_hex(key, "secret-" + n + "@example.com")) !=
          std::string::npos);
    CHECK(line.find(R"("payment_card":"[REDACTED]")") != std::string::npos);
    CHECK(line.find(R"("client_ip":"198.51.100.0")") != std::string::npos);
  }
  CHECK(json_field(line, "gateway_id") == "gw-contracts");
  CHECK(std::stoll(json_field(line, "received_at")) >= after);
  CHECK(json_field(line, "contract") == "order.v1");
  CHECK(json_field(line, "contract_fingerprint").size() == 16);
  // The payload fingerprint is the SHA-256 of the payload as written: the json member's text.
  const auto begin = line.find("\"json\":") + 7;
  const auto end = line.find(",\"provenance\":");
  REQUIRE(end != std::string::npos);
  CHECK(json_field(line, "payload_sha256") == tls::sha256_hex(line.substr(begin, end - begin)));
}

}  // namespace

TEST_CASE(
    "file sink: a mixed stream lands good and bad on their sides exactly once through gateway "
    "SIGKILLs, sensitive fields never raw, provenance stamped; a new schema after SIGHUP") {
  Setup s;
  const int64_t started = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  GatewayProc gateway(s.pki, s.gw_dir.path(), s.port, contracts_config(s.desc, s.key));
  s.name_gateway();
  gateway.start();
  AgentProc agent(s.pki, s.agent_dir.path(), s.port);
  start_posting(agent, s.http_port);

  constexpr int kEvents = 1000;
  post_range(s.http_port, 0, 300);
  gateway.kill9();  // the agent buffers; bad events are no more lost than good ones
  post_range(s.http_port, 300, 600);
  gateway.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  post_range(s.http_port, 600, 800);
  gateway.kill9();
  gateway.start();
  post_range(s.http_port, 800, kEvents);

  std::vector<SinkLine> lines;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    lines = read_sink(gateway.sink_dir());
    if (lines.size() >= kEvents) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const std::string metrics = http_get(gateway.http_port(), "/metrics");
  std::map<uint64_t, int> seen;
  std::map<std::string, int> by_reason;
  int good = 0, bad = 0;
  for (const SinkLine& l : lines) {
    REQUIRE(l.agent_id == "device-1");
    REQUIRE(l.seq >= 1);
    REQUIRE(l.seq <= kEvents);
    ++seen[l.seq];
    const int i = static_cast<int>(l.seq) - 1;  // one source, requests in order: seq = i + 1
    const Expected want = event(i);
    CAPTURE(l.json);
    if (l.kind == "bad") {
      ++bad;
      CHECK(json_field(l.json, "reason") == want.reason);
      ++by_reason[json_field(l.json, "reason")];
      CHECK(!json_field(l.json, "message").empty());
      CHECK(json_field(l.json, "gateway_id") == "gw-contracts");
      if (want.reason == "unknown_schema") {
        // Its contract is unknown, so nothing is withheld: the original bytes are there.
        CHECK(l.json.find("refund_id") != std::string::npos);
        CHECK(!json_field(l.json, "event_b64").empty());
      } else {
        // order.v1 has sensitive fields: a payload that did not validate is withheld.
        CHECK(json_field(l.json, "payload_withheld") == "true");
      }
    } else {
      ++good;
      CHECK(l.kind == "json");
      CHECK(want.reason.empty());
      check_good(l.json, i, "an-example-key-of-32-bytes-long!", started);
    }
  }
  MESSAGE(good << " good, " << bad << " bad of " << kEvents);
  CHECK(seen.size() == kEvents);
  for (const auto& [seq, n] : seen) CHECK_MESSAGE(n == 1, "seq " << seq << " written " << n);
  CHECK(good == kEvents * 2 / 5);
  CHECK(by_reason["wrong_type"] == kEvents / 5);
  CHECK(by_reason["unknown_field"] == kEvents / 5);
  CHECK(by_reason["unknown_schema"] == kEvents / 5);
  // The raw sensitive values are nowhere in the sink directory, in any file.
  for (const SinkLine& l : lines) {
    CHECK(l.json.find("@example.com") == std::string::npos);
    CHECK(l.json.find("4111-0000") == std::string::npos);
  }
  CHECK(
      metric(
          metrics,
          R"(outpost_gateway_contract_events_total{schema="unknown",result="bad",reason="unknown_schema"})") >
      0);
  CHECK(
      metric(
          metrics,
          R"(outpost_gateway_contract_events_total{schema="order.v1",result="good",reason="none"})") >
      0);
  CHECK(metric(metrics, R"(outpost_gateway_contract_bytes_total{schema="order.v1"})") > 0);
  CHECK(metric(metrics, "outpost_gateway_validation_seconds_count") > 0);
  CHECK(metric(metrics, R"(outpost_gateway_validation_seconds_bucket{le="+Inf"})") ==
        metric(metrics, "outpost_gateway_validation_seconds_count"));

  // A team adds refund.v1 to the descriptor set; SIGHUP, and it is accepted, no rebuild.
  write_set_with_refund(s.desc);
  ::kill(gateway.pid(), SIGHUP);
  for (int i = 0; i < 100 && gateway.log().find("reload: contracts") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK_MESSAGE(
      gateway.log().find("refund.v1 (shop.v1.Refund)") != std::string::npos,
      gateway.log().substr(gateway.log().size() > 2000 ? gateway.log().size() - 2000 : 0));
  post_range(s.http_port, kEvents + 4, kEvents + 5);  // i % 5 == 4: a refund.v1
  lines.clear();
  for (int i = 0; i < 200; ++i) {
    lines = read_sink(gateway.sink_dir());
    if (lines.size() > kEvents) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(lines.size() == kEvents + 1);
  bool found = false;
  for (const SinkLine& l : lines) {
    if (l.seq != kEvents + 1) continue;
    found = true;
    CHECK(l.kind == "json");
    CHECK(json_field(l.json, "contract") == "refund.v1");
  }
  CHECK(found);
  // A set that cannot be used is refused on reload, and the one in use stays.
  write_file(s.desc, "not a descriptor set");
  ::kill(gateway.pid(), SIGHUP);
  for (int i = 0; i < 100 && gateway.log().find("reload refused") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(gateway.log().find("reload refused, the contracts in use stay") != std::string::npos);
  CHECK(http_get(gateway.http_port(), "/healthz").find(" 200 ") != std::string::npos);
}

TEST_CASE("a contract with a HASH field and no key file: the gateway refuses to start") {
  Setup s;
  GatewayProc gateway(s.pki, s.gw_dir.path(), s.port,
                      "[contracts]\ndescriptor_set = \"" + s.desc + "\"\n");
  CHECK_THROWS(gateway.start());
  CHECK(gateway.log().find("contracts.hash_key_file") != std::string::npos);
}

TEST_CASE(
    "Kafka: good events to their topic, bad ones to outpost.bad in the same transactions, "
    "exactly once through a gateway SIGKILL; provenance in headers and value") {
  KafkaBroker broker(free_port());
  REQUIRE_MESSAGE(broker.ok(), broker.error());
  Setup s;
  GatewayProc gateway(
      s.pki, s.gw_dir.path(), s.port,
      contracts_config(s.desc, s.key) + "[sink]\ntype = \"kafka\"\n[sink.kafka]\nbrokers = \"" +
          broker.bootstrap() +
          "\"\ntransactional_id = \"gw-contracts\"\ncreate_topics = true\npartitions = 2\n"
          "transaction_timeout = \"10s\"\n");
  s.name_gateway();
  gateway.start();
  AgentProc agent(s.pki, s.agent_dir.path(), s.port);
  start_posting(agent, s.http_port);
  constexpr int kEvents = 500;
  post_range(s.http_port, 0, 250);
  gateway.kill9();
  gateway.start();
  post_range(s.http_port, 250, kEvents);

  std::vector<ConsumedRecord> records;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (std::chrono::steady_clock::now() < deadline) {
    std::string error;
    records = read_committed(broker.bootstrap(), {"outpost.events", "outpost.bad"}, &error);
    if (records.size() >= kEvents) break;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  std::map<uint64_t, int> seen;
  int good = 0, bad = 0;
  for (const ConsumedRecord& r : records) {
    CAPTURE(r.value);
    CHECK(r.key == "device-1");
    const uint64_t seq = std::stoull(r.headers.at("seq"));
    ++seen[seq];
    const Expected want = event(static_cast<int>(seq) - 1);
    if (r.topic == "outpost.bad") {
      ++bad;
      CHECK(r.headers.at("reason") == want.reason);
      CHECK(json_field(r.value, "reason") == want.reason);
      CHECK(r.value.find("@example.com") == std::string::npos);
      continue;
    }
    ++good;
    CHECK(r.topic == "outpost.events");
    CHECK(want.reason.empty());
    v1::Event e;
    REQUIRE(e.ParseFromString(r.value));
    CHECK(e.seq() == seq);
    CHECK(e.json().find("@example.com") == std::string::npos);
    CHECK(e.json().find("4111-0000") == std::string::npos);
    CHECK(e.json().find("note-") == std::string::npos);
    if ((seq - 1) % 5 == 0) {  // every sensitive action, as in the file sink
      const std::string i = std::to_string(seq - 1);
      CHECK(e.json().find(tls::hmac_sha256_hex("an-example-key-of-32-bytes-long!",
                                               "secret-" + i + "@example.com")) !=
            std::string::npos);
      CHECK(e.json().find(R"("payment_card":"[REDACTED]")") != std::string::npos);
      CHECK(e.json().find("internal_note") == std::string::npos);
      CHECK(e.json().find(R"("client_ip":"198.51.100.0")") != std::string::npos);
    }
    CHECK(e.provenance().gateway_id() == "gw-contracts");
    CHECK(e.provenance().contract() == "order.v1");
    CHECK(e.provenance().payload_sha256() == tls::sha256_hex(e.json()));
    CHECK(r.headers.at("gateway_id") == "gw-contracts");
    CHECK(r.headers.at("contract") == "order.v1");
    CHECK(r.headers.at("contract_fingerprint") == e.provenance().contract_fingerprint());
    CHECK(r.headers.at("payload_sha256") == e.provenance().payload_sha256());
    CHECK(std::stoll(r.headers.at("received_at")) == e.provenance().received_at());
  }
  MESSAGE(good << " good, " << bad << " bad of " << kEvents);
  CHECK(seen.size() == kEvents);
  for (const auto& [seq, n] : seen) CHECK_MESSAGE(n == 1, "seq " << seq << " written " << n);
  CHECK(good == kEvents * 2 / 5);
  CHECK(bad == kEvents * 3 / 5);
}

TEST_CASE(
    "edge validation: bad events stay on the device in the quarantine with their reason, good "
    "ones leave with their sensitive fields applied; posted = written + quarantined") {
  Setup s;
  GatewayProc gateway(s.pki, s.gw_dir.path(), s.port, contracts_config(s.desc, s.key));
  s.name_gateway();
  gateway.start();
  AgentProc agent(s.pki, s.agent_dir.path(), s.port);
  const uint16_t status_port = free_port();
  agent.set_agent_keys("http_listen = \"127.0.0.1:" + std::to_string(status_port) + "\"\n");
  start_posting(agent, s.http_port,
                "[contracts]\nvalidate = \"edge\"\ndescriptor_set = \"" + s.desc +
                    "\"\nhash_key_file = \"" + s.key + "\"\n");
  constexpr int kEvents = 200;
  post_range(s.http_port, 0, kEvents);  // every request answered 2xx

  std::vector<SinkLine> lines;
  for (int i = 0; i < 300; ++i) {
    lines = read_sink(gateway.sink_dir());
    if (lines.size() >= kEvents * 2 / 5) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  lines = read_sink(gateway.sink_dir());
  CHECK(lines.size() == kEvents * 2 / 5);  // only the good ones left the device
  for (const SinkLine& l : lines) {
    CAPTURE(l.json);
    CHECK(l.kind == "json");
    CHECK(l.json.find("@example.com") == std::string::npos);
    CHECK(l.json.find("4111-0000") == std::string::npos);
    const auto order = json_field(l.json, "order_id");
    const int i = std::stoi(order.substr(2));
    CHECK(event(i).reason.empty());
    if (i % 5 == 0) {  // hashed once, at the edge: the gateway keeps the token
      CHECK(l.json.find(tls::hmac_sha256_hex("an-example-key-of-32-bytes-long!",
                                             "secret-" + std::to_string(i) + "@example.com")) !=
            std::string::npos);
    }
  }
  const std::string metrics = http_get(status_port, "/metrics");
  CHECK(metric(
            metrics,
            R"(outpost_agent_contract_quarantined_total{schema="order.v1",reason="wrong_type"})") ==
        kEvents / 5);
  CHECK(
      metric(
          metrics,
          R"(outpost_agent_contract_quarantined_total{schema="order.v1",reason="unknown_field"})") ==
      kEvents / 5);
  CHECK(
      metric(
          metrics,
          R"(outpost_agent_contract_quarantined_total{schema="unknown",reason="unknown_schema"})") ==
      kEvents / 5);
  CHECK(metric(metrics, "outpost_agent_contract_valid_total") == kEvents * 2 / 5);
  // `outpost-agent buffer quarantine` shows them, with the reason code.
  agent.stop();
  auto shown = run({OUTPOST_AGENT_BIN, "buffer", "quarantine", "--path", agent.buffer_path(),
                    "--limit", "1000"});
  CHECK(shown.exit_code == 0);
  size_t wrong_type = 0;
  for (size_t at = 0;
       (at = shown.out.find("wrong_type: order.v1: $.amount_cents", at)) != std::string::npos;
       ++at) {
    ++wrong_type;
  }
  CHECK_MESSAGE(wrong_type == kEvents / 5, shown.out.substr(0, 2000));
  CHECK(shown.out.find("unknown_schema: schema \"refund.v1\"") != std::string::npos);
}

TEST_CASE(
    "unknown_schema = \"pass\": an event of a schema the set has not is written, marked "
    "unvalidated") {
  Setup s;
  GatewayProc gateway(s.pki, s.gw_dir.path(), s.port,
                      contracts_config(s.desc, s.key) + "unknown_schema = \"pass\"\n");
  s.name_gateway();
  gateway.start();
  AgentProc agent(s.pki, s.agent_dir.path(), s.port);
  start_posting(agent, s.http_port);
  post_range(s.http_port, 0, 10);  // 2 of each kind: 2 refund.v1, 4 bad order.v1, 4 good
  std::vector<SinkLine> lines;
  for (int i = 0; i < 200 && lines.size() < 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    lines = read_sink(gateway.sink_dir());
  }
  REQUIRE(lines.size() == 10);
  int passed = 0;
  for (const SinkLine& l : lines) {
    const Expected want = event(static_cast<int>(l.seq) - 1);
    CAPTURE(l.json);
    if (want.reason == "unknown_schema") {
      ++passed;
      CHECK(l.kind == "json");
      CHECK(json_field(l.json, "contract").empty());  // written, and not validated
      CHECK(json_field(l.json, "gateway_id") == "gw-contracts");
    } else {
      CHECK(l.kind == (want.reason.empty() ? "json" : "bad"));  // the others as before
    }
  }
  CHECK(passed == 2);
}
