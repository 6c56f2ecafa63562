// Behaviour of SqliteBuffer beyond the model test: limits and policies, drop counters,
// max age, disk full, corruption, schema versions, a second writer process.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "agent/buffer/buffer_inspector.hpp"
#include "tests/unit/agent/buffer/buffer_test_support.hpp"

using namespace outpost;
using namespace outpost::agent;
using test::append_one;
using test::event_of;

namespace {

std::unique_ptr<SqliteBuffer> open_ok(const BufferOptions& o, const Clock& clock) {
  auto b = SqliteBuffer::open(o, clock);
  REQUIRE_MESSAGE(b, (b ? "" : b.error().describe()));
  return std::move(*b);
}

uint64_t dropped(const BufferStats& s, DropReason reason, EventKind kind) {
  for (const DropCount& d : s.dropped) {
    if (d.reason == reason && d.kind == kind) return d.count;
  }
  return 0;
}

uint64_t pending_of(const BufferStats& s, EventKind kind) {
  uint64_t n = 0;
  for (const GroupStats& g : s.groups) n += g.kind == kind ? g.events : 0;
  return n;
}

std::vector<std::string> corrupt_files(const test::TempDir& dir) {
  std::vector<std::string> out;
  for (auto& entry : std::filesystem::directory_iterator(dir.path())) {
    std::string name = entry.path().filename();
    if (name.find(".corrupt-") != std::string::npos && name.find("-wal") == std::string::npos) {
      out.push_back(entry.path());
    }
  }
  return out;
}

int64_t query_int(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

std::vector<uint64_t> inspected_seqs(const std::string& path) {
  auto inspector = BufferInspector::open(path);
  REQUIRE(inspector);
  std::vector<uint64_t> seqs;
  REQUIRE(inspector->scan({}, [&](const StoredEvent& e) {
    seqs.push_back(e.seq);
    return true;
  }));
  return seqs;
}

void exec_sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
}

}  // namespace

TEST_CASE("sequence numbers survive restarts and never repeat, even after acks") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  {
    auto b = open_ok(o, clock);
    for (int i = 0; i < 5; ++i) REQUIRE(append_one(*b, event_of(EventKind::json, 10)));
    REQUIRE(b->ack(5));  // the buffer is empty now: max(seq) cannot give the next seq
  }
  auto b = open_ok(o, clock);
  auto r = append_one(*b, event_of(EventKind::json, 10));
  REQUIRE(r);
  CHECK(r->first_seq == 6);
  auto s = b->stats();
  REQUIRE(s);
  CHECK(s->acked_seq == 5);
}

TEST_CASE("reject policy: a full buffer refuses with `full`, counts it, and keeps the counter") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  o.max_bytes = 2000;
  uint64_t stored = 0;
  {
    auto b = open_ok(o, clock);
    Result<AppendResult> r = AppendResult{};
    while ((r = append_one(*b, event_of(EventKind::json, 100)))) ++stored;
    CHECK(r.error().code == buffer_errc::full);
    CHECK(r.error().message.find("buffer.max_bytes") != std::string::npos);
    CHECK(stored == 20);
    std::vector<NewEvent> two{event_of(EventKind::json, 100), event_of(EventKind::json, 100)};
    CHECK_FALSE(b->append(std::move(two)).get());  // all or nothing
    auto s = b->stats();
    REQUIRE(s);
    CHECK(dropped(*s, DropReason::rejected_full, EventKind::json) == 3);
    CHECK(s->pending_events == 20);
    // After an ack there is room again.
    REQUIRE(b->ack(5));
    CHECK(append_one(*b, event_of(EventKind::json, 100)));
  }
  auto b = open_ok(o, clock);
  auto s = b->stats();
  REQUIRE(s);
  CHECK(dropped(*s, DropReason::rejected_full, EventKind::json) == 3);
  auto inspected = BufferInspector::open(o.path);
  REQUIRE(inspected);
  auto full = inspected->stats();
  REQUIRE(full);
  CHECK(dropped(*full, DropReason::rejected_full, EventKind::json) == 3);
}

