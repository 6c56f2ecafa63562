// The file sink: layout, dedupe by high-water mark, rotation, recovery after a crash that
// leaves half a group in a file.
#include "gateway/sinks/file_sink.hpp"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <set>

#include "tests/support/event_list.hpp"
#include "tests/support/file_sink_reader.hpp"
#include "tests/support/temp_dir.hpp"

using namespace outpost;
using namespace outpost::gateway;
namespace fs = std::filesystem;

namespace {

SinkBatch batch(const std::string& agent, uint64_t first, uint64_t last) {
  SinkBatch b;
  b.agent_id = agent;
  b.first_seq = first;
  b.last_seq = last;
  for (uint64_t s = first; s <= last; ++s) {
    v1::Event e;
    e.set_agent_id(agent);
    e.set_seq(s);
    e.set_kind(s % 2 ? v1::EVENT_KIND_JSON : v1::EVENT_KIND_SENSOR);
    e.set_json("{\"n\":" + std::to_string(s) + "}");
    test::push_event(b.events, e);
  }
  return b;
}

Result<SinkResult> write_sync(Sink& sink, SinkBatch b) {
  std::promise<Result<SinkResult>> p;
  auto f = p.get_future();
  sink.write(std::move(b), [&p](const Result<SinkResult>& r) { p.set_value(r); });
  return f.get();
}

std::unique_ptr<FileSink> open_ok(const FileSinkOptions& o, const Clock& c) {
  auto s = FileSink::open(o, c);
  REQUIRE_MESSAGE(s, (s ? "" : s.error().message));
  return std::move(*s);
}

}  // namespace

TEST_CASE("events land as zstd NDJSON under kind/dt/hour, and re-sent seqs are not written") {
  test::TempDir dir;
  ManualClock clock(1'790'000'000'000'000'000);  // 2026-09-21T14:13:20Z
  FileSinkOptions o;
  o.dir = dir.file("sink");
  {
    auto sink = open_ok(o, clock);
    auto r = write_sync(*sink, batch("dev-1", 1, 10));
    REQUIRE(r);
    CHECK(r->written == 10);
    auto again = write_sync(*sink, batch("dev-1", 1, 10));  // a re-sent batch
    REQUIRE(again);
    CHECK(again->written == 0);
    CHECK(again->duplicates == 10);
    auto overlap = write_sync(*sink, batch("dev-1", 6, 15));  // re-batched differently
    REQUIRE(overlap);
    CHECK(overlap->written == 5);
    CHECK(overlap->duplicates == 5);
    CHECK(write_sync(*sink, batch("dev-2", 1, 3)));
    CHECK(sink->high_water("dev-1") == 15);
    CHECK_FALSE(sink->not_ready_reason());
  }
  bool ok = false;
  auto lines = test::read_sink(o.dir, &ok);
  CHECK(ok);
  CHECK(lines.size() == 18);
  std::set<std::pair<std::string, uint64_t>> ids;
  for (auto& l : lines) ids.insert({l.agent_id, l.seq});
  CHECK(ids.size() == 18);  // each (agent, seq) exactly once
  CHECK(fs::exists(fs::path(o.dir) / "json" / "dt=2026-09-21" / "hour=14"));
  CHECK(fs::exists(fs::path(o.dir) / "sensor" / "dt=2026-09-21" / "hour=14"));

  // The high-water marks survive a restart: the re-sent batch is still a duplicate.
  auto sink = open_ok(o, clock);
  CHECK(sink->high_water("dev-1") == 15);
  auto resent = write_sync(*sink, batch("dev-1", 11, 15));
  REQUIRE(resent);
  CHECK(resent->duplicates == 5);
}

// The events' own agent_id is what the agent wrote; the sink writes the batch's, which the
// gateway takes from the device's certificate.
TEST_CASE("both formats write the batch's identity as each event's agent_id, whatever it says") {
  for (bool protobuf : {false, true}) {
    CAPTURE(protobuf);
    test::TempDir dir;
    ManualClock clock(1'790'000'000'000'000'000);
    FileSinkOptions o;
    o.dir = dir.file("sink");
    o.protobuf = protobuf;
    SinkBatch b = batch("forged", 1, 6);
    b.agent_id = "dev-1";
    {
      auto sink = open_ok(o, clock);
      auto r = write_sync(*sink, std::move(b));
      REQUIRE(r);
      CHECK(r->written == 6);
    }
    bool ok = false;
    auto lines = test::read_sink(o.dir, &ok, protobuf);
    CHECK(ok);
    REQUIRE(lines.size() == 6);
    std::set<uint64_t> seqs;
    for (const auto& l : lines) {
      CHECK(l.agent_id == "dev-1");
      CHECK(l.json.find("forged") == std::string::npos);
      CHECK(l.json.find("\"json\":{\"n\":" + std::to_string(l.seq) + "}") != std::string::npos);
      seqs.insert(l.seq);
    }
    CHECK(seqs == std::set<uint64_t>{1, 2, 3, 4, 5, 6});
  }
}

