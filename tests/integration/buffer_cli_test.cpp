// `outpost-agent buffer …` against a live buffer that a running `outpost-agent run` writes,
// plus usage errors, missing files, a corrupt file, and export → import round trips.
#include <doctest/doctest.h>
#include <google/protobuf/util/message_differencer.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "outpost/v1/event.pb.h"
#include "proto/event_codec.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace outpost;
using test::run;

namespace {

const std::string kAgent = OUTPOST_AGENT_BIN;

std::string write_config(const test::TempDir& dir, const std::string& buffer, uint64_t events,
                         uint64_t rate, bool stop) {
  std::string path = dir.file("agent.toml");
  std::ofstream(path) << "[agent]\nid = \"cli-test\"\n[buffer]\npath = \"" << buffer
                      << "\"\n[generator]\nenabled = true\nevents = " << events
                      << "\nrate = " << rate << "\nstop_when_done = " << (stop ? "true" : "false")
                      << "\n";
  return path;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    if (!l.empty()) out.push_back(l);
  }
  return out;
}

// The content of an exported line without its identity, for comparing two buffers.
v1::Event content_of(const std::string& line) {
  auto e = proto::event_from_json(line);
  REQUIRE_MESSAGE(e, (e ? "" : e.error().message));
  v1::Event parsed;
  REQUIRE(parsed.ParseFromString(e->body));
  return parsed;
}

uint64_t json_number(const std::string& json, const std::string& key) {
  auto at = json.find("\"" + key + "\":");
  REQUIRE(at != std::string::npos);
  return std::stoull(json.substr(at + key.size() + 3));
}

}  // namespace

