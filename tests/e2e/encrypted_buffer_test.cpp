// The buffer encrypted at rest with real processes (docs/buffer.md, "Encryption at rest"): an
// agent SIGKILLed 20 times delivers every event once and leaves nothing readable in its file;
// a wrong key is refused with its id, by the agent and by the tools; a row changed on disk is
// quarantined and counted, and everything else arrives.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <fstream>
#include <random>

#include "agent/buffer/buffer_inspector.hpp"
#include "agent/buffer/row_seal.hpp"
#include "tests/e2e/uplink_support.hpp"
#include "tests/support/buffer_probe.hpp"
#include "tests/support/file_sink_reader.hpp"

using namespace outpost;
using namespace outpost::test;

namespace {

std::string write_key(const TempDir& dir, const std::string& name, char fill) {
  const std::string path = dir.file(name);
  std::ofstream(path, std::ios::binary) << std::string(32, fill);
  return path;
}

std::string sealing_with(const std::string& key_file) {
  return "encryption = \"aead\"\nkey_file = \"" + key_file + "\"\n";
}

// The stored bodies of the pending events, as the file holds them.
std::vector<std::string> stored_bodies(const std::string& path) {
  auto inspector = agent::BufferInspector::open(path);
  REQUIRE(inspector);
  agent::ScanFilter as_stored;
  as_stored.open_sealed = false;
  std::vector<std::string> out;
  REQUIRE(inspector->scan(as_stored, [&](const agent::StoredEvent& e) {
    out.push_back(e.body);
    return true;
  }));
  return out;
}

uint64_t tampered(const std::string& buffer) {
  auto inspector = agent::BufferInspector::open(buffer);
  REQUIRE(inspector);
  auto s = inspector->stats();
  REQUIRE(s);
  uint64_t n = 0;
  for (const auto& d : s->dropped) n += d.reason == agent::DropReason::tampered ? d.count : 0;
  return n;
}

}  // namespace

TEST_CASE("an encrypted buffer through 20 SIGKILLs: every event once, nothing readable on disk") {
  Pki pki;
  TempDir gw_dir, agent_dir, keys;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), port);
  AgentProc agent(pki, agent_dir.path(), port);
  agent.set_buffer_keys(sealing_with(write_key(keys, "buffer.key", 'k')));
  // 1. Offline: what the buffer holds is sealed.
  agent.start({.events = 20'000});
  REQUIRE(wait_until([&] { return pending(agent.buffer_path()) == 20'000; }, 60));
  agent.stop();
  const auto bodies = stored_bodies(agent.buffer_path());
  REQUIRE(bodies.size() == 20'000);
  for (const std::string& body : bodies) {
    REQUIRE(agent::is_sealed(body));
    // What the generator's events say in clear (a pixel's page, a reading's site and metric).
    for (const char* word : {"products", "plant-a", "temperature", "newsletter"}) {
      REQUIRE(body.find(word) == std::string::npos);
    }
  }
  // 2. Online, 20 SIGKILLs of the agent at random moments while events flow.
  gateway.start();
  const uint64_t seed = std::random_device{}();
  MESSAGE("kill schedule seed " << seed);
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 20; ++i) {
    agent.start({.events = 2'000'000, .rate = 40'000});
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 600));
    agent.kill9();
  }
  agent.start({});
  REQUIRE_MESSAGE(wait_until([&] { return pending(agent.buffer_path()) == 0; }, 120),
                  gateway.log());
  agent.stop();
  CHECK(gateway.stop() == 0);
  const uint64_t last = next_seq(agent.buffer_path()) - 1;
  CHECK(last > 60'000);
  CHECK(tampered(agent.buffer_path()) == 0);
  check_file_sink_exactly_once(gateway.sink_dir(), "device-1", last);
}

TEST_CASE("a wrong key is refused with its id; a row changed on disk is quarantined, not sent") {
  Pki pki;
  TempDir gw_dir, agent_dir, keys;
  const uint16_t port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), port);
  AgentProc agent(pki, agent_dir.path(), port);
  const std::string right = write_key(keys, "right.key", 'r');
  const std::string wrong = write_key(keys, "wrong.key", 'w');
  agent.set_buffer_keys(sealing_with(right));
  agent.start({.events = 1'000});
  REQUIRE(wait_until([&] { return pending(agent.buffer_path()) == 1'000; }, 60));
  agent.stop();

  // The agent with another key: exit 2, naming the key id the events need.
  const std::string right_id = tls::AeadKey::read_file(right)->id_hex();
  agent.set_buffer_keys(sealing_with(wrong));
  agent.start({});
  REQUIRE(
      wait_until([&] { return agent.log().find("key id " + right_id) != std::string::npos; }, 10));
  CHECK(agent.stop() != 0);  // it had exited already
  CHECK(agent.log().find("which none of the configured keys has") != std::string::npos);
  // The tools: peek without the key fails naming it, with it shows the events.
  auto peek = run({OUTPOST_AGENT_BIN, "buffer", "peek", "--path", agent.buffer_path(), "-n", "2",
                   "--key-file", wrong});
  CHECK(peek.exit_code == 1);
  CHECK_MESSAGE(peek.err.find("sealed with key id " + right_id) != std::string::npos, peek.err);
  peek = run({OUTPOST_AGENT_BIN, "buffer", "peek", "--path", agent.buffer_path(), "-n", "2",
              "--json", "--key-file", right});
  CHECK_MESSAGE(peek.exit_code == 0, peek.err);
  CHECK(peek.out.find("\"agent_id\":\"device-1\"") != std::string::npos);
  auto stats = run({OUTPOST_AGENT_BIN, "buffer", "stats", "--path", agent.buffer_path()});
  CHECK(stats.exit_code == 0);  // the metadata is in clear

  // 2. One row's metadata changed on disk (its priority), another's bytes.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(agent.buffer_path().c_str(), &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db,
                     "UPDATE events_0 SET priority = priority + 7 WHERE seq = 100; "
                     "UPDATE events_0 SET body = substr(body, 1, 20) || x'00' || substr(body, 22) "
                     "WHERE seq = 200;",
                     nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
  agent.set_buffer_keys(sealing_with(right));
  gateway.start();
  agent.start({});
  REQUIRE_MESSAGE(wait_until([&] { return pending(agent.buffer_path()) == 0; }, 60), agent.log());
  agent.stop();
  CHECK(gateway.stop() == 0);
  // Reconciled: 998 in the sink, 2 counted as tampered and quarantined, none lost otherwise.
  CHECK(tampered(agent.buffer_path()) == 2);
  CHECK(agent.log().find("event seq 100 does not authenticate") != std::string::npos);
  bool frames_ok = false;
  std::set<uint64_t> seqs;
  for (const auto& l : read_sink(gateway.sink_dir(), &frames_ok)) seqs.insert(l.seq);
  CHECK(frames_ok);
  CHECK(seqs.size() == 998);
  CHECK(seqs.count(100) == 0);
  CHECK(seqs.count(200) == 0);
  auto q = run({OUTPOST_AGENT_BIN, "buffer", "quarantine", "--path", agent.buffer_path()});
  CHECK(q.exit_code == 0);
  CHECK_MESSAGE(q.out.find("does not authenticate") != std::string::npos, q.out);
}