TEST_CASE("a batch that would leave a gap is refused; an unknown agent may start anywhere") {
  test::TempDir dir;
  ManualClock clock;
  FileSinkOptions o;
  o.dir = dir.file("sink");
  auto sink = open_ok(o, clock);
  REQUIRE(write_sync(*sink, batch("dev-1", 500, 510)));    // first contact: any start
  auto gap = write_sync(*sink, batch("dev-1", 520, 530));  // 511..519 never arrived
  REQUIRE_FALSE(gap);
  CHECK(gap.error().message.find("up to 510") != std::string::npos);
  CHECK(gap.error().code == sink_errc::gap);
  CHECK(describe_sink_error(gap.error()).rfind("gap: ", 0) == 0);
  CHECK(sink->high_water("dev-1") == 510);
  auto next = write_sync(*sink, batch("dev-1", 511, 530));
  REQUIRE(next);
  CHECK(next->written == 20);
  // Seqs missing inside a range (dropped on the device) are not a gap.
  SinkBatch sparse = batch("dev-1", 531, 540);
  sparse.events.erase(sparse.events.begin(), sparse.events.begin() + 5);
  auto r = write_sync(*sink, std::move(sparse));
  REQUIRE(r);
  CHECK(r->written == 5);
  CHECK(sink->high_water("dev-1") == 540);
}

TEST_CASE("an agent without a mark starts where its session started: no overtaking") {
  test::TempDir dir;
  ManualClock clock;
  FileSinkOptions o;
  o.dir = dir.file("sink");
  auto sink = open_ok(o, clock);
  // The session's first batch (1..10) was refused before it reached the sink (a rate limit,
  // a full queue or a failed write); the next one of the same window must not be written,
  // or 1..10 would count as duplicates when they are sent again.
  SinkBatch later = batch("dev-1", 11, 20);
  later.session_first_seq = 1;
  auto overtaking = write_sync(*sink, later);
  REQUIRE_FALSE(overtaking);
  CHECK(overtaking.error().message.find("up to 0") != std::string::npos);
  CHECK(sink->high_water("dev-1") == 0);
  SinkBatch first = batch("dev-1", 1, 10);
  first.session_first_seq = 1;
  auto resent = write_sync(*sink, first);
  REQUIRE(resent);
  CHECK(resent->written == 10);
  auto then = write_sync(*sink, later);
  REQUIRE(then);
  CHECK(then->written == 10);
  CHECK(sink->high_water("dev-1") == 20);
  // A batch of a session past its start, above the mark: a gap the agent can still fill.
  SinkBatch ahead = batch("dev-1", 30, 40);
  ahead.session_first_seq = 25;
  CHECK_FALSE(write_sync(*sink, ahead));
  // A session that starts past the mark: the agent has deleted 21..29 (acknowledged to it
  // before), so they can never come; counted as lost and the batch is taken (sinks/marks.hpp).
  SinkBatch jump = batch("dev-1", 30, 40);
  jump.session_first_seq = 30;
  auto taken = write_sync(*sink, jump);
  REQUIRE(taken);
  CHECK(taken->written == 11);
  CHECK(taken->gap_lost == 9);
  CHECK(taken->gap_first == 21);
  CHECK(sink->high_water("dev-1") == 40);
}