TEST_CASE("every verb works on a buffer that a running agent is writing") {
  test::TempDir dir;
  const std::string buffer = dir.file("buffer.db");
  const std::string config = write_config(dir, buffer, 0, 3000, false);
  test::Child agent({kAgent, "run", "--config", config}, /*capture_stdout=*/false);
  // Wait until the agent has written something.
  for (int i = 0; i < 100; ++i) {
    auto s = run({kAgent, "buffer", "stats", "--path", buffer, "--json"});
    if (s.exit_code == 0 && json_number(s.out, "pending_events") > 300) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  auto table = run({kAgent, "buffer", "stats", "--path", buffer});
  CHECK(table.exit_code == 0);
  CHECK(table.out.find("agent id        cli-test") != std::string::npos);
  CHECK(table.out.find("pixel") != std::string::npos);
  auto json = run({kAgent, "buffer", "stats", "--path", buffer, "--json"});
  CHECK(json.exit_code == 0);
  // The agent's configuration names the same buffer (buffer.path) when --path is left out.
  auto by_config = run({kAgent, "buffer", "stats", "--config", config, "--json"});
  CHECK(by_config.exit_code == 0);
  CHECK(by_config.out.find("\"path\":\"" + buffer + "\"") != std::string::npos);
  CHECK(json_number(json.out, "pending_events") > 300);
  CHECK(json.out.find("\"groups\":[{\"kind\":\"pixel\"") != std::string::npos);

  auto peek = run({kAgent, "buffer", "peek", "--path", buffer, "-n", "5", "--json"});
  CHECK(peek.exit_code == 0);
  auto peeked = lines_of(peek.out);
  REQUIRE(peeked.size() == 5);
  CHECK(peeked[0].find("\"seq\":\"1\"") != std::string::npos);
  auto sensors = run({kAgent, "buffer", "peek", "--path", buffer, "--kind", "sensor", "--since",
                      "10", "-n", "3", "--json"});
  CHECK(sensors.exit_code == 0);
  for (const std::string& l : lines_of(sensors.out)) {
    CHECK(l.find("EVENT_KIND_SENSOR") != std::string::npos);
    CHECK(l.find("\"seq\":\"1\"") == std::string::npos);
  }
  auto human = run({kAgent, "buffer", "peek", "--path", buffer, "-n", "1"});
  CHECK(human.out.find("#1  pixel") != std::string::npos);

  auto verify = run({kAgent, "buffer", "verify", "--path", buffer});
  CHECK(verify.exit_code == 0);
  CHECK(verify.out.find("ok:") == 0);

  // export → import into a new file: the same events, in the same order.
  auto exported = run({kAgent, "buffer", "export", "--path", buffer, "--format", "ndjson"});
  REQUIRE(exported.exit_code == 0);
  auto lines = lines_of(exported.out);
  REQUIRE(lines.size() > 300);
  const std::string copy = dir.file("copy.db");
  auto imported =
      run({kAgent, "buffer", "import", "--path", copy, "--format", "ndjson"}, exported.out);
  REQUIRE_MESSAGE(imported.exit_code == 0, imported.err);
  auto again = run({kAgent, "buffer", "export", "--path", copy});
  auto copied = lines_of(again.out);
  REQUIRE(copied.size() == lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    CHECK(google::protobuf::util::MessageDifferencer::Equals(content_of(lines[i]),
                                                             content_of(copied[i])));
  }
  CHECK(copied[0].find("\"agent_id\":\"cli-test\"") != std::string::npos);

  // The protobuf format too, imported into the live buffer itself (a requeue).
  auto proto_out = run({kAgent, "buffer", "export", "--path", copy, "--format", "protobuf"});
  REQUIRE(proto_out.exit_code == 0);
  // Keeping their seqs needs the agent stopped; a requeue as new events does not.
  auto kept =
      run({kAgent, "buffer", "import", "--path", buffer, "--format", "protobuf"}, proto_out.out);
  CHECK(kept.exit_code == 1);
  CHECK_MESSAGE(kept.err.find("in use by another process") != std::string::npos, kept.err);
  CHECK(kept.err.find("--new-seqs") != std::string::npos);
  auto requeued =
      run({kAgent, "buffer", "import", "--path", buffer, "--format", "protobuf", "--new-seqs"},
          proto_out.out);
  CHECK_MESSAGE(requeued.exit_code == 0, requeued.err);
  CHECK(requeued.err.find("imported " + std::to_string(lines.size())) != std::string::npos);

  auto refused = run({kAgent, "buffer", "purge", "--path", buffer, "--kind", "pixel"});
  CHECK(refused.exit_code == 2);
  CHECK(refused.err.find("--yes") != std::string::npos);
  const uint64_t next_before_purge =
      json_number(run({kAgent, "buffer", "stats", "--path", buffer, "--json"}).out, "next_seq");
  auto purged = run({kAgent, "buffer", "purge", "--path", buffer, "--kind", "pixel", "--yes"});
  CHECK_MESSAGE(purged.exit_code == 0, purged.err);
  CHECK(purged.out.find("purged ") == 0);

  // The agent is still writing, and every seq is still unique (agent + two tools wrote).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  agent.signal(SIGTERM);
  CHECK(agent.wait() == 0);
  auto final_stats = run({kAgent, "buffer", "stats", "--path", buffer, "--json"});
  CHECK(final_stats.out.find("{\"reason\":\"purged\",\"kind\":\"pixel\"") != std::string::npos);
  auto all = lines_of(run({kAgent, "buffer", "export", "--path", buffer}).out);
  std::set<uint64_t> seqs;
  for (const std::string& l : all) {
    auto at = l.find("\"seq\":\"");
    uint64_t seq = std::stoull(l.substr(at + 7));
    CHECK(seqs.insert(seq).second);
    // Every pixel hit older than the purge is gone; the agent went on adding new ones.
    if (l.find("EVENT_KIND_PIXEL") != std::string::npos) CHECK(seq >= next_before_purge);
  }
  CHECK(verify.exit_code == 0);
}

TEST_CASE("bad flags print usage and exit 2; a missing file is one line and exit 1") {
  // Without --path the configuration names the buffer; without either, say so.
  auto no_path = run({kAgent, "buffer", "stats", "--config", "/nonexistent/agent.toml"});
  CHECK(no_path.exit_code == 2);
  CHECK(no_path.err.find("--path") != std::string::npos);
  CHECK(no_path.err.find("/nonexistent/agent.toml") != std::string::npos);
  CHECK(run({kAgent, "buffer", "peek", "--path", "x", "--limit", "many"}).exit_code == 2);
  CHECK(run({kAgent, "buffer", "peek", "--path", "x", "--kind", "video"}).exit_code == 2);
  CHECK(run({kAgent, "buffer", "frobnicate"}).exit_code == 2);
  CHECK(run({kAgent, "buffer", "export", "--path", "x", "--format", "xml"}).exit_code == 2);
  CHECK(run({kAgent}).exit_code == 2);

  auto missing = run({kAgent, "buffer", "stats", "--path", "/nonexistent/buffer.db"});
  CHECK(missing.exit_code == 1);
  CHECK(lines_of(missing.err).size() == 1);
  CHECK(missing.err.find("/nonexistent/buffer.db: no such file") != std::string::npos);
  CHECK(run({kAgent, "buffer", "verify", "--path", "/nonexistent/b.db"}).exit_code == 1);
}

TEST_CASE("a bad configuration names the key and exits 2") {
  test::TempDir dir;
  std::string config = dir.file("agent.toml");
  std::ofstream(config) << "[buffer]\nmax_bytes = \"plenty\"\n";
  auto r = run({kAgent, "run", "--config", config});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("buffer.max_bytes = \"plenty\"") != std::string::npos);
  std::ofstream(config) << "[buffer]\npath = \"" << dir.file("b.db") << "\"\n";
  auto typo = run({kAgent, "run", "--config", config, "--set", "buffer.synchronus=off"});
  CHECK(typo.exit_code == 2);
  CHECK(typo.err.find("unknown key buffer.synchronus") != std::string::npos);
}