TEST_CASE("drop_oldest evicts the oldest lowest-priority events of drop_oldest kinds only") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  o.max_bytes = 6400;
  o.kinds[kind_index(EventKind::pixel)].policy = FullPolicy::drop_oldest;
  o.kinds[kind_index(EventKind::sensor)].policy = FullPolicy::drop_oldest;
  o.kinds[kind_index(EventKind::json)].policy = FullPolicy::reject;
  auto b = open_ok(o, clock);
  // 10 json (reject kind), 10 high-priority sensor, 10 low-priority pixel: 3000 bytes.
  for (int i = 0; i < 10; ++i) REQUIRE(append_one(*b, event_of(EventKind::json, 100)));
  for (int i = 0; i < 10; ++i) REQUIRE(append_one(*b, event_of(EventKind::sensor, 100, 5)));
  for (int i = 0; i < 10; ++i) REQUIRE(append_one(*b, event_of(EventKind::pixel, 100, 0)));
  // 40 more pixel hits: the buffer must make room by dropping old pixel hits only.
  for (int i = 0; i < 40; ++i) REQUIRE(append_one(*b, event_of(EventKind::pixel, 100, 0)));
  auto s = b->stats();
  REQUIRE(s);
  CHECK(s->pending_bytes <= o.max_bytes);
  CHECK(pending_of(*s, EventKind::json) == 10);
  CHECK(pending_of(*s, EventKind::sensor) == 10);
  uint64_t evicted = dropped(*s, DropReason::evicted_full, EventKind::pixel);
  CHECK(evicted > 0);
  CHECK(pending_of(*s, EventKind::pixel) + evicted == 50);
  // The survivors are the newest pixel hits: seqs are contiguous up to the last one.
  auto batch = b->read_batch(20, 1000, 1 << 20);
  REQUIRE(batch);
  uint64_t first_pixel = batch->front().seq;
  CHECK(first_pixel == 71 - pending_of(*s, EventKind::pixel));
  CHECK(dropped(*s, DropReason::evicted_full, EventKind::sensor) == 0);

  // A low-priority sensor reading does not evict high-priority ones; it is refused.
  for (int i = 0; i < 100; ++i) {
    auto r = append_one(*b, event_of(EventKind::sensor, 100, 5));
    REQUIRE(r);
  }
  s = b->stats();
  REQUIRE(s);
  CHECK(pending_of(*s, EventKind::pixel) == 0);  // all pixel hits went first (priority 0)
  CHECK(pending_of(*s, EventKind::json) == 10);
  // (The last eviction left some headroom, so a few may still fit.)
  Result<AppendResult> low = AppendResult{};
  for (int i = 0; i < 10 && low; ++i) low = append_one(*b, event_of(EventKind::sensor, 100, 1));
  REQUIRE_FALSE(low);
  CHECK(low.error().code == buffer_errc::full);
  s = b->stats();
  REQUIRE(s);
  CHECK(dropped(*s, DropReason::rejected_full, EventKind::sensor) == 1);
}

TEST_CASE("max_age drops old events of that kind only, counted as expired") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  o.kinds[kind_index(EventKind::pixel)].max_age_ns = 3'600'000'000'000;  // 1h
  auto b = open_ok(o, clock);
  for (int i = 0; i < 5; ++i) REQUIRE(append_one(*b, event_of(EventKind::pixel, 50)));
  for (int i = 0; i < 5; ++i) REQUIRE(append_one(*b, event_of(EventKind::sensor, 50)));
  clock.advance_ns(1'800'000'000'000);  // 30 min later: 3 more pixel hits
  for (int i = 0; i < 3; ++i) REQUIRE(append_one(*b, event_of(EventKind::pixel, 50)));
  REQUIRE(b->expire_now());
  auto s = b->stats();
  REQUIRE(s);
  CHECK(s->pending_events == 13);
  clock.advance_ns(1'900'000'000'000);  // 61 min after the first batch
  REQUIRE(b->expire_now());
  s = b->stats();
  REQUIRE(s);
  CHECK(dropped(*s, DropReason::expired, EventKind::pixel) == 5);
  CHECK(pending_of(*s, EventKind::pixel) == 3);
  CHECK(pending_of(*s, EventKind::sensor) == 5);
  clock.advance_ns(3'600'000'000'000);
  REQUIRE(b->expire_now());
  s = b->stats();
  REQUIRE(s);
  CHECK(dropped(*s, DropReason::expired, EventKind::pixel) == 8);
  CHECK(s->pending_events == 5);
}