TEST_CASE("files rotate by size and by age, and never straddle an hour") {
  test::TempDir dir;
  ManualClock clock(1'790'000'000'000'000'000);
  FileSinkOptions o;
  o.dir = dir.file("sink");
  o.rotate_bytes = 200;  // every group of more than a few events rotates
  o.rotate_age_ns = 60'000'000'000;
  auto sink = open_ok(o, clock);
  auto count_files = [&] {
    size_t n = 0;
    for (auto& e : fs::recursive_directory_iterator(o.dir)) n += e.path().extension() == ".zst";
    return n;
  };
  REQUIRE(write_sync(*sink, batch("a", 1, 100)));
  REQUIRE(write_sync(*sink, batch("a", 101, 200)));
  size_t after_size = count_files();
  CHECK(after_size == 4);               // two kinds, each rotated once by size
  clock.advance_ns(3'600'000'000'000);  // the next hour
  REQUIRE(write_sync(*sink, batch("a", 201, 201)));
  CHECK(fs::exists(fs::path(o.dir) / "json" / "dt=2026-09-21" / "hour=15"));
  CHECK(test::read_sink(o.dir).size() == 201);
}

TEST_CASE("a crash mid-group: the file is cut back to its last commit at open") {
  test::TempDir dir;
  FileSinkOptions o;
  o.dir = dir.file("sink");
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ManualClock clock(1'790'000'000'000'000'000);
    auto s = FileSink::open(o, clock);
    if (!s) ::_exit(1);
    if (!write_sync(**s, batch("dev-1", 1, 9))) ::_exit(2);
    // Half of a next group reached a file, and then the process died (no destructor).
    for (auto& e : fs::recursive_directory_iterator(o.dir)) {
      if (e.path().extension() == ".zst") {
        std::ofstream(e.path(), std::ios::app | std::ios::binary) << "\x28\xb5\x2f\xfd torn";
      }
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  bool ok = true;
  test::read_sink(o.dir, &ok);
  CHECK_FALSE(ok);  // the torn tail is there before recovery

  ManualClock clock(1'790'000'000'000'000'000);
  auto sink = open_ok(o, clock);
  CHECK(sink->high_water("dev-1") == 9);
  auto lines = test::read_sink(o.dir, &ok);
  CHECK(ok);
  CHECK(lines.size() == 9);
}

TEST_CASE("a sink directory that cannot be created is a clear error") {
  ManualClock clock;
  FileSinkOptions o;
  o.dir = "/proc/outpost-cannot-be-here";
  auto s = FileSink::open(o, clock);
  REQUIRE_FALSE(s);
  CHECK(s.error().message.find("/proc/outpost-cannot-be-here") != std::string::npos);
}

TEST_CASE("dead letters go to bad/ in the same commit as the mark, once, whatever the format") {
  for (bool protobuf : {false, true}) {
    CAPTURE(protobuf);
    test::TempDir dir;
    ManualClock clock(1'790'000'000'000'000'000);
    FileSinkOptions o;
    o.dir = dir.file("sink");
    o.protobuf = protobuf;
    auto sink = open_ok(o, clock);
    auto make = [] {
      SinkBatch b = batch("dev-1", 1, 6);
      b.dead_letters.resize(6);
      b.dead_letters[1] = R"({"agent_id":"dev-1","seq":"2","reason":"wrong_type"})";
      b.dead_letters[4] = R"({"agent_id":"dev-1","seq":"5","reason":"unknown_schema"})";
      return b;
    };
    auto r = write_sync(*sink, make());
    REQUIRE(r);
    CHECK(r->written == 4);
    CHECK(r->dead_lettered == 2);
    auto again = write_sync(*sink, make());  // resent: duplicates, bad ones too
    REQUIRE(again);
    CHECK(again->duplicates == 6);
    CHECK(again->dead_lettered == 0);
    sink.reset();
    std::map<std::string, std::set<uint64_t>> by_dir;
    size_t bad_files = 0;
    for (auto& entry : fs::recursive_directory_iterator(o.dir)) {
      const std::string rel = fs::relative(entry.path(), o.dir).string();
      if (rel.rfind("bad/", 0) == 0 && entry.is_regular_file()) {
        ++bad_files;
        CHECK(entry.path().string().find(".ndjson.zst") != std::string::npos);
      }
    }
    CHECK(bad_files == 1);
    bool frames_ok = true;
    // The bad/ file is NDJSON; read it as such whatever the format of the others.
    for (const test::SinkLine& l : test::read_sink(o.dir + "/bad", &frames_ok)) {
      by_dir["bad"].insert(l.seq);
      CHECK(!test::json_field(l.json, "reason").empty());
    }
    CHECK(frames_ok);
    CHECK(by_dir["bad"] == std::set<uint64_t>{2, 5});
  }
}