TEST_CASE(
    "a corrupt file: moved aside, its readable events salvaged with their seqs, the rest counted") {
  test::TempDir dir;
  const std::string buffer = dir.file("buffer.db");
  REQUIRE(
      run({kAgent, "run", "--config", write_config(dir, buffer, 20000, 200000, true)}).exit_code ==
      0);
  REQUIRE(std::system(
              ("sqlite3 " + buffer + " 'PRAGMA wal_checkpoint(TRUNCATE)' >/dev/null").c_str()) ==
          0);
  {
    std::fstream f(buffer, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1024 * 1024);
    std::string garbage(16 * 1024, '\x7f');
    f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  auto verify = run({kAgent, "buffer", "verify", "--path", buffer});
  CHECK(verify.exit_code == 3);
  CHECK(verify.out.find("CORRUPT") == 0);

  auto restarted = run({kAgent, "run", "--config", write_config(dir, buffer, 1000, 100000, true)});
  CHECK(restarted.exit_code == 0);
  CHECK(restarted.err.find("failed its integrity check") != std::string::npos);
  CHECK_MESSAGE(
      restarted.err.find("20000 events were pending in the corrupt file (seqs 1..20000)") !=
          std::string::npos,
      restarted.err);
  CHECK(run({kAgent, "buffer", "verify", "--path", buffer}).exit_code == 0);
  auto stats = run({kAgent, "buffer", "stats", "--path", buffer, "--json"});
  CHECK(json_number(stats.out, "corrupt_recoveries") == 1);
  const uint64_t lost = json_number(stats.out, "corrupt_lost");
  const uint64_t pending = json_number(stats.out, "pending_events");
  const uint64_t salvaged = pending - 1000;
  MESSAGE("salvaged " << salvaged << ", lost " << lost);
  CHECK(lost > 0);                  // 16 KiB of pages are gone
  CHECK(salvaged > 15000);          // read from both ends of the damage
  CHECK(salvaged + lost == 20000);  // every pending event is one or the other
  CHECK(json_number(stats.out, "next_seq") > 20000 + 1000);  // new ones above the old seqs
  // The salvaged events kept their seqs (the gateway recognises what it already has).
  std::set<uint64_t> old_seqs;
  for (const auto& line : lines_of(run({kAgent, "buffer", "export", "--path", buffer}).out)) {
    const uint64_t seq = std::stoull(line.substr(line.find("\"seq\":\"") + 7));
    if (seq <= 20000) old_seqs.insert(seq);
  }
  CHECK(old_seqs.size() == salvaged);

  // What `buffer export` can still read of the file moved aside, imported again: nothing is
  // stored twice, and a second import of the same stores nothing at all.
  std::string aside;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    const std::string name = entry.path().filename().string();
    if (name.find("buffer.db.corrupt-") == 0 && name.find("-wal") == std::string::npos &&
        name.find("-shm") == std::string::npos) {
      aside = entry.path().string();
    }
  }
  REQUIRE(!aside.empty());
  const std::string salvage = run({kAgent, "buffer", "export", "--path", aside}).out;
  REQUIRE(!lines_of(salvage).empty());
  for (int i = 0; i < 2; ++i) {
    auto imported = run({kAgent, "buffer", "import", "--path", buffer}, salvage);
    CHECK_MESSAGE(imported.exit_code == 0, imported.err);
    CHECK_MESSAGE(imported.err.find("imported 0 events") != std::string::npos, imported.err);
  }
  stats = run({kAgent, "buffer", "stats", "--path", buffer, "--json"});
  CHECK(json_number(stats.out, "pending_events") == pending);
}

TEST_CASE("with the clock at the epoch, log lines say 1970-01-01, not 1900-01-00") {
  test::TempDir dir;
  // A buffer in a directory that does not exist: the agent logs an error and exits.
  const std::string config = write_config(dir, dir.file("missing/dir/b.db"), 1, 1, true);
  auto r =
      run({"/usr/bin/faketime", "-f", "@1970-01-01 00:00:00", kAgent, "run", "--config", config});
  CHECK(r.exit_code != 0);
  CHECK_MESSAGE(r.err.rfind("1970-01-01T00:00:0", 0) == 0, r.err);
  CHECK(r.err.find("1900-") == std::string::npos);
}