TEST_CASE("a wall clock jump neither expires events nor stops expiry (the age clock)") {
  test::TempDir dir;
  ManualClock clock;
  const int64_t start = clock.now_ns();
  constexpr int64_t kMinute = 60'000'000'000;
  auto o = test::fast_options(dir.file("b.db"));
  o.kinds[kind_index(EventKind::pixel)].max_age_ns = 60 * kMinute;
  {
    auto b = open_ok(o, clock);
    for (int i = 0; i < 5; ++i) REQUIRE(append_one(*b, event_of(EventKind::pixel, 50)));
    clock.set_ns(start + 365 * 24 * 60 * kMinute);  // a year ahead, at once
    REQUIRE(b->expire_now());
    auto s = b->stats();
    REQUIRE(s);
    CHECK(s->pending_events == 5);  // the wall clock's year is not their age
    CHECK(dropped(*s, DropReason::expired, EventKind::pixel) == 0);
    clock.advance_ns(61 * kMinute);  // an hour really passes
    REQUIRE(b->expire_now());
    s = b->stats();
    REQUIRE(s);
    CHECK(dropped(*s, DropReason::expired, EventKind::pixel) == 5);
    // Back to 1970 (a dead RTC battery): expiry goes on.
    clock.set_ns(1'000'000'000);
    for (int i = 0; i < 3; ++i) REQUIRE(append_one(*b, event_of(EventKind::pixel, 50)));
    clock.advance_ns(30 * kMinute);
    REQUIRE(b->expire_now());
    CHECK(b->stats()->pending_events == 3);
    clock.advance_ns(31 * kMinute);
    REQUIRE(b->expire_now());
    s = b->stats();
    REQUIRE(s);
    CHECK(s->pending_events == 0);
    CHECK(dropped(*s, DropReason::expired, EventKind::pixel) == 8);
    // collected_at never went back with the clock: seq order and time order agree.
    auto after = append_one(*b, event_of(EventKind::pixel, 50));
    REQUIRE(after);
    auto rows = b->read_batch(0, 10, 1 << 20);
    REQUIRE(rows);
    REQUIRE(rows->size() == 1);
    CHECK(rows->front().collected_at_ns > start);
  }
  // Stopped, and started again with the wall clock a day behind: the age clock carries on
  // from where the last run left it, so the pending event still expires an hour after it
  // was stored, not a day later.
  clock.set_ns(start - 24 * 60 * kMinute);
  auto b = open_ok(o, clock);
  clock.advance_ns(61 * kMinute);
  REQUIRE(b->expire_now());
  auto s = b->stats();
  REQUIRE(s);
  CHECK(s->pending_events == 0);
  CHECK(dropped(*s, DropReason::expired, EventKind::pixel) == 9);
}

TEST_CASE("a full file is an error to the producer, loses nothing, and heals after acks") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  o.max_file_bytes = 256 * 1024;
  auto b = open_ok(o, clock);
  uint64_t stored = 0;
  Result<AppendResult> r = AppendResult{};
  for (int i = 0; i < 100'000 && (r = append_one(*b, event_of(EventKind::json, 500))); ++i) {
    ++stored;
  }
  REQUIRE_FALSE(r);
  CHECK(r.error().code == buffer_errc::disk_full);
  CHECK(r.error().message.find("full") != std::string::npos);
  CHECK(stored > 100);
  CHECK(b->healthy());
  // Everything acknowledged as durable is still there.
  auto all = b->read_batch(0, 1'000'000, 1ULL << 30);
  REQUIRE(all);
  CHECK(all->size() == stored);
  CHECK(all->back().seq == stored);
  // Refused again while full; writing resumes by itself once acks free pages.
  CHECK_FALSE(append_one(*b, event_of(EventKind::json, 500)));
  REQUIRE(b->ack(stored / 2));
  auto again = append_one(*b, event_of(EventKind::json, 500));
  REQUIRE(again);
  CHECK(again->first_seq == stored + 1);  // the refused appends consumed no seq
}

TEST_CASE("a corrupt file is moved aside at open, counted, and seqs continue above it") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  {
    auto b = open_ok(o, clock);
    std::vector<NewEvent> many;
    for (int i = 0; i < 3000; ++i) many.push_back(event_of(EventKind::json, 200));
    REQUIRE(b->append(std::move(many)).get());
    std::promise<Result<AppendResult>> done;
    b->append_with_progress({}, {"spool:1:2:3:4", "4096 17"},
                            [&](const Result<AppendResult>& r) { done.set_value(r); });
    REQUIRE(done.get_future().get());
  }
  exec_sql(o.path, "PRAGMA wal_checkpoint(TRUNCATE)");
  auto size = std::filesystem::file_size(o.path);
  REQUIRE(size > 100'000);
  {
    std::fstream f(o.path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size / 2));
    std::string garbage(8192, '\x5a');
    f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  auto verdict = BufferInspector::open(o.path)->verify();
  REQUIRE(verdict);
  CHECK_FALSE(verdict->ok);

  auto b = open_ok(o, clock);
  auto aside = corrupt_files(dir);
  REQUIRE(aside.size() == 1);
  auto s = b->stats();
  REQUIRE(s);
  // What could be read was salvaged with its seqs; the rest is counted.
  CHECK(s->pending_events + s->corrupt_lost == 3000);
  CHECK(s->corrupt_lost > 0);
  CHECK(s->corrupt_recoveries == 1);
  auto r = append_one(*b, event_of(EventKind::json, 10));
  REQUIRE(r);
  CHECK(r->first_seq > 3000);  // never a seq the lost file may have handed out
  // A source's progress came over with the events (its table was readable).
  auto progress = b->read_progress("spool:");
  REQUIRE(progress);
  REQUIRE(progress->size() == 1);
  CHECK(progress->front().value == "4096 17");
  auto moved = BufferInspector::open(aside[0]);
  REQUIRE(moved);
  CHECK_FALSE(moved->verify()->ok);
}

