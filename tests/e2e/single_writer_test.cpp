// One process per piece of durable state, and no stall when that state was rolled back anyway:
//   - a second outpost-gateway on a running one's sink directory is refused before it touches
//     anything in it (it used to rewrite _outpost/state.log, rolling the marks back at the
//     running gateway's next restart);
//   - a second outpost-agent on a running one's buffer file is refused;
//   - a sink whose marks were rolled back behind what a device has already deleted does not
//     refuse that device for ever: the seqs that cannot come back are counted as lost and
//     audited, and the device's new events are written.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include "agent/buffer/buffer_inspector.hpp"
#include "tests/e2e/uplink_support.hpp"

using namespace outpost;
using namespace outpost::test;

namespace {

ino_t inode_of(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

uint64_t pending_of(const std::string& buffer, uint64_t want_next_seq) {
  auto inspector = agent::BufferInspector::open(buffer);
  if (!inspector) return UINT64_MAX;
  auto s = inspector->stats();
  return s && s->next_seq >= want_next_seq ? s->pending_events : UINT64_MAX;
}

bool wait_drained(const std::string& buffer, uint64_t want_next_seq) {
  for (int i = 0; i < 300; ++i) {
    if (pending_of(buffer, want_next_seq) == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

}  // namespace

TEST_CASE("a second gateway on a sink directory and a second agent on a buffer are refused") {
  Pki pki;
  TempDir gw_dir, second_dir, agent_dir;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), port);
  gateway.start();
  AgentProc agent(pki, agent_dir.path(), port);
  agent.start({.events = 1000, .rate = 100'000});
  REQUIRE_MESSAGE(wait_drained(agent.buffer_path(), 1001), agent.log());
  const std::string state = gateway.sink_dir() + "/_outpost/state.log";
  const ino_t before = inode_of(state);
  const std::string state_text = read_text(state);
  REQUIRE(before != 0);

  // Its port is taken, as when someone runs the binary "to check the config".
  write_file(second_dir.file("gateway.toml"),
             "[gateway]\nlisten = \"127.0.0.1:" + std::to_string(port) +
                 "\"\nhttp_listen = \"127.0.0.1:0\"\n[tls]\nca_file = \"" + pki.main +
                 "/ca.crt\"\ncert_file = \"" + pki.main + "/gateway.crt\"\nkey_file = \"" +
                 pki.main + "/gateway.key\"\n[sink.file]\ndir = \"" + gateway.sink_dir() + "\"\n");
  Output second = run({OUTPOST_GATEWAY_BIN, "-c", second_dir.file("gateway.toml")});
  CHECK(second.exit_code == 1);  // a runtime error, not the configuration's
  CHECK_MESSAGE(second.err.find("in use by another process (pid " + std::to_string(gateway.pid()) +
                                ")") != std::string::npos,
                second.err);
  CHECK(inode_of(state) == before);
  CHECK(read_text(state) == state_text);

  // A second agent on the same buffer file.
  Output twin = run({OUTPOST_AGENT_BIN, "run", "--config", agent_dir.file("agent.toml")});
  CHECK(twin.exit_code != 0);
  CHECK_MESSAGE(twin.err.find("in use by another process (pid " + std::to_string(agent.pid()) +
                              ")") != std::string::npos,
                twin.err);
  agent.stop();
  CHECK(gateway.stop() == 0);
  // Every key --set takes is listed, the Kafka sink's too.
  const Output help = run({OUTPOST_GATEWAY_BIN, "--help"});
  CHECK(help.out.find("sink.kafka.") != std::string::npos);
  CHECK(help.out.find("transactional_id") != std::string::npos);
  CHECK(help.out.find("max_pending_handshakes") != std::string::npos);
}

TEST_CASE("marks rolled back behind a device's deleted events: counted as lost, not a stall") {
  Pki pki;
  TempDir gw_dir, agent_dir;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), port);
  gateway.start();
  AgentProc agent(pki, agent_dir.path(), port);
  agent.start({.events = 1000, .rate = 100'000});
  REQUIRE_MESSAGE(wait_drained(agent.buffer_path(), 1001), agent.log());
  agent.stop();
  CHECK(gateway.stop() == 0);

  // The sink's state as an older copy of it would have it: device-1 only up to seq 10.
  write_file(gateway.sink_dir() + "/_outpost/state.log", "hwm 10 device-1\ncommit\n");
  gateway.start();
  agent.start({.events = 500, .rate = 100'000});
  const bool drained = wait_drained(agent.buffer_path(), 1501);
  CHECK_MESSAGE(drained, gateway.log());
  const std::string m = http_get(gateway.http_port(), "/metrics");
  CHECK(metric(m, "outpost_gateway_events_total{result=\"gap_lost\"}") == 990);
  agent.stop();
  CHECK(gateway.stop() == 0);
  const std::string log = gateway.log();
  CHECK(log.find("agent=device-1 seqs 11..1000 (990 events)") != std::string::npos);
  check_file_sink_exactly_once(gateway.sink_dir(), "device-1", 1500);
}