TEST_CASE("garbage that is not a database at all is recovered the same way") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  std::ofstream(o.path) << std::string(10000, 'x');
  auto b = open_ok(o, clock);
  CHECK(corrupt_files(dir).size() == 1);
  CHECK(append_one(*b, event_of(EventKind::pixel, 10)));
}

TEST_CASE("recover_corrupt=false refuses a corrupt file and leaves it where it is") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  o.recover_corrupt = false;
  std::ofstream(o.path) << std::string(10000, 'x');
  auto b = SqliteBuffer::open(o, clock);
  REQUIRE_FALSE(b);
  CHECK(b.error().code == buffer_errc::corrupt);
  CHECK(corrupt_files(dir).empty());
}

TEST_CASE("acknowledged segments are dropped whole; a partly acknowledged one hides its rows") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));  // 32 seqs per segment
  const std::string segments =
      "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name GLOB 'events_*'";
  {
    auto b = open_ok(o, clock);
    std::vector<NewEvent> many;
    for (int i = 0; i < 100; ++i) many.push_back(event_of(EventKind::json, 10));
    REQUIRE(b->append(std::move(many)).get());  // seqs 1..100: segments 0, 32, 64, 96
    CHECK(query_int(o.path, segments) == 4);
    REQUIRE(b->ack(40));  // drops 0 (1..31); hides 32..40 of segment 32
    CHECK(query_int(o.path, segments) == 3);
    CHECK(query_int(o.path, "SELECT count(*) FROM events_32") == 32);  // hidden, not deleted
    auto s = b->stats();
    REQUIRE(s);
    CHECK(s->pending_events == 60);
    CHECK(s->pending_bytes == 600);
    auto first = b->read_batch(0, 1, 1 << 20);
    REQUIRE(first);
    REQUIRE(first->size() == 1);
    CHECK(first->front().seq == 41);  // reading from 0 never returns hidden rows
  }
  // The read-only tools and a reopened writer see the same: acked_seq hides the rows.
  auto seqs = inspected_seqs(o.path);
  REQUIRE(seqs.size() == 60);
  CHECK(seqs.front() == 41);
  CHECK(seqs.back() == 100);
  auto inspector = BufferInspector::open(o.path);
  REQUIRE(inspector);
  auto file_stats = inspector->stats();
  REQUIRE(file_stats);
  CHECK(file_stats->pending_events == 60);
  CHECK(file_stats->pending_bytes == 600);
  auto b = open_ok(o, clock);
  auto s = b->stats();
  REQUIRE(s);
  CHECK(s->pending_events == 60);
  // Acking the rest of a segment drops it with its hidden rows; acking all leaves no table.
  REQUIRE(b->ack(70));
  CHECK(query_int(o.path, segments) == 2);
  REQUIRE(b->ack(100));
  CHECK(query_int(o.path, segments) == 0);
  CHECK(query_int(o.path, "PRAGMA freelist_count") > 0);  // the pages are free for reuse
  auto next = append_one(*b, event_of(EventKind::json, 10));
  REQUIRE(next);
  CHECK(next->first_seq == 101);
}

TEST_CASE("purging or evicting a whole segment's pending events drops its table") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  auto b = open_ok(o, clock);
  std::vector<NewEvent> many;
  for (int i = 0; i < 64; ++i)
    many.push_back(event_of(i < 40 ? EventKind::pixel : EventKind::json, 10));
  // Segment 0: pixel 1..31; segment 32: pixel 32..40, json 41..63; segment 64: json 64.
  REQUIRE(b->append(std::move(many)).get());
  auto purged = b->purge(EventKind::pixel, std::nullopt);
  REQUIRE(purged);
  CHECK(*purged == 40);
  CHECK(query_int(o.path, "SELECT count(*) FROM sqlite_master WHERE name = 'events_0'") == 0);
  CHECK(query_int(o.path, "SELECT count(*) FROM events_32") == 23);
  auto s = b->stats();
  REQUIRE(s);
  CHECK(s->pending_events == 24);
  CHECK(dropped(*s, DropReason::purged, EventKind::pixel) == 40);
}

TEST_CASE("a version-1 file (one events table) is upgraded to segments at open") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("v1.db"));
  // The version-1 schema as docs/buffer.md described it, with 70 events of which 5 acked.
  std::string sql =
      "PRAGMA journal_mode=WAL;"
      "CREATE TABLE events (seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, priority INTEGER "
      "NOT NULL, event_time INTEGER NOT NULL, collected_at INTEGER NOT NULL, body BLOB NOT "
      "NULL);"
      "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
      "CREATE TABLE drops (reason TEXT NOT NULL, kind INTEGER NOT NULL, count INTEGER NOT NULL, "
      "PRIMARY KEY (reason, kind)) WITHOUT ROWID;"
      "INSERT INTO meta VALUES ('next_seq', 71), ('acked_seq', 5), ('agent_id', 'old-agent');"
      "INSERT INTO drops VALUES ('expired', 3, 7);"
      "WITH RECURSIVE c(x) AS (SELECT 6 UNION ALL SELECT x + 1 FROM c WHERE x < 70) "
      "INSERT INTO events SELECT x, 3, 0, x, x, 'body-' || x FROM c;"
      "PRAGMA user_version = 1;";
  exec_sql(o.path, sql);
  auto b = open_ok(o, clock);
  CHECK(query_int(o.path, "PRAGMA user_version") == 2);
  CHECK(query_int(o.path, "SELECT count(*) FROM sqlite_master WHERE name = 'events'") == 0);
  auto s = b->stats();
  REQUIRE(s);
  CHECK(s->pending_events == 65);
  CHECK(s->acked_seq == 5);
  CHECK(dropped(*s, DropReason::expired, EventKind::json) == 7);
  auto all = b->read_batch(0, 1000, 1 << 20);
  REQUIRE(all);
  REQUIRE(all->size() == 65);
  CHECK(all->front().seq == 6);
  CHECK(all->front().body == "body-6");
  CHECK(all->back().seq == 70);
  auto next = append_one(*b, event_of(EventKind::json, 10));
  REQUIRE(next);
  CHECK(next->first_seq == 71);
}

TEST_CASE("a file from a newer schema version is refused with a clear message") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  { open_ok(o, clock); }
  exec_sql(o.path, "PRAGMA user_version = 99");
  auto b = SqliteBuffer::open(o, clock);
  REQUIRE_FALSE(b);
  CHECK(b.error().code == buffer_errc::newer_schema);
  CHECK(b.error().message.find("schema version 99") != std::string::npos);
  CHECK(b.error().message.find("upgrade outpost-agent") != std::string::npos);
  CHECK(corrupt_files(dir).empty());  // not mistaken for corruption
}

TEST_CASE("a SQLite file that is not a buffer is refused, not overwritten") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("other.db"));
  exec_sql(o.path, "CREATE TABLE precious (x); INSERT INTO precious VALUES (1)");
  auto b = SqliteBuffer::open(o, clock);
  REQUIRE_FALSE(b);
  CHECK(b.error().message.find("not an Outpost buffer") != std::string::npos);
}

TEST_CASE("two writers on one file (agent + buffer import) never share a seq") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  auto agent = open_ok(o, clock);
  auto tool = open_ok(o, clock);
  std::set<uint64_t> seqs;
  for (int i = 0; i < 200; ++i) {
    SqliteBuffer& w = (i % 3 == 0) ? *tool : *agent;
    auto r = append_one(w, event_of(EventKind::json, 20));
    REQUIRE(r);
    CHECK(seqs.insert(r->first_seq).second);
  }
  auto s = agent->stats();
  REQUIRE(s);
  CHECK(s->pending_events == 200);
  CHECK(s->next_seq == 201);
}

// The writer counts acknowledged rows of a partly acknowledged segment from what read_batch
// returned, unless rows were removed otherwise since that read: then it counts them from the
// table. Were a stale read trusted, the purged sensor events would be taken off twice.
TEST_CASE("an ack after a purge between read and ack keeps the tallies right") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  auto agent = open_ok(o, clock);
  auto tool = open_ok(o, clock);  // another process: `outpost-agent buffer purge`
  auto append_mix = [&](int n) {
    std::vector<NewEvent> batch;
    for (int i = 0; i < n; ++i) {
      batch.push_back(event_of(i % 3 == 0 ? EventKind::sensor : EventKind::pixel,
                               static_cast<size_t>(10 + i % 7), i % 2));
    }
    REQUIRE(agent->append(std::move(batch)).get());
  };
  auto check_against_file = [&] {
    auto s = agent->stats();
    REQUIRE(s);
    auto inspector = BufferInspector::open(o.path);  // counts the rows themselves
    REQUIRE(inspector);
    auto counted = inspector->stats();
    REQUIRE(counted);
    CHECK(s->pending_events == counted->pending_events);
    CHECK(s->pending_bytes == counted->pending_bytes);
    // By kind (the inspector's groups are by kind and priority).
    auto by_kind = [](const BufferStats& st) {
      std::map<EventKind, std::pair<uint64_t, uint64_t>> m;
      for (const GroupStats& g : st.groups) {
        m[g.kind].first += g.events;
        m[g.kind].second += g.bytes;
      }
      return m;
    };
    CHECK(by_kind(*s) == by_kind(*counted));
  };
  append_mix(90);
  SUBCASE("purged by this process") {
    auto read = agent->read_batch(0, 60, 1 << 20);
    REQUIRE(read);
    REQUIRE(read->size() == 60);
    REQUIRE(agent->purge(EventKind::sensor, std::nullopt));
    REQUIRE(agent->ack(60));
    check_against_file();
    CHECK(agent->stats()->pending_events == 20);  // the pixels of 61..90
  }
  SUBCASE("purged by another process") {
    auto read = agent->read_batch(0, 60, 1 << 20);
    REQUIRE(read);
    REQUIRE(tool->purge(EventKind::sensor, std::nullopt));
    REQUIRE(agent->ack(60));
    check_against_file();
    CHECK(agent->stats()->pending_events == 20);
  }
  SUBCASE("nothing removed: reads chained over several batches are trusted, and right") {
    for (uint64_t after = 0; after < 60; after += 20)
      REQUIRE(agent->read_batch(after, 20, 1 << 20));
    REQUIRE(agent->ack(50));
    check_against_file();
    CHECK(agent->stats()->pending_events == 40);
  }
}

TEST_CASE("purge by kind and by age counts the events as purged") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  auto b = open_ok(o, clock);
  for (int i = 0; i < 4; ++i) REQUIRE(append_one(*b, event_of(EventKind::pixel, 10)));
  clock.advance_ns(10'000'000'000);
  for (int i = 0; i < 6; ++i) REQUIRE(append_one(*b, event_of(EventKind::pixel, 10)));
  for (int i = 0; i < 2; ++i) REQUIRE(append_one(*b, event_of(EventKind::json, 10)));
  auto old = b->purge(std::nullopt, clock.now_ns() - 5'000'000'000);
  REQUIRE(old);
  CHECK(*old == 4);
  auto json = b->purge(EventKind::json, std::nullopt);
  REQUIRE(json);
  CHECK(*json == 2);
  auto s = b->stats();
  REQUIRE(s);
  CHECK(s->pending_events == 6);
  CHECK(dropped(*s, DropReason::purged, EventKind::pixel) == 4);
  CHECK(dropped(*s, DropReason::purged, EventKind::json) == 2);
}

TEST_CASE("acks queued without waiting apply in order; each future holds its result") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  std::vector<std::future<Result<void>>> acks;
  {
    auto b = open_ok(o, clock);
    for (int i = 0; i < 100; ++i) REQUIRE(append_one(*b, event_of(EventKind::json, 10)));
    for (uint64_t up_to = 10; up_to <= 60; up_to += 10) acks.push_back(b->ack_async(up_to));
    for (auto& a : acks) CHECK(a.get());
    auto s = b->stats();
    REQUIRE(s);
    CHECK(s->acked_seq == 60);
    CHECK(s->pending_events == 40);
    acks.clear();
    acks.push_back(b->ack_async(80));  // queued, then the buffer closes: it is still applied
  }
  CHECK(acks[0].get());
  auto again = open_ok(o, clock);
  auto s = again->stats();
  REQUIRE(s);
  CHECK(s->acked_seq == 80);
  CHECK(s->pending_events == 20);
}

TEST_CASE("appends after close are refused with `closed`; callbacks always run") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  o.commit_interval_ns = 10'000'000;
  auto b = open_ok(o, clock);
  std::vector<std::future<Result<AppendResult>>> futures;
  for (int i = 0; i < 50; ++i) {
    std::vector<NewEvent> one{event_of(EventKind::json, 10)};
    futures.push_back(b->append(std::move(one)));
  }
  b.reset();  // finishes what was queued
  for (auto& f : futures) CHECK(f.get());
}

namespace {
NewEvent with_identity(const std::string& id, bool maybe_duplicate) {
  NewEvent e = event_of(EventKind::sensor, 20);
  e.identity = id;
  e.maybe_duplicate = maybe_duplicate;
  return e;
}
}  // namespace

TEST_CASE("identities: a possible duplicate of a remembered event is not stored again") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  o.identity_window = 4;
  {
    auto b = open_ok(o, clock);
    auto first = append_one(*b, with_identity("a", false));
    REQUIRE(first);
    CHECK(first->last_seq == first->first_seq);
    // Not flagged as a possible duplicate: stored even though the identity is known (a
    // source only flags what may be a redelivery).
    auto again = append_one(*b, with_identity("a", false));
    REQUIRE(again);
    CHECK(again->duplicates == 0);
    CHECK(again->last_seq == again->first_seq);
    // Flagged and known: not stored; an empty seq range.
    auto dup = append_one(*b, with_identity("a", true));
    REQUIRE(dup);
    CHECK(dup->duplicates == 1);
    CHECK(dup->last_seq + 1 == dup->first_seq);
    // Flagged but unknown (the first copy never reached the buffer): stored.
    auto fresh = append_one(*b, with_identity("b", true));
    REQUIRE(fresh);
    CHECK(fresh->duplicates == 0);
    // In one append, only the known one is skipped.
    std::vector<NewEvent> mixed;
    mixed.push_back(with_identity("b", true));
    mixed.push_back(with_identity("c", true));
    mixed.push_back(event_of(EventKind::json, 5));  // no identity: never a duplicate
    auto m = b->append(std::move(mixed)).get();
    REQUIRE(m);
    CHECK(m->duplicates == 1);
    CHECK(m->last_seq - m->first_seq + 1 == 2);
    auto s = b->stats();
    REQUIRE(s);
    CHECK(s->pending_events == 5);
    CHECK(s->duplicates == 2);
  }
  // The identities survive a restart; the window keeps only the newest 4 ("a" is gone
  // after b, c and two more).
  auto b = open_ok(o, clock);
  auto still = append_one(*b, with_identity("c", true));
  REQUIRE(still);
  CHECK(still->duplicates == 1);
  REQUIRE(append_one(*b, with_identity("d", false)));
  REQUIRE(append_one(*b, with_identity("e", false)));
  auto forgotten = append_one(*b, with_identity("a", true));
  REQUIRE(forgotten);
  CHECK(forgotten->duplicates == 0);
  auto inspected = BufferInspector::open(o.path);
  REQUIRE(inspected);
  auto s = inspected->stats();
  REQUIRE(s);
  CHECK(s->duplicates == 3);
  CHECK(s->pending_events == 8);
}

TEST_CASE("quarantine keeps the newest rows with their reason, cut payloads, and a total") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  o.quarantine_max_rows = 3;
  o.quarantine_keep_bytes = 8;
  {
    auto b = open_ok(o, clock);
    for (int i = 0; i < 5; ++i) {
      REQUIRE(b->quarantine(QuarantineEntry{"mqtt", "t/" + std::to_string(i),
                                            "reason " + std::to_string(i),
                                            std::string(static_cast<size_t>(5 * i), 'x')}));
    }
    auto s = b->stats();
    REQUIRE(s);
    CHECK(s->quarantined_total == 5);
    CHECK(s->quarantine_rows == 3);
    CHECK(s->pending_events == 0);  // quarantined messages are not events
  }
  auto inspector = BufferInspector::open(o.path);
  REQUIRE(inspector);
  auto rows = inspector->quarantine(10);
  REQUIRE(rows);
  REQUIRE(rows->size() == 3);
  CHECK((*rows)[0].subject == "t/4");  // newest first
  CHECK((*rows)[0].reason == "reason 4");
  CHECK((*rows)[0].size == 20);
  CHECK((*rows)[0].payload == std::string(8, 'x'));  // cut to quarantine_keep_bytes
  CHECK((*rows)[2].subject == "t/2");
  CHECK((*rows)[2].payload == std::string(8, 'x'));
  auto s = inspector->stats();
  REQUIRE(s);
  CHECK(s->quarantined_total == 5);
  CHECK(s->quarantine_rows == 3);
}

TEST_CASE("a version-2 file from before the side tables gains them at open") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));
  {
    auto b = open_ok(o, clock);
    REQUIRE(append_one(*b, event_of(EventKind::json, 10)));
  }
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(o.path.c_str(), &db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, "DROP TABLE identities; DROP TABLE quarantine", nullptr, nullptr,
                       nullptr) == SQLITE_OK);
  sqlite3_close(db);
  {
    // The read-only inspector takes the older file as it is.
    auto inspector = BufferInspector::open(o.path);
    REQUIRE(inspector);
    auto s = inspector->stats();
    REQUIRE(s);
    CHECK(s->quarantine_rows == 0);
    auto rows = inspector->quarantine(10);
    REQUIRE(rows);
    CHECK(rows->empty());
  }
  auto b = open_ok(o, clock);
  REQUIRE(b->quarantine(QuarantineEntry{"mqtt", "t", "why", "p"}));
  REQUIRE(append_one(*b, with_identity("x", true)));
  auto s = b->stats();
  REQUIRE(s);
  CHECK(s->pending_events == 2);
  CHECK(s->quarantine_rows == 1);
}

TEST_CASE("a clean close leaves the pending tallies for the next open; the next write drops them") {
  test::TempDir dir;
  ManualClock clock;
  auto o = test::fast_options(dir.file("b.db"));  // 32 seqs per segment
  auto groups_of = [](const BufferStats& s) {
    std::vector<std::tuple<EventKind, int32_t, uint64_t, uint64_t>> out;
    for (const GroupStats& g : s.groups) out.emplace_back(g.kind, g.priority, g.events, g.bytes);
    std::sort(out.begin(), out.end());
    return out;
  };
  BufferStats before;
  {
    auto b = open_ok(o, clock);
    std::vector<NewEvent> many;
    for (int i = 0; i < 100; ++i) {
      many.push_back(event_of(i % 3 == 0 ? EventKind::pixel : EventKind::sensor,
                              static_cast<size_t>(5 + i % 7), i % 4 == 0 ? 2 : 0));
    }
    REQUIRE(b->append(std::move(many)).get());
    REQUIRE(b->ack(40));  // segment 0 dropped, 32..40 hidden, 41..100 pending
    auto s = b->stats();
    REQUIRE(s);
    before = *s;
  }
  CHECK(query_int(o.path, "SELECT count(DISTINCT segment) FROM tally_snapshot") == 3);
  CHECK(query_int(o.path, "SELECT value FROM meta WHERE key = 'tally_snapshot_of'") == 101);
  {
    auto b = open_ok(o, clock);  // from the snapshot: the same figures as counting gives
    auto s = b->stats();
    REQUIRE(s);
    CHECK(s->pending_events == before.pending_events);
    CHECK(s->pending_bytes == before.pending_bytes);
    CHECK(groups_of(*s) == groups_of(before));
    REQUIRE(append_one(*b, event_of(EventKind::json, 10)));  // the first write removes it
    CHECK(query_int(o.path, "SELECT count(*) FROM tally_snapshot") == 0);
    CHECK(query_int(o.path, "SELECT count(*) FROM meta WHERE key = 'tally_snapshot_of'") == 0);
  }
  // The snapshot is what the open reads: a changed one shows (so the figures above were
  // not counted again)...
  const std::string one_more_thousand =
      "UPDATE tally_snapshot SET events = events + 1000 "
      "WHERE rowid = (SELECT min(rowid) FROM tally_snapshot WHERE kind = 2);";
  exec_sql(o.path, one_more_thousand);
  {
    auto b = open_ok(o, clock);
    auto s = b->stats();
    REQUIRE(s);
    CHECK(s->pending_events == before.pending_events + 1 + 1000);
  }
  // ...but only while it names the buffer's seqs: otherwise the open counts.
  exec_sql(o.path,
           one_more_thousand + "UPDATE meta SET value = '101 40' WHERE key = 'tally_snapshot_of'");
  {
    auto b = open_ok(o, clock);
    auto s = b->stats();
    REQUIRE(s);
    CHECK(s->pending_events == before.pending_events + 1);
  }
  // A segment it does not list (another writer made it) also makes the open count.
  exec_sql(o.path, one_more_thousand + "DELETE FROM tally_snapshot WHERE segment = 96");
  auto b = open_ok(o, clock);
  auto s = b->stats();
  REQUIRE(s);
  CHECK(s->pending_events == before.pending_events + 1);
}
